"""False positives on negative scans (BHSD Table 2 FP column): analytic cases."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_ext.metrics.false_positives import negative_scan_false_positives, summarize_false_positives


def test_empty_prediction_has_no_false_positive():
    assert negative_scan_false_positives(np.zeros((3, 4, 4), np.uint8), (5.0, 0.5, 0.5)) == {
        "fp_any": 0.0, "fp_ml": 0.0, "fp_components": 0.0, "fp_voxels": 0.0}


@pytest.mark.parametrize("spacing", [(5.0, 0.5, 0.5), (1.0, 1.0, 1.0)])
def test_volume_in_ml_and_components_of_two_blobs(spacing):
    prediction = np.zeros((4, 8, 8), np.uint8)
    prediction[0, :2, :2] = 2        # 4 voxels of one class
    prediction[3, 5:8, 5:8] = 4      # 9 voxels of another: every nonzero label counts
    figures = negative_scan_false_positives(prediction, spacing)
    assert figures["fp_any"] == 1.0 and figures["fp_components"] == 2.0 and figures["fp_voxels"] == 13.0
    assert figures["fp_ml"] == pytest.approx(13 * np.prod(spacing) / 1000.0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_diagonal_neighbours_are_one_component(ndim):
    prediction = np.zeros((3,) * ndim, np.uint8)
    prediction[(0,) * ndim] = 1
    prediction[(1,) * ndim] = 1  # touches the first voxel at a corner only
    assert negative_scan_false_positives(prediction, (1.0,) * ndim)["fp_components"] == 1.0


def test_spacing_must_match_dimensions():
    with pytest.raises(ValueError, match="does not match"):
        negative_scan_false_positives(np.zeros((2, 2)), (1.0, 1.0, 1.0))


def test_summary_means_over_negative_scans():
    per_case = {"a": {"fp_any": 1.0, "fp_ml": 2.0, "fp_components": 3.0},
                "b": {"fp_any": 0.0, "fp_ml": 0.0, "fp_components": 0.0}}
    summary = summarize_false_positives(per_case)
    assert summary["n_cases"] == 2 and summary["mean_fp_any"] == 0.5 and summary["mean_fp_ml"] == 1.0
    assert summary["mean_fp_components"] == 1.5 and summary["per_case"]["a"]["fp_ml"] == 2.0
    assert np.isnan(summarize_false_positives({})["mean_fp_any"])
