"""Fourier anchors, the contour IoU, anchor assignment and the Eq. 2 regression targets of FFPN (Chen et al. 2023).

An anchor is a contour shape (the ``(N, 4)`` coefficients of Eq. 1 without a centre) placed at a feature-map location.
The paper clusters the training contours into 9 base anchors; we run k-means (scikit-learn) on the centre-free
coefficients expressed as fractions of the network input size, so anchors fitted at one input size apply at another.

IoU. The paper defines ``IoU = PolarIoU * BoxIoU`` (Sec. 2.1) with PolarIoU after PolarMask. PolarMask compares ray
lengths from one centre at fixed angles; Fourier contours are sampled at fixed curve parameter ``t`` instead, so our
reading compares, at each of the ``T`` sampled points, the distances of the two contours' ``t``-th points from their
own centres: ``PolarIoU = sum_t min(r_t, r*_t) / sum_t max(r_t, r*_t)``. The canonical start point
(:func:`..fourier.canonical_contour`) makes ``t`` comparable between contours. Position is BoxIoU's job: the IoU of
the contours' bounding boxes. Identical contours give 1; for concentric circles of radii ``r < R`` it is ``r / R``.
"""
from __future__ import annotations

import numpy as np
import torch

from . import fourier

DEFAULT_NUM_ANCHORS = 9
POSITIVE_IOU = 0.25  # the paper's thresholds for positive and negative anchors; in between is ignored
NEGATIVE_IOU = 0.10
IGNORE = -1


def fit_anchors(coefficient_sets: np.ndarray, image_size: float, k: int = DEFAULT_NUM_ANCHORS, seed: int = 0):
    """k-means Fourier anchors from the training contours' coefficients.

    Args:
        coefficient_sets: ``(M, N, 4)`` Eq. 1 coefficients of the training contours, in pixels of the network input.
        image_size: the network input side length in pixels (416 in the paper); anchors are returned as fractions.
        k: number of anchors. With fewer distinct training shapes than ``k``, the clusters are repeated up to ``k``
            (the network's anchor count is fixed when it is built; a repeated anchor is merely redundant).
        seed: k-means initialisation seed, so anchors are reproducible per fold.

    Returns:
        ``(k, N, 4)`` anchor coefficients as fractions of ``image_size``, sorted by first-harmonic area (small first).
    """
    from sklearn.cluster import KMeans

    shapes = np.asarray(coefficient_sets, dtype=np.float64)
    if shapes.ndim != 3 or shapes.shape[-1] != 4 or len(shapes) == 0:
        raise ValueError(f"fit_anchors needs (M, N, 4) coefficients of at least one contour, got {shapes.shape}")
    features = shapes.reshape(len(shapes), -1) / float(image_size)
    clusters = min(int(k), len(np.unique(features.round(9), axis=0)))
    model = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit(features)
    anchors = model.cluster_centers_.reshape(clusters, *shapes.shape[1:])
    area = np.prod(fourier.harmonic_ellipse_size(anchors)[:, 0], axis=-1)
    anchors = anchors[np.argsort(area, kind="stable")]
    return anchors[np.arange(int(k)) % clusters]


def bounding_boxes(points: torch.Tensor) -> torch.Tensor:
    """``(..., T, 2)`` contour points -> ``(..., 4)`` boxes ``(x_min, y_min, x_max, y_max)``."""
    return torch.cat([points.amin(dim=-2), points.amax(dim=-2)], dim=-1)


