"""The contrastive method's losses: Eq. 1 (tumour-background pre-training), SimSiam's (the Sect. 3 baseline) and Eq. 2
(segmentation).

``D`` is SimSiam's negative cosine similarity (Chen and He, 2021) with the stop-gradient inside: ``D(p, z) =
-cos(p, sg(z))`` per sample, averaged over the batch; features of any shape are flattened per sample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nnunet_ext.methods.hcnet.losses import KineticSegmentationLoss


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine similarity of (B, ...) features, in float32 (safe under autocast)."""
    return F.cosine_similarity(a.flatten(1).float(), b.flatten(1).float(), dim=1)


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``D(p, z) = -mean_b cos(p_b, sg(z_b))``, in [-1, 1]; ``z`` is detached here (SimSiam's stop-gradient)."""
    return -_cosine(p, z.detach()).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """SimSiam's symmetrised loss for two views, ``1/2 D(p1, sg(z2)) + 1/2 D(p2, sg(z1))``."""
    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


def tumour_background_loss(p_real: torch.Tensor, p_pos: torch.Tensor, p_neg: torch.Tensor, z_real: torch.Tensor,
                           z_pos: torch.Tensor, z_neg: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eq. 1, the tumour-background contrastive loss, no temperature:

    ``L = L_pos + L_neg``, ``L_pos = 1/2 [D(p_real, sg(z_pos)) + D(p_pos, sg(z_real))]`` and
    ``L_neg = -1/2 [D(p_real, sg(z_neg)) + D(p_neg, sg(z_real))]``, in [-2, 2]; minimising it pulls the real and
    positive features together and pushes the real and negative ones apart.

    Paper notation: ``E_1, E_2, E_3`` are the encoder's features of the fake tumour (our positive), the real tumour
    (real) and the fake normal tissue (negative) patches, ``P_1, P_2, P_3`` their predictor outputs. The printed
    ``L_pos = 1/2 (D(P_2, sg(E_1)) + D(P_1, sg(E_2)))`` is ``1/2 [D(p_real, sg(z_pos)) + D(p_pos, sg(z_real))]``
    and the printed negative term ``-1/2 (D(P_2, sg(E_3)) + D(P_3, sg(E_2)))`` is
    ``-1/2 [D(p_real, sg(z_neg)) + D(p_neg, sg(z_real))]``: the same pairing (predictor of one branch against the
    stopped features of the other) for both terms.

    Args:
        p_real, p_pos, p_neg: predictor outputs (B, ...) of the real, positive and negative patches.
        z_real, z_pos, z_neg: encoder (projector) features (B, ...) of the same patches; never back-propagated into.

    Returns:
        ``loss``, ``positive_term`` (``L_pos``), ``negative_term`` (``L_neg``, so ``loss = positive_term +
        negative_term``) and, without gradient, ``cos_real_pos`` and ``cos_real_neg``: the batch-mean cosine of
        ``z_real`` with ``z_pos`` and with ``z_neg`` (collapse monitors).
    """
    positive_term = 0.5 * (negative_cosine(p_real, z_pos) + negative_cosine(p_pos, z_real))
    negative_term = -0.5 * (negative_cosine(p_real, z_neg) + negative_cosine(p_neg, z_real))
    with torch.no_grad():
        cos_real_pos = _cosine(z_real, z_pos).mean()
        cos_real_neg = _cosine(z_real, z_neg).mean()
    return {"loss": positive_term + negative_term, "positive_term": positive_term, "negative_term": negative_term,
            "cos_real_pos": cos_real_pos, "cos_real_neg": cos_real_neg}


class DiceBCELoss(KineticSegmentationLoss):
    """Eq. 2, ``L = lambda L_Dice + L_BCE``, lambda = 5, for a binary segmentation from 2-class logits.

    ``F`` is the softmax foreground probability, ``G`` the (B, 1, ...) binary target; ``L_Dice = 1 - (2 |F G| +
    s) / (|F| + |G| + s)`` with sums over the whole batch (nnU-Net's batch Dice) and ``s = 1e-5``; ``L_BCE`` is the
    binary cross-entropy of ``F`` against ``G``, mean over voxels. Voxels with a negative label (nnU-Net's -1) are
    always left out of both terms, and so are those labelled ``ignore_label`` (nnU-Net's ignore label) if given.
    The paper prints ``|F| U |G|`` in the denominator; we read it as the usual Dice ``|F| + |G|``.

    The computation is HCNet's Eq. 5 loss (:class:`nnunet_ext.methods.hcnet.losses.KineticSegmentationLoss`, which
    weights the other term) configured with the weights swapped and batch Dice.
    """

    def __init__(self, dice_weight: float = 5.0, ignore_label: int | None = None):
        super().__init__(bce_weight=1.0, dice_weight=dice_weight, batch_dice=True,
                         ignore_label=-1 if ignore_label is None else ignore_label)  # negatives are always left out
