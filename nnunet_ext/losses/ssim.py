"""Global-statistics SSIM loss term of DKM (Lv et al., MICCAI 2023, Sect. 2.3, Eq. 7).

    L_SM = L_CE(S, G) + L_Dice(S, G) + lambda * L_SSIM,    lambda = 0.5,

    L_SSIM = 1 - (2 mu_S mu_G + C1)(2 phi_SG + C2) / ((mu_S^2 + mu_G^2 + C1)(phi_S^2 + phi_G^2 + C2)),

with S the predicted segmentation map, G the ground truth, mu the means, phi_S, phi_G the standard deviations (the
paper's text calls phi the "variance" but squares it, as in Wang et al. 2004: phi^2 is the variance), phi_SG the
covariance, C1 = (k1 L)^2, C2 = (k2 L)^2, k1 = 0.01, k2 = 0.03 and L the value range (1 for probabilities).
The statistics are GLOBAL: taken over the whole image (patch) per batch item and class, not in a sliding window.
Variances and covariance are population moments (divide by N).

This module only provides the SSIM term; the trainer adds CE + Dice.
"""
from __future__ import annotations

import torch
from torch import nn

from .labels import label_map_target


def global_ssim(s: torch.Tensor, g: torch.Tensor, data_range: float = 1.0, k1: float = 0.01, k2: float = 0.03,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """SSIM of Eq. 7 with global statistics over all spatial axes, per (batch, channel).

    Args:
        s: segmentation map (B, C, *spatial), e.g. foreground probabilities.
        g: ground truth, same shape.
        data_range: L, the value range.
        k1: stability constant factor for the means term.
        k2: stability constant factor for the (co)variance term.
        mask: optional weights broadcastable to ``s`` (e.g. (B, 1, *spatial) of 0/1); the statistics are then
            weighted means over the masked voxels (used to skip nnU-Net's ignore label).

    Returns:
        Tensor (B, C) of SSIM values (1 for identical maps).
    """
    if s.shape != g.shape:
        raise ValueError(f"s and g must have the same shape, got {tuple(s.shape)} and {tuple(g.shape)}")
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    axes = tuple(range(2, s.ndim))
    g = g.to(s.dtype)
    if mask is None:
        def mean(values: torch.Tensor) -> torch.Tensor:
            return values.mean(dim=axes)
    else:
        weights = mask.to(s.dtype).expand_as(s)
        total = weights.sum(dim=axes).clamp_min(torch.finfo(s.dtype).eps)

        def mean(values: torch.Tensor) -> torch.Tensor:
            return (values * weights).sum(dim=axes) / total

    mu_s, mu_g = mean(s), mean(g)
    # Central moments from the centred maps (more stable than E[x^2] - E[x]^2 in float32).
    centred_s = s - mu_s.reshape(*mu_s.shape, *([1] * len(axes)))
    centred_g = g - mu_g.reshape(*mu_g.shape, *([1] * len(axes)))
    var_s = mean(centred_s * centred_s)
    var_g = mean(centred_g * centred_g)
    cov_sg = mean(centred_s * centred_g)
    return ((2 * mu_s * mu_g + c1) * (2 * cov_sg + c2)) / ((mu_s ** 2 + mu_g ** 2 + c1) * (var_s + var_g + c2))


class SSIMLoss(nn.Module):
    """``1 - mean SSIM`` (Eq. 7) between softmax foreground probabilities and one-hot foreground labels.

    Inputs use nnU-Net's conventions: ``logits`` (B, C, *spatial) for C mutually exclusive classes (label-based,
    softmax training), ``target`` (B, 1, *spatial) holding integer labels (any dtype). S = softmax(logits)[:, 1:],
    G = one_hot(target)[:, 1:] (the background is left out unless ``include_background``); the SSIM is averaged
    over batch items and classes. A class absent from both S and G has SSIM 1 (C1 C2 / (C1 C2)).

    Args:
        include_background: also score class 0.
        ignore_label: label whose voxels are excluded from the statistics (nnU-Net's ignore label), or None.
        data_range: L of Eq. 7 (1 for probabilities).
        k1: see :func:`global_ssim`.
        k2: see :func:`global_ssim`.
    """

    def __init__(self, include_background: bool = False, ignore_label: int | None = None, data_range: float = 1.0,
                 k1: float = 0.01, k2: float = 0.03) -> None:
        super().__init__()
        self.include_background = include_background
        self.ignore_label = ignore_label
        self.data_range = data_range
        self.k1 = k1
        self.k2 = k2

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        labels, mask = label_map_target(logits, target, self.ignore_label)
        first = 0 if self.include_background else 1
        if num_classes - first < 1:
            raise ValueError(f"SSIMLoss needs at least one scored class, logits have {num_classes} channels")
        probabilities = torch.softmax(logits.float(), dim=1)[:, first:]
        one_hot = torch.zeros_like(logits, dtype=probabilities.dtype).scatter_(1, labels, 1.0)[:, first:]
        ssim = global_ssim(probabilities, one_hot, self.data_range, self.k1, self.k2, mask=mask)
        return 1.0 - ssim.mean()
