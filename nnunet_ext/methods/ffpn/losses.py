"""FFPN's loss, Eq. 3: ``L = L_Loc + L_Fou + L_Con + L_Cls`` (Chen et al., MICCAI 2023).

- ``L_Loc``, ``L_Fou``: Smooth L1 between predicted and Eq. 2 target offsets, over positive anchors.
- ``L_Con = 1 - PolarIoU * BoxIoU`` between the decoded predicted and ground-truth contours (positive anchors).
- ``L_Cls = 0.25 BCE + 0.75 Focal`` over positive and negative anchors (ignored anchors excluded). Focal is
  ``torchvision.ops.sigmoid_focal_loss`` with RetinaNet's own ``alpha = 0.25, gamma = 2``; the paper names only the
  mixing weights. Each term is a mean over its anchors (our choice; the paper gives no normalisation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import anchors as anchor_math
from . import fourier

BCE_WEIGHT = 0.25  # alpha in Sec. 2.1
FOCAL_WEIGHT = 0.75  # beta in Sec. 2.1


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``L_Cls = 0.25 BCE + 0.75 Focal`` over anchors with label 0 or 1 (label -1 = ignored)."""
    from torchvision.ops import sigmoid_focal_loss

    used = labels >= 0
    if not used.any():
        return logits.sum() * 0
    logits, targets = logits[used], labels[used].to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    focal = sigmoid_focal_loss(logits, targets, reduction="mean")
    return BCE_WEIGHT * bce + FOCAL_WEIGHT * focal


def contour_loss(points, centre, target_points, target_centre) -> torch.Tensor:
    """``L_Con = 1 - PolarIoU * BoxIoU``, averaged over the batch of contours ``(..., T, 2)``."""
    return (1 - anchor_math.contour_iou(points, centre, target_points, target_centre)).mean()


def regression_loss(centre_offsets, fourier_offsets, anchor_centres, anchor_coefficients, target_centres,
                    target_coefficients, num_points: int = 64) -> dict[str, torch.Tensor]:
    """``L_Loc``, ``L_Fou`` and ``L_Con`` of contours predicted as Eq. 2 offsets from anchors (FFPN's positive
    anchors, or CSR's merged contours).

    Args:
        centre_offsets, fourier_offsets: ``(P, 2)``, ``(P, N, 4)`` predictions.
        anchor_centres, anchor_coefficients, target_centres, target_coefficients: ``(P, 2)``, ``(P, N, 4)`` each.
    """
    centre_goal, fourier_goal = anchor_math.encode_offsets(target_centres, target_coefficients, anchor_centres,
                                                           anchor_coefficients)
    centre, coefficients = anchor_math.decode_offsets(centre_offsets, fourier_offsets, anchor_centres,
                                                      anchor_coefficients)
    points = fourier.decode(centre, coefficients, num_points)
    target_points = fourier.decode(target_centres, target_coefficients, num_points).to(points.dtype)
    return {"loc": F.smooth_l1_loss(centre_offsets, centre_goal.to(centre_offsets.dtype)),
            "fourier": F.smooth_l1_loss(fourier_offsets, fourier_goal.to(fourier_offsets.dtype)),
            "contour": contour_loss(points, centre, target_points, target_centres.to(points.dtype))}


def ffpn_loss(
    predicted_centre_offsets: torch.Tensor,
    predicted_fourier_offsets: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    anchor_centres: torch.Tensor,
    anchor_coefficients: torch.Tensor,
    target_centres: torch.Tensor,
    target_coefficients: torch.Tensor,
    num_points: int = 64,
) -> dict[str, torch.Tensor]:
    """Eq. 3 over a flat list of anchors.

    Args:
        predicted_centre_offsets, predicted_fourier_offsets: ``(P, 2)`` and ``(P, N, 4)`` network outputs.
        logits, labels: ``(P,)`` or ``(P, C)`` class scores and labels (1 positive, 0 negative, -1 ignored); an
            anchor is positive when any of its class labels is 1.
        anchor_centres, anchor_coefficients: ``(P, 2)``, ``(P, N, 4)`` each anchor's position and shape.
        target_centres, target_coefficients: ``(P, 2)``, ``(P, N, 4)`` the matched ground truth (read only where
            the anchor is positive).

    Returns:
        ``{"loc", "fourier", "contour", "cls", "total"}``; regression terms are 0 (with gradient) without positives.
    """
    positive = (labels == 1).reshape(len(labels), -1).any(dim=1)
    terms = {"cls": classification_loss(logits, labels)}
    if positive.any():
        terms.update(regression_loss(predicted_centre_offsets[positive], predicted_fourier_offsets[positive],
                                     anchor_centres[positive], anchor_coefficients[positive],
                                     target_centres[positive], target_coefficients[positive], num_points))
    else:
        zero = (predicted_centre_offsets.sum() + predicted_fourier_offsets.sum()) * 0
        terms.update(loc=zero, fourier=zero, contour=zero)
    terms["total"] = terms["loc"] + terms["fourier"] + terms["contour"] + terms["cls"]
    return terms
