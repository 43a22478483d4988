"""ResFusion trainers: the channel check (one-line refusal before anything is built) and the deep-supervision scales
of a preset-capped network."""
from types import SimpleNamespace

import numpy as np
import pytest

from nnunet_ext.methods.resfusion import trainers
from nnunet_ext.training.plans_networks import deep_supervision_scales


def _fake_trainer(cls, channels: int):
    return SimpleNamespace(was_initialized=False, dataset_json={"channel_names": {str(i): f"c{i}"
                                                                                 for i in range(channels)}},
                           plans_manager=SimpleNamespace(dataset_name="Dataset001_X"), main_channel=cls.main_channel,
                           aux_channel=cls.aux_channel, fusion=cls.fusion)


@pytest.mark.parametrize("cls", [trainers.ResFusionTrainer, trainers.ResFusionUnsharedTrainer_small,
                                 trainers.PostOnlyTrainer])
def test_fewer_than_two_channels_is_a_one_line_error(cls):
    with pytest.raises(RuntimeError, match=r"reads channel 0 \(pre-contrast\) and 1 \(post-contrast\); "
                                           r"Dataset001_X has 1 channel\(s\)") as error:
        cls.initialize(_fake_trainer(cls, 1))
    assert "\n" not in str(error.value)


def test_deep_supervision_scales_follow_the_capped_levels():
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    full = list(list(i) for i in 1 / np.cumprod(np.vstack(strides), axis=0))[:-1]  # nnU-Net's formula
    assert deep_supervision_scales(strides, len(strides)) == full
    assert deep_supervision_scales(strides, 4) == full[:3]
    assert trainers.PRESETS["paper"] == ((64, 128, 256, 512), 4)
