"""HCNet's losses (Sect. 2.2-2.3): Eq. 2-4 for the heterogeneity prediction model (HIPM), Eq. 5 for KIS-Net.

Readings (the paper prints the binary forms only, and its code is not public):

- Eq. 3 (Dice) is ``1 - 2 sum(p y) / (sum(p) + sum(y))`` per sample and class, averaged over both; a small
  ``smooth`` in numerator and denominator keeps a class absent from a patch finite (it then scores 1 - smooth/smooth,
  i.e. 0 loss, when the prediction is empty too).
- Eq. 4 (weighted cross-entropy) is applied one-vs-rest to every class channel of the softmax, as printed
  (``y log p + (1 - y) log(1 - p)``), each voxel weighted by ``w`` of its true class, ``w`` inversely proportional to
  the class's voxel frequency; the sum is divided by the summed weights times the number of classes so that the term
  does not grow with the patch size.
- Eq. 5 (KIS-Net) uses the foreground probability (softmax channel 1 of the 2-class output): Dice (Eq. 3 on the
  foreground only) + lambda * mean binary cross-entropy, lambda = 5. Its weights, batch Dice and ignored voxels are
  parameters so that other methods' foreground Dice + BCE losses are configurations of the same computation (the
  contrastive method's Eq. 2, ``nnunet_ext.methods.contrastive.losses.DiceBCELoss``: 5 Dice + BCE, batch Dice).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

EPS = 1e-7


def one_hot(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(B, 1, *S) or (B, *S) integer labels -> (B, C, *S) float one-hot (negative labels: all zero)."""
    if target.ndim >= 2 and target.shape[1] == 1:
        target = target[:, 0]
    target = target.long()
    encoded = torch.zeros((target.shape[0], n_classes, *target.shape[1:]), device=target.device)
    valid = target >= 0
    encoded.scatter_(1, torch.where(valid, target, 0).unsqueeze(1), valid.unsqueeze(1).float())
    return encoded


def soft_dice_loss(probabilities: torch.Tensor, target_one_hot: torch.Tensor, smooth: float = 1e-5,
                   batch_dice: bool = False) -> torch.Tensor:
    """Eq. 3, ``1 - 2 sum_i p_i y_i / (sum_i p_i + sum_i y_i)`` per sample and class (spatial sums), mean over both;
    with ``batch_dice`` the sums run over the batch too (one Dice per class, as nnU-Net's batch Dice)."""
    axes = tuple(range(2, probabilities.ndim))
    if batch_dice:
        axes = (0, *axes)
    intersection = (probabilities * target_one_hot).sum(axes)
    denominator = probabilities.sum(axes) + target_one_hot.sum(axes)
    return (1.0 - (2.0 * intersection + smooth) / (denominator + smooth)).mean()


def weighted_cross_entropy(probabilities: torch.Tensor, target_one_hot: torch.Tensor,
                           class_weights: torch.Tensor) -> torch.Tensor:
    """Eq. 4, ``-sum_i w_i (y_i log p_i + (1 - y_i) log(1 - p_i))`` over voxels and class channels, with ``w_i`` the
    weight of voxel i's true class, divided by ``C sum_i w_i``."""
    p = probabilities.clamp(EPS, 1.0 - EPS)
    shape = (1, -1) + (1,) * (probabilities.ndim - 2)
    voxel_weight = (target_one_hot * class_weights.view(shape)).sum(1, keepdim=True)  # w of the true class
    terms = target_one_hot * torch.log(p) + (1.0 - target_one_hot) * torch.log1p(-p)
    return -(voxel_weight * terms).sum() / (voxel_weight.sum() * probabilities.shape[1]).clamp_min(EPS)


def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """Class weights ``w_c = (1 / f_c) / mean over present classes of (1 / f_c)`` (Eq. 4: inversely proportional to
    the class frequency ``f_c``); classes with no voxels get weight 0 (they never are a voxel's true class)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("no labelled voxels: class frequencies are undefined")
    inverse = np.zeros_like(counts)
    inverse[present] = counts[present].sum() / counts[present]
    return inverse / inverse[present].mean()


class HeterogeneityLoss(nn.Module):
    """Eq. 2, ``L_pred = L_Dice (Eq. 3) + L_WCE (Eq. 4)`` over the K + 1 classes of the heterogeneity map."""

    def __init__(self, class_weights: torch.Tensor | np.ndarray):
        super().__init__()
        self.register_buffer("class_weights", torch.as_tensor(np.asarray(class_weights), dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(logits.float(), 1)  # fp32 under autocast: logs of small probabilities
        encoded = one_hot(target, logits.shape[1])
        return soft_dice_loss(probabilities, encoded) + weighted_cross_entropy(probabilities, encoded,
                                                                               self.class_weights)


class KineticSegmentationLoss(nn.Module):
    """Eq. 5, ``L_seg = L_Dice + lambda L_BCE`` on the foreground probability of a 2-class output, lambda = 5.

    Generalised as ``dice_weight L_Dice + bce_weight L_BCE``: ``batch_dice`` sums the Dice over the batch, and with
    an ``ignore_label`` the voxels of that label and of every negative label are left out of both terms (BCE: mean
    over the kept voxels). The defaults are HCNet's (every voxel counts, negative labels as background).
    """

    def __init__(self, bce_weight: float = 5.0, dice_weight: float = 1.0, batch_dice: bool = False,
                 ignore_label: int | None = None):
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.batch_dice = batch_dice
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        foreground = torch.softmax(logits.float(), 1)[:, 1:2]
        labels = target if target.ndim == logits.ndim else target.unsqueeze(1)
        truth = (labels == 1).float()  # = one_hot(target, 2)[:, 1:2]
        if self.ignore_label is None:
            bce = nn.functional.binary_cross_entropy(foreground.clamp(EPS, 1.0 - EPS), truth)
        else:
            kept = ((labels >= 0) & (labels != self.ignore_label)).float()
            foreground, truth = foreground * kept, truth * kept
            voxel_bce = nn.functional.binary_cross_entropy(foreground.clamp(EPS, 1.0 - EPS), truth, reduction="none")
            bce = (voxel_bce * kept).sum() / kept.sum().clamp_min(1.0)
        dice = soft_dice_loss(foreground, truth, batch_dice=self.batch_dice)
        return self.dice_weight * dice + self.bce_weight * bce
