"""Pixel-position-aware (PPA) loss of F3Net (Wei et al., AAAI 2020), used by Mammo-SAM (Sect. 3.2).

    L = L^w_BCE + L^w_IoU,

    w_ij = 1 + gamma * | mean_{A_ij}(g) - g_ij |,           gamma = 5,  A_ij the 31 x 31 box centred on (i, j),

    L^w_BCE = sum_ij w_ij bce(z_ij, g_ij) / sum_ij w_ij,   bce(z, g) = -g log sigmoid(z) - (1 - g) log(1 - sigmoid(z)),

    L^w_IoU = 1 - (sum_ij w_ij p_ij g_ij + 1) / (sum_ij w_ij (p_ij + g_ij) - sum_ij w_ij p_ij g_ij + 1),

with g the binary ground truth, z the foreground logit and p = sigmoid(z). Both terms are taken per image (sums over
the pixels) and then averaged over the batch; the +1 in the IoU smooths empty images as in F3Net. The box mean is
``F.avg_pool2d(g, 31, stride=1, padding=15)`` with PyTorch's default ``count_include_pad=True`` (as in F3Net): near
the border the zero padding is counted, so the divisor is always 31 * 31 and the image is treated as surrounded by
background (a foreground pixel on the border gets a weight > 1 even inside a large mass).

``reference_quirk=True`` reproduces the widely copied F3Net snippet, whose
``F.binary_cross_entropy_with_logits(pred, mask, reduce='none')`` passes the deprecated ``reduce`` argument: a truthy
string means "reduce", so it returns the unweighted mean BCE over the whole batch and the "weighted" BCE becomes
(mean bce * sum w) / sum w = mean bce. Here that is computed explicitly; the IoU term stays weighted.

The loss is 2D only (Mammo-SAM segments 2D mammograms); 3D inputs are rejected rather than guessed at.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .labels import label_map_target

KERNEL_SIZE = 31
EDGE_FACTOR = 5.0


def _check_2d(tensor: torch.Tensor, name: str) -> None:
    if tensor.ndim != 4:
        raise ValueError(f"the pixel-position-aware loss is 2D only: {name} must be (B, C, H, W), "
                         f"got shape {tuple(tensor.shape)}")


def position_aware_weights(target: torch.Tensor, kernel_size: int = KERNEL_SIZE,
                           factor: float = EDGE_FACTOR) -> torch.Tensor:
    """Pixel weights w = 1 + factor * |box_mean(g) - g| of F3Net.

    Args:
        target: binary ground truth (B, K, H, W), float.
        kernel_size: odd side of the square box (31 in F3Net); padding is ``kernel_size // 2``, stride 1.
        factor: gamma, the weight of the local contrast (5 in F3Net).

    Returns:
        Tensor of the shape of ``target``: 1 far from any boundary (and everywhere in an empty image), up to
        1 + factor next to one. The box mean counts the zero padding (``count_include_pad=True``).
    """
    _check_2d(target, "target")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    box_mean = F.avg_pool2d(target, kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=True)
    return 1.0 + factor * (box_mean - target).abs()


def weighted_bce(logit: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L^w_BCE per image and channel: sum(w * bce(z, g)) / sum(w) over the pixels.

    Args:
        logit: foreground logits z (B, K, H, W).
        target: binary ground truth g, same shape.
        weights: pixel weights w, same shape (0 excludes a pixel; an image whose weights are all 0 scores 0).

    Returns:
        Tensor (B, K).
    """
    bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    total = weights.sum(dim=(2, 3)).clamp_min(torch.finfo(weights.dtype).tiny)
    return (weights * bce).sum(dim=(2, 3)) / total


