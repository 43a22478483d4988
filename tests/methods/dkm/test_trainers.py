"""DKM trainer classes: network construction per variant, Eq. 7 loss composition, DM checkpoint lookup; inside
nnU-Net (in-process, see conftest.py): label-blind DM batches, the DM/SM preprocessing check, nnU-Net's GradScaler
protocol and the DDP-wrapped network."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnunet_ext.losses.ssim import SSIMLoss
from nnunet_ext.methods.dkm import trainers as dkm
from tests.methods.dkm.conftest import CONFIGURATION, FakeDDP, SpyGradScaler, make_plans


def _config(patch):
    return SimpleNamespace(patch_size=patch)


@pytest.mark.parametrize("trainer,stages,has_dm", [
    (dkm.DKMTrainer_small, (3, 4), True), (dkm.DKMTrainer_small_f1, (1,), True),
    (dkm.DKMTrainer_small_f2f4, (2, 4), True), (dkm.DKMTrainer_small_f1f2f3f4, (1, 2, 3, 4), True),
    (dkm.DKMTrainerNoCode_small, (), False)])
def test_variant_networks(trainer, stages, has_dm):
    net = trainer.build_network_architecture(None, _config([16, 16, 16]), 1, 2, False)
    assert net.code_stages == stages and (net.dm is not None) == has_dm
    assert net(torch.randn(2, 1, 16, 16, 16)).shape == (2, 2, 16, 16, 16)  # batch 2: BatchNorm at 1^3
    if has_dm:
        assert net.dm.widths == dkm.DKMDiffusionTrainer_small.dm_widths
        assert any(k.startswith("dm.") for k in net.state_dict())  # the SM checkpoint carries the DM


def test_paper_defaults():
    assert dkm.DKMTrainer.sm_widths == (128, 256, 512, 1024) and dkm.DKMTrainer.code_stages == (3, 4)
    assert dkm.DKMDiffusionTrainer.dm_widths == (128, 256, 256, 256)
    assert dkm.DKMTrainer.ssim_weight == 0.5 and dkm.DKMTrainer.initial_lr_default == 2e-5


def test_diffusion_trainer_builds_a_2d_or_3d_dm():
    for patch in ([16, 16], [16, 16, 16]):
        dm = dkm.DKMDiffusionTrainer_small.build_network_architecture(None, _config(patch), 3, 2, False)
        x = torch.randn(2, 1, *patch)
        assert dm(x, torch.tensor([0, 999])).shape == x.shape


def test_eq7_loss_is_ce_plus_dice_plus_half_one_minus_ssim():
    """Eq. 7: L_SM = L_CE + L_Dice + 0.5 (1 - SSIM)."""
    logits = torch.randn(2, 2, 8, 8, 8)
    target = (torch.rand(2, 1, 8, 8, 8) > 0.7).long()

    class ConstantSegLoss(torch.nn.Module):
        def forward(self, x, y):
            return torch.tensor(1.25)

    loss = dkm.DKMLoss(ConstantSegLoss(), SSIMLoss(), 0.5)(logits, target)
    torch.testing.assert_close(loss, 1.25 + 0.5 * SSIMLoss()(logits, target))


def test_image_similarity_of_identical_images_is_perfect():
    x = torch.randn(9, 9, 9).numpy()
    m = dkm.image_similarity(x, x)
    assert m["SSIM"] == pytest.approx(1.0) and m["PSNR"] == float("inf")


# ---------------------------------------------------------------------------------------------------------------------
# Trainers inside nnU-Net: label-blind DM, DM/SM preprocessing check, GradScaler, DDP wrapper (see conftest.py)
# ---------------------------------------------------------------------------------------------------------------------
def _dm_training_draws(workspace, dataset, oversample=None, n=3):
    """Batches of a DM trainer's training and validation loaders, seeded as in deterministic mode."""
    trainer = workspace.trainer(dkm.DKMDiffusionTrainer_small, dataset)
    if oversample is not None:
        trainer.oversample_foreground_percent = oversample
    trainer.initialize()
    train, val = trainer.get_dataloaders()
    return [next(loader)["data"] for loader in (train, val) for _ in range(n)]


