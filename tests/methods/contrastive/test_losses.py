"""The contrastive method's losses: Eq. 1 against NumPy, the stop-gradient, SimSiam's loss, Eq. 2 against MONAI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_ext.methods.contrastive import losses
from nnunet_ext.methods.hcnet.losses import KineticSegmentationLoss


def _numpy_d(p: np.ndarray, z: np.ndarray) -> float:
    """Negative cosine similarity, batch mean, written out."""
    p, z = p.reshape(len(p), -1), z.reshape(len(z), -1)
    cos = (p * z).sum(1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(z, axis=1))
    return float(-cos.mean())


def _features(seed: int, shape):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(6)]


@pytest.mark.parametrize("seed, shape", [(0, (4, 16)), (1, (1, 8)), (2, (3, 5, 2))])
def test_eq1_matches_numpy(seed, shape):
    """Eq. 1: L = 1/2 [D(P2, E1) + D(P1, E2)] - 1/2 [D(P2, E3) + D(P3, E2)] (real 2, positive 1, negative 3)."""
    p_real, p_pos, p_neg, z_real, z_pos, z_neg = _features(seed, shape)
    out = losses.tumour_background_loss(p_real, p_pos, p_neg, z_real, z_pos, z_neg)
    n = [t.numpy() for t in (p_real, p_pos, p_neg, z_real, z_pos, z_neg)]
    positive = 0.5 * (_numpy_d(n[0], n[4]) + _numpy_d(n[1], n[3]))
    negative = -0.5 * (_numpy_d(n[0], n[5]) + _numpy_d(n[2], n[3]))
    assert out["positive_term"].item() == pytest.approx(positive, abs=1e-6)
    assert out["negative_term"].item() == pytest.approx(negative, abs=1e-6)
    assert out["loss"].item() == pytest.approx(positive + negative, abs=1e-6)
    assert out["cos_real_pos"].item() == pytest.approx(-_numpy_d(n[3], n[4]), abs=1e-6)
    assert out["cos_real_neg"].item() == pytest.approx(-_numpy_d(n[3], n[5]), abs=1e-6)
    for key in ("cos_real_pos", "cos_real_neg"):
        assert -1.0 <= out[key].item() <= 1.0 and not out[key].requires_grad
    assert -2.0 <= out["loss"].item() <= 2.0


def test_eq1_analytic_values():
    """Eq. 1 with identical p and z: 0 when all three agree, -2 (the minimum) when the negative is opposite."""
    a = torch.randn(3, 7)
    same = losses.tumour_background_loss(a, a, a, a, a, a)
    assert same["loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert same["positive_term"].item() == pytest.approx(-1.0, abs=1e-6)
    assert same["cos_real_pos"].item() == pytest.approx(1.0, abs=1e-6)
    best = losses.tumour_background_loss(a, 2 * a, -a, a, 2 * a, -a)
    assert best["loss"].item() == pytest.approx(-2.0, abs=1e-6)
    assert best["negative_term"].item() == pytest.approx(-1.0, abs=1e-6)
    assert best["cos_real_neg"].item() == pytest.approx(-1.0, abs=1e-6)


def test_eq1_stop_gradient():
    """Eq. 1's stop-gradient: gradients reach the predictor outputs P only, never the encoder features E."""
    leaves = [t.clone().float().requires_grad_(True) for t in _features(3, (4, 6))]
    p_real, p_pos, p_neg, z_real, z_pos, z_neg = [t * 1.0 for t in leaves]  # non-leaf, as in a network
    losses.tumour_background_loss(p_real, p_pos, p_neg, z_real, z_pos, z_neg)["loss"].backward()
    for leaf in leaves[:3]:
        assert leaf.grad is not None and leaf.grad.abs().sum() > 0
    for leaf in leaves[3:]:
        assert leaf.grad is None
    # with the predictor outputs detached nothing is left to back-propagate
    detached = losses.tumour_background_loss(*(t.detach() for t in leaves[:3]), *leaves[3:])
    assert not detached["loss"].requires_grad


def test_eq1_gradient_matches_explicitly_stopped_reference():
    """Through a shared encoder and predictor, the gradient equals the one of the formula with explicit detach."""
    torch.manual_seed(0)
    encoder, predictor = torch.nn.Linear(5, 4), torch.nn.Linear(4, 4)
    x = torch.randn(3, 2, 5)
    z = [encoder(x[:, i]) for i in range(2)] + [encoder(-x[:, 0])]
    p = [predictor(t) for t in z]
    losses.tumour_background_loss(p[0], p[1], p[2], z[0], z[1], z[2])["loss"].backward()
    ours = [w.grad.clone() for w in encoder.parameters()]
    encoder.zero_grad()
    predictor.zero_grad()

    def d(a, b):
        return -torch.nn.functional.cosine_similarity(a, b.detach(), dim=1).mean()

    z = [encoder(x[:, i]) for i in range(2)] + [encoder(-x[:, 0])]
    p = [predictor(t) for t in z]
    (0.5 * (d(p[0], z[1]) + d(p[1], z[0])) - 0.5 * (d(p[0], z[2]) + d(p[2], z[0]))).backward()
    for a, b in zip(ours, encoder.parameters()):
        torch.testing.assert_close(a, b.grad)


