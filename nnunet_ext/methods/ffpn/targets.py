"""From nnU-Net label patches to FFPN targets, and from network maps to the Eq. 3 loss of a batch.

Geometry: the network sees every patch resized to ``input_size x input_size``; contours are extracted in patch pixels,
their points mapped with the same per-axis scale, and only then made canonical and encoded. (Scaling the Eq. 1
coefficients instead would describe the same curve, but parametrised by the arc length of the unscaled contour,
which differs from the network-space encoding whenever the scale is anisotropic.)

One object per class: each class's target is the outer boundary of its largest connected component. Holes are
ignored, so a ring-shaped class (CAMUS myocardium) is its filled outline, which encloses the classes inside it; the
painting order in :func:`..network.paint_label_logits` (largest first) turns that back into a ring.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import anchors as anchor_math
from . import fourier
from .csr import DEFAULT_PROPOSALS, merge_proposals
from .losses import ffpn_loss, regression_loss


@dataclass
class ImageTargets:
    """The objects of one image: ``centres (G, 2)``, ``coefficients (G, N, 4)`` in network pixels, 0-based
    ``classes (G,)`` (nnU-Net label ``k`` is class ``k - 1``)."""

    centres: np.ndarray
    coefficients: np.ndarray
    classes: np.ndarray


def image_targets(label: np.ndarray, num_classes: int, order: int, scale_xy) -> ImageTargets:
    """Targets of one 2D label patch (values ``0..num_classes``; anything else, e.g. nnU-Net's -1, is ignored).

    ``scale_xy``: network pixels per patch pixel along ``x`` (columns) and ``y`` (rows), i.e.
    ``(input_size / patch_width, input_size / patch_height)``.
    """
    label = np.asarray(label)
    scale_xy = np.asarray(scale_xy, dtype=np.float64)
    centres, coefficients, classes = [], [], []
    for cls in range(1, num_classes + 1):
        mask = label == cls
        if not mask.any():
            continue
        # pixel centres map as in the network's bilinear resize (align_corners=False): p' = (p + 0.5) s - 0.5
        contour = fourier.canonical_contour((fourier.contour_from_mask(mask) + 0.5) * scale_xy - 0.5)
        centre, coefficient = fourier.encode(contour, order)
        centres.append(centre)
        coefficients.append(coefficient)
        classes.append(cls - 1)
    return ImageTargets(np.reshape(centres, (-1, 2)), np.reshape(coefficients, (-1, order, 4)),
                        np.asarray(classes, dtype=np.int64))


def batch_targets(labels: torch.Tensor, num_classes: int, order: int, input_size: int) -> list[ImageTargets]:
    """:func:`image_targets` of every patch of ``labels (B, 1, H, W)`` (computed once per training step and shared
    by the FFPN and CSR losses: contour extraction runs on the CPU)."""
    scale = (input_size / labels.shape[-1], input_size / labels.shape[-2])
    return [image_targets(label[0], num_classes, order, scale) for label in labels.cpu().numpy()]


def batch_loss(maps: dict[str, torch.Tensor], targets: list[ImageTargets], anchors_px: torch.Tensor, stride: int,
               num_points: int = 64) -> dict[str, torch.Tensor]:
    """Eq. 3 over a batch: the images' targets (:func:`batch_targets`), anchors assigned per image, all anchors
    flattened.

    Per (location, anchor): positive -> class vector one-hot on the matched object's class; negative -> all zeros;
    ignored -> excluded from ``L_Cls``.
    """
    fourier_maps, location, logits = (maps[k].float() for k in ("fourier", "location", "logits"))
    batch, num_anchors, _, height, width = location.shape
    num_classes, order = logits.shape[2], fourier_maps.shape[2]
    locations = anchor_math.grid_centres(height, width, stride)  # (L, 2), row-major like the maps' (h, w)
    anchors_px = anchors_px.double().cpu()
    cells = height * width
    class_labels = torch.zeros(batch, cells, num_anchors, num_classes)
    target_centres = torch.zeros(batch, cells, num_anchors, 2, dtype=torch.float64)
    target_coefficients = torch.zeros(batch, cells, num_anchors, order, 4, dtype=torch.float64)
    for image, image_objects in enumerate(targets):
        centres, coefficients = torch.from_numpy(image_objects.centres), torch.from_numpy(image_objects.coefficients)
        matched, _ = anchor_math.assign_anchors(locations, anchors_px, centres, coefficients, num_points)
        class_labels[image][matched == anchor_math.IGNORE] = -1
        positive = matched >= 0
        if positive.any():
            index = matched[positive]
            target_centres[image][positive] = centres[index]
            target_coefficients[image][positive] = coefficients[index]
            class_labels[image][positive, torch.from_numpy(image_objects.classes)[index]] = 1
    device = location.device
    flat = lambda tensor, *tail: tensor.reshape(-1, *tail).to(device)  # noqa: E731
    return ffpn_loss(
        predicted_centre_offsets=flat(location.permute(0, 3, 4, 1, 2), 2),
        predicted_fourier_offsets=flat(fourier_maps.permute(0, 4, 5, 1, 2, 3), order, 4),
        logits=flat(logits.permute(0, 3, 4, 1, 2), num_classes),
        labels=flat(class_labels, num_classes),
        anchor_centres=flat(locations[None, :, None, :].expand(batch, -1, num_anchors, -1), 2),
        anchor_coefficients=flat(anchors_px[None, None].expand(batch, cells, -1, -1, -1), order, 4),
        target_centres=flat(target_centres, 2),
        target_coefficients=flat(target_coefficients, order, 4),
        num_points=num_points,
    )


def csr_loss(network, maps: dict[str, torch.Tensor], targets: list[ImageTargets], num_points: int = 64
             ) -> torch.Tensor:
    """CSR's ``L_Loc + L_Fou + L_Con`` (Sec. 2.2) over every ground-truth object of the batch.

    The anchor of each object is ``M_c``, the merged top-n proposals of its class. Proposals are detached: CSR learns
    to refine what FFPN proposes, and FFPN keeps learning from Eq. 3 alone. Without objects the loss is a zero that
    still touches the CSR parameters (DDP expects every parameter in the graph).
    """
    with torch.no_grad():
        centres, coefficients, scores = network.decode_top(
            {k: maps[k].detach().float() for k in ("fourier", "location", "logits")}, DEFAULT_PROPOSALS)
    merged_centres, merged_coefficients, goal_centres, goal_coefficients, image_index = [], [], [], [], []
    for image, image_objects in enumerate(targets):
        for centre, coefficient, cls in zip(image_objects.centres, image_objects.coefficients, image_objects.classes):
            merged = merge_proposals(centres[image, cls], coefficients[image, cls], scores[image, cls],
                                     num_points=num_points)
            merged_centres.append(merged[0])
            merged_coefficients.append(merged[1])
            goal_centres.append(torch.as_tensor(centre))
            goal_coefficients.append(torch.as_tensor(coefficient))
            image_index.append(image)
    features = maps["refine_features"].float()
    untouched = features.sum() * 0 + sum(p.sum() for p in network.csr.parameters()) * 0
    if not merged_centres:
        return untouched
    merged_c, merged_k = torch.stack(merged_centres), torch.stack(merged_coefficients)
    offsets = network.csr(features, torch.tensor(image_index, device=features.device), merged_c, merged_k)
    terms = regression_loss(*offsets, merged_c, merged_k, torch.stack(goal_centres).to(merged_c),
                            torch.stack(goal_coefficients).to(merged_k), num_points)
    return terms["loc"] + terms["fourier"] + terms["contour"] + untouched