def test_dm_batches_do_not_depend_on_labels(workspace, monkeypatch):
    """Same seed, same images: real tumour labels or all-background placeholders give identical DM batches."""
    monkeypatch.setenv("nnUNet_ext_deterministic", "1")  # in-process augmentation, seeded loaders
    workspace.add_dataset("Dataset901_Labels", labels="real")
    workspace.add_dataset("Dataset902_Zeros", labels="zeros")
    real = _dm_training_draws(workspace, "Dataset901_Labels")
    zeros = _dm_training_draws(workspace, "Dataset902_Zeros")
    assert all(torch.equal(a, b) for a, b in zip(real, zeros))
    # the comparison sees label dependence: with nnU-Net's default foreground oversampling the draws differ
    real_fg = _dm_training_draws(workspace, "Dataset901_Labels", oversample=0.33)
    zeros_fg = _dm_training_draws(workspace, "Dataset902_Zeros", oversample=0.33)
    assert not all(torch.equal(a, b) for a, b in zip(real_fg, zeros_fg))


def test_dm_trainer_turns_foreground_oversampling_off(workspace):
    workspace.add_dataset("Dataset903_Dce", cases=2)
    trainer = workspace.trainer(dkm.DKMDiffusionTrainer_small, "Dataset903_Dce")
    trainer.initialize()
    assert trainer.oversample_foreground_percent == 0 and not trainer.probabilistic_oversampling


# --- the SM must feed the frozen DM what the DM was trained on --------------------------------------------------------
def _init_args(**plans_options):
    return {"plans": make_plans("Dataset801_Dce", 3, **plans_options), "configuration": CONFIGURATION,
            "dataset_json": {}}


@pytest.mark.parametrize("dm_options, sm_options, expected", [
    ({}, {}, None),
    ({"intensity_mean": 250.0}, {}, None),  # ZScore is per image: dataset statistics do not matter
    ({"spacing": (3.0, 1.4, 1.4)}, {}, "target spacing [3.0, 1.4, 1.4] (DM) vs [6.0, 4.2, 4.2] (SM)"),
    ({}, {"normalization": "CTNormalization"}, "normalization scheme ZScoreNormalization (DM) vs CTNormalization"),
    ({"use_mask_for_norm": True}, {}, "use_mask_for_norm True (DM) vs False (SM)"),
    ({"transpose": (1, 0, 2)}, {}, "transpose_forward [1, 0, 2] (DM) vs [0, 1, 2] (SM)"),
    ({"order": 1}, {}, "image resampling"),
    ({"normalization": "CTNormalization", "intensity_mean": 250.0}, {"normalization": "CTNormalization"},
     "foreground intensity statistics"),
])
def test_dm_preprocessing_mismatches(dm_options, sm_options, expected):
    mismatches = dkm.dm_preprocessing_mismatches(_init_args(**dm_options), make_plans("Dataset802_Pre", 1,
                                                                                      **sm_options), CONFIGURATION)
    if expected is None:
        assert mismatches == []
    else:
        assert mismatches and expected in mismatches[0]


def test_spacings_equal_to_float32_precision_match():
    dm = _init_args(spacing=(6.0, 4.199999809265137, 4.199999809265137))
    assert dkm.dm_preprocessing_mismatches(dm, make_plans("Dataset802_Pre", 1, spacing=(6.0, 4.2, 4.2)),
                                           CONFIGURATION) == []


def _dm_checkpoint(path, **plans_options):
    dm = dkm.DKMDiffusionTrainer_small.build_dm(3)
    torch.manual_seed(1)
    for p in dm.parameters():
        torch.nn.init.normal_(p, std=0.05)  # distinguishable from a fresh DM
    torch.save({"network_weights": dm.state_dict(), "init_args": _init_args(**plans_options),
                "trainer_name": "DKMDiffusionTrainer_small"}, path)
    return dm.state_dict()


def test_sm_refuses_a_dm_trained_on_other_spacing(workspace, tmp_path, monkeypatch):
    workspace.add_dataset("Dataset802_Pre", channels=1, cases=2)
    _dm_checkpoint(tmp_path / "dm.pth", spacing=(3.0, 1.4, 1.4))
    monkeypatch.setenv("nnUNet_ext_dkm_dm_checkpoint", str(tmp_path / "dm.pth"))
    trainer = workspace.trainer(dkm.DKMTrainer_small, "Dataset802_Pre", fold=0)
    with pytest.raises(RuntimeError) as error:
        trainer.initialize()
    message = str(error.value)
    assert "\n" not in message
    assert "target spacing [3.0, 1.4, 1.4] (DM) vs [6.0, 4.2, 4.2] (SM)" in message
    assert "nnUNetv2_move_plans_between_datasets -s Dataset801_Dce -t Dataset802_Pre" in message


