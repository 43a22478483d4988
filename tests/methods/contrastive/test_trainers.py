"""Contrastive segmentation trainers: the pretrained-encoder lookup and its refusals (one line each), without
nnU-Net's command line (the integration test runs the real commands)."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nnunet_ext.methods.contrastive import trainers
from nnunet_ext.methods.contrastive.network import ContrastivePretrainNet
from nnunet_ext.training.plans_networks import residual_encoder_from_plans
from tests.methods.resfusion.test_network import CONFIGURATION


class _Network:
    def __init__(self, expected: dict):
        self.expected, self.loaded = expected, None

    def load_encoder_state(self, state: dict) -> None:
        if set(state) != set(self.expected):
            raise RuntimeError("Error(s) in loading state_dict:\n  Missing key(s)")
        self.loaded = state


def _checkpoint(tmp_path: Path, cases) -> tuple[Path, dict]:
    encoder = residual_encoder_from_plans(CONFIGURATION, 2)
    network = ContrastivePretrainNet(encoder, [1, 2], 8, 4)
    path = tmp_path / "pretrain.pth"
    torch.save({"network_weights": network.state_dict(), "trainer_name": "TumorBgPretrainTrainer",
                "init_args": {"plans": {}, "configuration": "3d_fullres"}, "pretraining_cases": list(cases)}, path)
    return path, encoder.state_dict()


def _fake(path: Path, expected: dict, cls=trainers.TumorBgFusionTrainer):
    return SimpleNamespace(pretrain_trainer=cls.pretrain_trainer, preset=cls.preset, fold=0, device="cpu",
                           configuration_name="3d_fullres", network_module=_Network(expected),
                           plans_manager=SimpleNamespace(dataset_name="Dataset711_X", plans_name="nnUNetPlans"),
                           pretrained_checkpoint_path=lambda: path, do_split=lambda: (["a", "b", "c"], ["d"]),
                           print_to_log_file=lambda *args, **kwargs: None)


def test_the_encoder_of_a_fitting_checkpoint_is_loaded(tmp_path):
    path, state = _checkpoint(tmp_path, ["a", "c"])
    fake = _fake(path, state)
    trainers.TumorBgFusionTrainer.load_pretrained_encoder(fake)
    assert set(fake.network_module.loaded) == set(state)


def test_pretraining_on_cases_outside_the_fold_is_refused(tmp_path):
    path, state = _checkpoint(tmp_path, ["a", "d"])  # d is fold 0's validation case
    with pytest.raises(RuntimeError, match=r"pretrained on 1 case\(s\) outside fold 0's training cases \(d\): "
                                           r"pretrain TumorBgPretrainTrainer on the same fold") as error:
        trainers.TumorBgFusionTrainer.load_pretrained_encoder(_fake(path, state))
    assert "\n" not in str(error.value)


def test_an_encoder_of_another_size_is_refused(tmp_path):
    path, _ = _checkpoint(tmp_path, ["a"])
    network_expects = {"stem.convs.0.conv.weight": torch.zeros(1)}  # any other encoder
    with pytest.raises(RuntimeError, match=r"the encoder in .*pretrain.pth does not fit .*'s encoder \(preset "
                                           r"'plans'; pretrain with the matching TumorBgPretrainTrainer\)") as error:
        trainers.TumorBgFusionTrainer.load_pretrained_encoder(_fake(path, network_expects))
    assert "\n" not in str(error.value)


def test_a_missing_checkpoint_names_the_pretraining_command(tmp_path):
    with pytest.raises(RuntimeError, match=r"pretrained encoder checkpoint not found: .*none.pth \(pretrain it first: "
                                           r"nnUNetv2_train Dataset711_X 3d_fullres 0 -tr SimSiamPretrainTrainer"):
        trainers.SimSiamInitTrainer.load_pretrained_encoder(_fake(tmp_path / "none.pth", {},
                                                                  trainers.SimSiamInitTrainer))