def box_iou(boxes: torch.Tensor, other: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Element-wise IoU of broadcastable ``(..., 4)`` boxes (``torchvision.ops.box_iou`` is the pairwise matrix)."""
    low = torch.maximum(boxes[..., :2], other[..., :2])
    high = torch.minimum(boxes[..., 2:], other[..., 2:])
    intersection = (high - low).clamp_min(0).prod(dim=-1)
    area = (boxes[..., 2:] - boxes[..., :2]).prod(dim=-1)
    area_other = (other[..., 2:] - other[..., :2]).prod(dim=-1)
    return intersection / (area + area_other - intersection + eps)


def polar_iou(points, centre, other_points, other_centre, eps: float = 1e-9) -> torch.Tensor:
    """Our reading of PolarIoU for Fourier contours (module docstring): ``sum min(r, r*) / sum max(r, r*)``."""
    radius = (points - centre[..., None, :]).norm(dim=-1)
    other_radius = (other_points - other_centre[..., None, :]).norm(dim=-1)
    return torch.minimum(radius, other_radius).sum(-1) / (torch.maximum(radius, other_radius).sum(-1) + eps)


def contour_iou(points, centre, other_points, other_centre) -> torch.Tensor:
    """The paper's ``IoU = PolarIoU * BoxIoU`` of two batches of decoded contours ``(..., T, 2)``."""
    boxes = box_iou(bounding_boxes(points), bounding_boxes(other_points))
    return polar_iou(points, centre, other_points, other_centre) * boxes


def encode_offsets(target_centre, target_coefficients, anchor_centre, anchor_coefficients):
    """Eq. 2: regression targets of a ground-truth contour relative to an anchor.

    ``dF_{a,b,i} = (G - A) / E_{x,i}``, ``dF_{c,d,i} = (G - A) / E_{y,i}``, ``dL_{x,y} = (G_L - A_L) / E_{x,y,1}``.
    The paper does not say whose ellipse ``E`` is; we use the anchor's, as box regression divides by the anchor's
    width and height, so the same anchor maps offsets back without knowing the answer.

    Args:
        target_centre, anchor_centre: ``(..., 2)``.
        target_coefficients, anchor_coefficients: ``(..., N, 4)``.

    Returns:
        ``(centre_offsets (..., 2), fourier_offsets (..., N, 4))``.
    """
    size = fourier.harmonic_ellipse_size(anchor_coefficients)  # (..., N, 2) widths, heights
    scale = size[..., [0, 0, 1, 1]]
    return (target_centre - anchor_centre) / size[..., 0, :], (target_coefficients - anchor_coefficients) / scale


def decode_offsets(centre_offsets, fourier_offsets, anchor_centre, anchor_coefficients):
    """Inverse of :func:`encode_offsets`: predicted offsets -> ``(centre, coefficients)``."""
    size = fourier.harmonic_ellipse_size(anchor_coefficients)
    scale = size[..., [0, 0, 1, 1]]
    return anchor_centre + centre_offsets * size[..., 0, :], anchor_coefficients + fourier_offsets * scale


def grid_centres(height: int, width: int, stride: float) -> torch.Tensor:
    """``(height * width, 2)`` ``(x, y)`` pixel centres of a feature map's cells, row-major."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1).double().mul(stride).add((stride - 1) / 2)


@torch.no_grad()
def assign_anchors(
    locations: torch.Tensor,
    anchor_coefficients: torch.Tensor,
    target_centres: torch.Tensor,
    target_coefficients: torch.Tensor,
    num_points: int = 64,
    positive_iou: float = POSITIVE_IOU,
    negative_iou: float = NEGATIVE_IOU,
):
    """Label every (location, anchor) pair positive / negative / ignored by its best contour IoU with a target.

    Args:
        locations: ``(L, 2)`` anchor centres in pixels.
        anchor_coefficients: ``(A, N, 4)`` anchor shapes in pixels.
        target_centres, target_coefficients: ``(G, 2)`` and ``(G, N, 4)``; ``G`` may be 0 (all negative).

    Returns:
        ``(matched, best_iou)``, both ``(L, A)``: ``matched`` is the index of the best target for positives,
        :data:`IGNORE` for pairs between the thresholds and ``-2`` for negatives; ``best_iou`` is that IoU.
    """
    num_locations, num_anchors = len(locations), len(anchor_coefficients)
    if len(target_centres) == 0:
        return torch.full((num_locations, num_anchors), -2, dtype=torch.long), torch.zeros(num_locations, num_anchors)
    dtype = anchor_coefficients.dtype
    anchors = fourier.decode(torch.zeros(num_anchors, 2, dtype=dtype), anchor_coefficients, num_points)
    anchor_points = anchors[None] + locations.to(dtype)[:, None, None, :]  # (L, A, T, 2)
    targets = fourier.decode(target_centres.to(dtype), target_coefficients.to(dtype), num_points)  # (G, T, 2)
    iou = contour_iou(
        anchor_points[:, :, None],
        locations.to(dtype)[:, None, None, :].expand(-1, num_anchors, len(targets), -1),
        targets[None, None],
        target_centres.to(dtype)[None, None],
    )  # (L, A, G)
    best_iou, matched = iou.max(dim=-1)
    matched = torch.where(best_iou >= positive_iou, matched, torch.full_like(matched, IGNORE))
    matched = torch.where(best_iou < negative_iou, torch.full_like(matched, -2), matched)
    return matched, best_iou
