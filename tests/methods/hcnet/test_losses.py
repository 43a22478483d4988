"""HCNet's losses (Sect. 2.2-2.3) against NumPy and MONAI: Eq. 2, 3, 4 and 5."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_ext.methods.hcnet import losses


def _case(seed: int, n_classes: int, shape=(2, 3, 4, 5)):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn((shape[0], n_classes, *shape[1:]), generator=generator)
    target = torch.randint(0, n_classes, (shape[0], 1, *shape[1:]), generator=generator)
    return logits, target


def _numpy_softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("n_classes, seed", [(2, 0), (4, 1), (11, 2)])
def test_eq3_dice_matches_monai(n_classes, seed):
    from monai.losses import DiceLoss

    logits, target = _case(seed, n_classes)
    probabilities = torch.softmax(logits, 1)
    encoded = losses.one_hot(target, n_classes)
    reference = DiceLoss(include_background=True, softmax=False, smooth_nr=1e-5, smooth_dr=1e-5)(probabilities,
                                                                                                  encoded)
    assert losses.soft_dice_loss(probabilities, encoded).item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("n_classes, seed", [(3, 0), (6, 4)])
def test_eq4_weighted_cross_entropy_matches_numpy(n_classes, seed):
    logits, target = _case(seed, n_classes)
    weights = np.linspace(0.5, 3.0, n_classes)
    p = _numpy_softmax(logits.numpy().astype(np.float64))
    y = np.eye(n_classes)[target[:, 0].numpy()].transpose(0, 4, 1, 2, 3)  # (B, C, *S)
    w = weights[target[:, 0].numpy()][:, None]                               # weight of each voxel's class
    expected = -(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / (w.sum() * n_classes)
    value = losses.weighted_cross_entropy(torch.from_numpy(p).float(), torch.from_numpy(y).float(),
                                          torch.tensor(weights, dtype=torch.float32))
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_eq2_is_dice_plus_weighted_cross_entropy():
    logits, target = _case(5, 4)
    weights = np.array([0.2, 1.0, 2.0, 0.8])
    loss = losses.HeterogeneityLoss(weights)(logits, target)
    p, y = torch.softmax(logits, 1), losses.one_hot(target, 4)
    expected = losses.soft_dice_loss(p, y) + losses.weighted_cross_entropy(p, y, torch.tensor(weights).float())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() > losses.soft_dice_loss(p, y).item()  # the WCE term is really there


def test_inverse_frequency_weights():
    weights = losses.inverse_frequency_weights([900, 90, 10, 0])
    # 1/f proportional: 1 : 10 : 90, normalised to mean 1 over the present classes; absent class 0
    np.testing.assert_allclose(weights[:3] / weights[0], [1, 10, 90])
    assert weights[:3].mean() == pytest.approx(1.0) and weights[3] == 0
    with pytest.raises(ValueError, match="no labelled voxels"):
        losses.inverse_frequency_weights([0, 0])


@pytest.mark.parametrize("seed", [0, 3])
def test_eq5_matches_numpy_with_lambda_5(seed):
    logits, target = _case(seed, 2)
    foreground = _numpy_softmax(logits.numpy().astype(np.float64))[:, 1]
    y = target[:, 0].numpy().astype(np.float64)
    axes = (1, 2, 3)
    dice = 1 - (2 * (foreground * y).sum(axes) + 1e-5) / (foreground.sum(axes) + y.sum(axes) + 1e-5)
    bce = -(y * np.log(foreground) + (1 - y) * np.log(1 - foreground)).mean()
    expected = dice.mean() + 5.0 * bce
    assert losses.KineticSegmentationLoss()(logits, target).item() == pytest.approx(expected, rel=1e-5)
    assert losses.KineticSegmentationLoss(bce_weight=1.0)(logits, target).item() < expected


def test_one_hot_ignores_negative_labels():
    encoded = losses.one_hot(torch.tensor([[[0, 2, -1]]]), 3)
    np.testing.assert_array_equal(encoded[0].numpy(), [[1, 0, 0], [0, 0, 0], [0, 1, 0]])