def weighted_iou(logit: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L^w_IoU per image and channel: 1 - (sum(w p g) + 1) / (sum(w (p + g)) - sum(w p g) + 1), p = sigmoid(z).

    Args:
        logit: foreground logits z (B, K, H, W).
        target: binary ground truth g, same shape.
        weights: pixel weights w, same shape.

    Returns:
        Tensor (B, K) in [0, 1).
    """
    probability = torch.sigmoid(logit)
    intersection = (weights * probability * target).sum(dim=(2, 3))
    union = (weights * (probability + target)).sum(dim=(2, 3)) - intersection
    return 1.0 - (intersection + 1.0) / (union + 1.0)


def ppa_loss_binary(logit: torch.Tensor, target: torch.Tensor, reference_quirk: bool = False,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
    """F3Net's PPA loss L^w_BCE + L^w_IoU on foreground logits, averaged over the batch (and channels).

    Computed in float32 whatever the input dtype (safe under AMP).

    Args:
        logit: foreground logits z (B, 1, H, W); several independent channels (B, K, H, W) are averaged.
        target: binary ground truth g (B, 1, H, W), float (0/1).
        reference_quirk: use the plain mean BCE over all (valid) pixels of the batch instead of L^w_BCE, as the
            widely copied F3Net snippet does (see the module docstring).
        valid: optional 0/1 mask of the shape of ``target``; pixels with 0 get weight 0 in both terms (nnU-Net's
            ignore label). Their ``target`` values still enter the box mean of the weights, so set them to
            background first (as :class:`PixelPositionAwareLoss` does).

    Returns:
        Scalar tensor.
    """
    _check_2d(logit, "logit")
    if target.shape != logit.shape:
        raise ValueError(f"logit and target must have the same shape, got {tuple(logit.shape)} and "
                         f"{tuple(target.shape)}")
    logit = logit.float()
    target = target.float()
    weights = position_aware_weights(target)
    if valid is not None:
        valid = valid.float().expand_as(target)
        weights = weights * valid
    iou = weighted_iou(logit, target, weights).mean()
    if not reference_quirk:
        return weighted_bce(logit, target, weights).mean() + iou
    bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    if valid is None:
        return bce.mean() + iou
    return (bce * valid).sum() / valid.sum().clamp_min(1.0) + iou


def one_vs_rest_logits(logits: torch.Tensor) -> torch.Tensor:
    """Foreground logits z_c with sigmoid(z_c) == softmax(logits)[:, c] for the classes c >= 1.

    z_c = logits_c - logsumexp_{k != c} logits_k, i.e. log(p_c / (1 - p_c)) of the softmax probabilities; for two
    classes it is the logit difference logits_1 - logits_0. nnU-Net's softmax, argmax and ensembling of the
    network's C-channel output therefore stay exactly those of the model trained with this loss.

    Args:
        logits: (B, C, *spatial) with C >= 2.

    Returns:
        Tensor (B, C - 1, *spatial).
    """
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"need at least 2 channels (background + foreground), got {num_classes}")
    channels = []  # for two classes: logits_1 - logits_0 (the log-sum-exp of one logit is that logit)
    for c in range(1, num_classes):
        rest = torch.cat([logits[:, :c], logits[:, c + 1:]], dim=1)
        channels.append(logits[:, c] - torch.logsumexp(rest, dim=1))
    return torch.stack(channels, dim=1)


class PixelPositionAwareLoss(nn.Module):
    """F3Net's PPA loss (L^w_BCE + L^w_IoU) on nnU-Net's softmax output.

    Inputs use nnU-Net's conventions: ``logits`` (B, C, H, W) for C mutually exclusive classes, ``target``
    (B, 1, H, W) (or (B, H, W)) holding integer labels in any dtype (nnU-Net passes float label maps). Each
    foreground class c >= 1 is scored one-vs-rest on z_c of :func:`one_vs_rest_logits` (sigmoid(z_c) is the softmax
    probability of c; z_1 = logits_1 - logits_0 for C = 2) against g = (target == c), and the losses are averaged
    over the foreground classes.

    Args:
        reference_quirk: see :func:`ppa_loss_binary`.
        ignore_label: label whose pixels get weight 0 in both terms (nnU-Net's ignore label), or None. For the box
            mean of the weights such pixels count as background.
    """

    def __init__(self, reference_quirk: bool = False, ignore_label: int | None = None) -> None:
        super().__init__()
        self.reference_quirk = reference_quirk
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_2d(logits, "logits")
        labels, valid = label_map_target(logits, target, self.ignore_label)
        z = one_vs_rest_logits(logits.float())
        losses = [ppa_loss_binary(z[:, c - 1:c], (labels == c).float(), self.reference_quirk, valid)
                  for c in range(1, logits.shape[1])]
        return torch.stack(losses).mean()
