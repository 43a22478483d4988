"""The BHSD CT window (paper Sect. 3: clip to [-40, 120] HU, subtract 40, divide by 80) through nnU-Net's own
CTNormalization with the statistics our planners write."""
from __future__ import annotations

import numpy as np
import pytest
from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization

from nnunet_ext.methods.bhsd.planners import BHSD_WINDOW_HU, window_statistics


def test_window_statistics_are_the_papers_numbers():
    assert window_statistics(*BHSD_WINDOW_HU) == {"percentile_00_5": -40.0, "percentile_99_5": 120.0,
                                                  "mean": 40.0, "std": 80.0}


@pytest.mark.parametrize("window", [BHSD_WINDOW_HU, (0.0, 80.0)])
def test_nnunet_ct_normalization_with_these_statistics_is_the_window(window):
    hu = np.array([[-1000.0, -40.0, 0.0, 40.0, 75.0, 120.0, 1500.0]])
    normalizer = CTNormalization(use_mask_for_norm=False, intensityproperties=window_statistics(*window))
    normalized = normalizer.run(hu.copy(), seg=None)
    low, high = window
    expected = (np.clip(hu, low, high) - (low + high) / 2) / ((high - low) / 2)  # the paper's formula, generalised
    assert np.allclose(normalized, expected)
    if window == BHSD_WINDOW_HU:
        assert np.allclose(normalized, (np.clip(hu, -40, 120) - 40) / 80)
        assert normalized.min() == -1.0 and normalized.max() == 1.0