@pytest.mark.parametrize("seed", [0, 5])
def test_simsiam_loss_matches_numpy(seed):
    """SimSiam (Sect. 3 baseline): 1/2 D(p1, sg(z2)) + 1/2 D(p2, sg(z1))."""
    p1, p2, z1, z2 = _features(seed, (5, 9))[:4]
    expected = 0.5 * _numpy_d(p1.numpy(), z2.numpy()) + 0.5 * _numpy_d(p2.numpy(), z1.numpy())
    assert losses.simsiam_loss(p1, p2, z1, z2).item() == pytest.approx(expected, abs=1e-6)
    assert losses.simsiam_loss(p1, p1, p1, p1).item() == pytest.approx(-1.0, abs=1e-6)
    z1.requires_grad_(True)
    assert not losses.simsiam_loss(p1, p2, z1, z1).requires_grad  # z is stopped


def _monai_reference(logits, target, dice_weight=5.0):
    """Eq. 2 from MONAI's batch Dice on the foreground and torch's BCE, ignoring negative labels."""
    from monai.losses import DiceLoss

    probabilities = torch.softmax(logits.double(), 1)
    kept = (target >= 0).double()
    truth = torch.cat([(target == 0).double(), (target == 1).double()], 1) * kept
    dice = DiceLoss(include_background=False, sigmoid=False, softmax=False, batch=True, smooth_nr=1e-5,
                    smooth_dr=1e-5)(probabilities * kept, truth)
    bce = torch.nn.functional.binary_cross_entropy(probabilities[:, 1:2], truth[:, 1:2], weight=kept,
                                                   reduction="sum") / kept.sum()
    return (dice_weight * dice + bce).item()


@pytest.mark.parametrize("seed, shape, ignored", [(0, (2, 6, 5, 4), False), (1, (3, 4, 4, 4), True),
                                                  (2, (1, 8, 6, 2), True)])
def test_eq2_matches_monai(seed, shape, ignored):
    """Eq. 2: 5 (1 - 2|F G| / (|F| + |G|)) + BCE(F, G), batch Dice, ignored (-1) voxels left out."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn((shape[0], 2, *shape[1:]), generator=generator)
    target = torch.randint(-1 if ignored else 0, 2, (shape[0], 1, *shape[1:]), generator=generator)
    value = losses.DiceBCELoss()(logits, target).item()
    assert value == pytest.approx(_monai_reference(logits, target), rel=1e-5)
    assert losses.DiceBCELoss(dice_weight=1.0)(logits, target).item() < value
    # per-sample Dice (HCNet's default) differs from batch Dice when there are several samples
    if shape[0] > 1:
        per_sample = KineticSegmentationLoss(bce_weight=1.0, dice_weight=5.0, ignore_label=-1)(logits, target)
        assert per_sample.item() != pytest.approx(value, rel=1e-6)


def test_eq2_ignored_voxels_do_not_count():
    """Eq. 2 on kept voxels only: the logits at ignored voxels change nothing, nor does a nnU-Net ignore label."""
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn((2, 2, 5, 5, 5), generator=generator)
    target = torch.randint(0, 2, (2, 1, 5, 5, 5), generator=generator)
    target[:, :, :2] = -1
    changed = logits.clone()
    changed[:, :, :2] = torch.randn((2, 2, 2, 5, 5), generator=generator) * 10
    loss = losses.DiceBCELoss()
    assert loss(changed, target).item() == pytest.approx(loss(logits, target).item(), rel=1e-6)
    relabelled = torch.where(target < 0, torch.full_like(target, 2), target)
    assert losses.DiceBCELoss(ignore_label=2)(logits, relabelled).item() == pytest.approx(loss(logits, target).item(),
                                                                                          rel=1e-6)
    every_voxel = KineticSegmentationLoss(bce_weight=1.0, dice_weight=5.0, batch_dice=True)  # -1 as background
    assert every_voxel(logits, target).item() != pytest.approx(loss(logits, target).item())


def test_eq2_perfect_prediction_is_near_zero_and_has_gradient():
    target = torch.zeros((2, 1, 4, 4, 4), dtype=torch.long)
    target[:, :, 1:3, 1:3, 1:3] = 1
    logits = torch.cat([(1 - target) * 20.0, target * 20.0], 1).float().requires_grad_(True)
    assert losses.DiceBCELoss()(logits, target).item() == pytest.approx(0.0, abs=1e-4)
    wrong = losses.DiceBCELoss()(-logits, target)
    assert wrong.item() > 5.0  # Dice term near 1, times lambda = 5
    wrong.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