def test_sm_refuses_a_checkpoint_without_plans(workspace, tmp_path, monkeypatch):
    workspace.add_dataset("Dataset802_Pre", channels=1, cases=2)
    torch.save({"network_weights": dkm.DKMDiffusionTrainer_small.build_dm(3).state_dict()}, tmp_path / "dm.pth")
    monkeypatch.setenv("nnUNet_ext_dkm_dm_checkpoint", str(tmp_path / "dm.pth"))
    with pytest.raises(RuntimeError, match="no init_args with plans"):
        workspace.trainer(dkm.DKMTrainer_small, "Dataset802_Pre", fold=0).initialize()


# --- CUDA/AMP/DDP code paths, on the CPU ---------------------------------------------------------------------------
def _batch(channels):
    generator = torch.Generator().manual_seed(0)
    return {"data": torch.randn(2, channels, 16, 16, 16, generator=generator),
            "target": torch.randint(0, 2, (2, 1, 16, 16, 16), generator=generator)}


@pytest.mark.parametrize("trainer_class, channels", [(dkm.DKMDiffusionTrainer_small, 3), (dkm.DKMTrainer_small, 1)])
def test_train_step_goes_through_the_grad_scaler(workspace, tmp_path, monkeypatch, trainer_class, channels):
    dataset = "Dataset901_Dce" if channels == 3 else "Dataset802_Pre"
    workspace.add_dataset(dataset, channels=channels, cases=2)
    _dm_checkpoint(tmp_path / "dm.pth")
    monkeypatch.setenv("nnUNet_ext_dkm_dm_checkpoint", str(tmp_path / "dm.pth"))
    trainer = workspace.trainer(trainer_class, dataset)
    trainer.initialize()
    trainer.grad_scaler = SpyGradScaler()  # what nnU-Net sets on CUDA
    before = [p.detach().clone() for p in trainer.network.parameters() if p.requires_grad]
    trainer.train_step(_batch(channels))
    assert trainer.grad_scaler.calls == ["scale", "unscale_", "step", "update"]
    after = [p for p in trainer.network.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_dm_trainer_behind_ddp(workspace, single_process_ddp):
    workspace.add_dataset("Dataset901_Dce", cases=2)
    trainer = workspace.trainer(dkm.DKMDiffusionTrainer_small, "Dataset901_Dce")
    trainer.is_ddp = True
    trainer.initialize()
    assert isinstance(trainer.network, FakeDDP) and trainer.network_module is trainer.network.module
    batch = _batch(3)
    assert np.isfinite(trainer.train_step(batch)["loss"])
    trainer.on_validation_epoch_start()
    outputs = [trainer.validation_step(batch)]
    trainer.on_validation_epoch_end(outputs)
    assert trainer.logger.get_value("mean_fg_dice", step=trainer.current_epoch) == pytest.approx(
        float(outputs[0]["ssim"]))
    trainer.perform_actual_validation()
    summary = json.loads((Path(trainer.output_folder) / "validation" / "summary.json").read_text())
    assert sorted(summary["per_case"]) == ["case_0000", "case_0001"]


def test_sm_trainer_behind_ddp_loads_the_frozen_dm(workspace, tmp_path, monkeypatch, single_process_ddp):
    workspace.add_dataset("Dataset802_Pre", channels=1, cases=2)
    weights = _dm_checkpoint(tmp_path / "dm.pth")
    monkeypatch.setenv("nnUNet_ext_dkm_dm_checkpoint", str(tmp_path / "dm.pth"))
    trainer = workspace.trainer(dkm.DKMTrainer_small, "Dataset802_Pre", fold=0)
    trainer.is_ddp = True
    trainer.initialize()
    assert isinstance(trainer.network, FakeDDP)
    sm = trainer.network_module
    for key, value in weights.items():
        assert torch.equal(sm.dm.state_dict()[key], value), key
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in sm.parameters() if p.requires_grad}
    assert not any(id(p) in optimized for p in sm.dm.parameters())
    trainer.set_deep_supervision_enabled(True)
    assert sm.decoder.deep_supervision
    trainer.set_deep_supervision_enabled(False)
    trainer.on_train_epoch_start()
    assert not sm.dm.training  # frozen DM stays in eval mode
    trainer.train_step(_batch(1))
    for key, value in weights.items():
        assert torch.equal(sm.dm.state_dict()[key], value), key
