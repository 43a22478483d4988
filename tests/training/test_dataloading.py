"""ForegroundFirstDataLoader: foreground-forced samples come from foreground cases and trained classes only."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from nnunet_ext.training.dataloading import ForegroundFirstDataLoader, substituted_data_loader


class _Dataset:
    def __init__(self, identifiers):
        self.identifiers = list(identifiers)


LABELS = SimpleNamespace(all_labels=[0, 1, 2], has_ignore_label=False)


def _loader(batch_size=3, oversample=0.33, **kwargs):
    data = _Dataset(["bleed0", "bleed1", "neg0", "neg1", "neg2", "neg3"])
    return ForegroundFirstDataLoader(data, batch_size, (8, 8, 8), (8, 8, 8), LABELS,
                                     oversample_foreground_percent=oversample, **kwargs)


def test_forced_positions_draw_foreground_cases_and_the_others_draw_everything():
    np.random.seed(0)
    loader = _loader(foreground_cases=["bleed0", "bleed1", "not_in_this_split"])
    assert loader.foreground_cases == ["bleed0", "bleed1"]
    forced_draws, free_draws = Counter(), Counter()
    for _ in range(300):
        keys = loader.get_indices()
        for position, key in enumerate(keys):
            forced = loader.get_do_oversample(position)
            assert forced == (position == 2)  # nnU-Net forces the last third of a batch of 3
            (forced_draws if forced else free_draws)[str(key)] += 1
    assert set(forced_draws) == {"bleed0", "bleed1"}
    assert set(free_draws) == {"bleed0", "bleed1", "neg0", "neg1", "neg2", "neg3"}


def test_without_foreground_cases_every_draw_is_uniform():
    np.random.seed(1)
    loader = _loader(foreground_cases=[])
    drawn = {str(k) for _ in range(100) for k in loader.get_indices()}
    assert drawn == {"bleed0", "bleed1", "neg0", "neg1", "neg2", "neg3"}


@pytest.mark.parametrize("classes,centre", [((2,), 30), ((1,), 5), (None, None)])
def test_forced_crops_centre_on_the_trained_classes(classes, centre):
    np.random.seed(2)
    loader = _loader(foreground_cases=["bleed0"], foreground_classes=classes)
    locations = {1: np.array([[0, 5, 5, 5]]), 2: np.array([[0, 30, 30, 30]])}
    starts = {loader.get_bbox((40, 40, 40), True, locations)[0][0] for _ in range(50)}
    if centre is None:
        assert starts == {5 - 4, 30 - 4}  # either class: the crop starts half a patch before the voxel
    else:
        assert starts == {centre - 4}


def test_substitution_is_undone_after_the_block():
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as module

    original = module.nnUNetDataLoader
    with substituted_data_loader(lambda *a, **k: "built"):
        assert module.nnUNetDataLoader() == "built"
    assert module.nnUNetDataLoader is original
