"""DKM trainer classes: network construction per variant, Eq. 7 loss composition, DM checkpoint lookup."""
from types import SimpleNamespace

import pytest
import torch

from nnunet_ext.losses.ssim import SSIMLoss
from nnunet_ext.methods.dkm import trainers as dkm


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
