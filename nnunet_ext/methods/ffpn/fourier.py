"""Elliptic Fourier descriptors (Kuhl & Giardina 1982) in the FFPN parametrisation (Chen et al., MICCAI 2023, Eq. 1).

FFPN writes a closed contour sampled at ``t = 0 .. T`` as

    x_N(t) = L_x + sum_{n=1..N} a_n sin(2 n pi t / T) + b_n cos(2 n pi t / T)
    y_N(t) = L_y + sum_{n=1..N} c_n sin(2 n pi t / T) + d_n cos(2 n pi t / T)        (Eq. 1)

so a contour is ``4 N + 2`` numbers: the centre ``(L_x, L_y)`` and one row ``(a_n, b_n, c_n, d_n)`` per harmonic.
Kuhl-Giardina (and ``pyefd``) put the cosine coefficient first; FFPN's ``(a, b, c, d)`` is their ``(b, a, d, c)``.

Conventions used everywhere in :mod:`nnunet_ext.methods.ffpn`:

- A contour is an ``(K, 2)`` array of ``(x, y)`` points, ``x`` along array axis 1 (columns) and ``y`` along array
  axis 0 (rows), the image convention of the paper's figures. It is closed implicitly (last point joins the first).
- Encoding needs a canonical parametrisation, otherwise the same shape has many descriptors (any start point, either
  direction) and neither regression targets nor k-means anchors are well defined. :func:`canonical_contour` makes
  the traversal counter-clockwise in ``(x, y)`` (positive shoelace area) and starts it at the vertex nearest to the ray
  from the arc-length centre along ``+x``. This is our reading: the paper does not say how it fixes the start point.
- Decoding is in torch so the contour loss (Eq. 3) can be backpropagated through it.
"""
from __future__ import annotations

import numpy as np
import torch

DEFAULT_ORDER = 7  # N in Eq. 1, the paper's default


def _closed_segments(contour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The contour's vertices without zero-length steps, and the step vectors that close it."""
    points = np.asarray(contour, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"a contour must be a (K, 2) array of (x, y) points, got shape {points.shape}")
    steps = np.diff(np.vstack([points, points[:1]]), axis=0)
    keep = np.hypot(steps[:, 0], steps[:, 1]) > 1e-12
    points = points[keep]
    if len(points) < 3:
        raise ValueError(f"a contour needs at least 3 distinct points, got {len(points)}")
    return points, np.diff(np.vstack([points, points[:1]]), axis=0)


def signed_area(contour: np.ndarray) -> float:
    """Shoelace area of the closed polygon; positive when it turns counter-clockwise in ``(x, y)``."""
    points = np.asarray(contour, dtype=np.float64)
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def arc_length_centre(contour: np.ndarray) -> np.ndarray:
    """``(L_x, L_y)``: the mean of the contour over its arc length, i.e. the DC term of Eq. 1.

    For a polygon each straight step contributes its midpoint weighted by its length, which is the exact integral
    ``(1/T) * integral of x(t) dt`` that Kuhl-Giardina's ``A_0``/``C_0`` evaluate.
    """
    points, steps = _closed_segments(contour)
    lengths = np.hypot(steps[:, 0], steps[:, 1])
    midpoints = points + 0.5 * steps
    return (midpoints * lengths[:, None]).sum(axis=0) / lengths.sum()


def canonical_contour(contour: np.ndarray) -> np.ndarray:
    """The same closed contour, counter-clockwise in ``(x, y)``, starting at the vertex nearest to the ``+x`` ray
    from its arc-length centre (ties go to the farther vertex, so star-unlike shapes start on the outer crossing)."""
    points, _ = _closed_segments(contour)
    if signed_area(points) < 0:
        points = points[::-1]
    offsets = points - arc_length_centre(points)
    angle = np.abs(np.arctan2(offsets[:, 1], offsets[:, 0]))
    radius = np.hypot(offsets[:, 0], offsets[:, 1])
    start = int(np.lexsort((-radius, np.round(angle, 9)))[0])
    return np.roll(points, -start, axis=0)


def encode(contour: np.ndarray, order: int = DEFAULT_ORDER) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 1 coefficients of a closed polygon, exact for its piecewise-linear parametrisation by arc length.

    Args:
        contour: ``(K, 2)`` ``(x, y)`` points; used as given (call :func:`canonical_contour` first for targets).
        order: number of harmonics ``N``.

    Returns:
        ``(centre, coefficients)``: ``(2,)`` ``(L_x, L_y)`` and ``(N, 4)`` rows ``(a_n, b_n, c_n, d_n)``.

    For harmonic ``n`` with ``phi_k = 2 n pi t_k / T`` at the cumulative arc length ``t_k`` of vertex ``k``, the
    Kuhl-Giardina integrals of a straight step of slope ``dx_k / dt_k`` give

        cos-coefficient of x = T / (2 n^2 pi^2) * sum_k dx_k / dt_k * (cos phi_k - cos phi_{k-1})   (FFPN's b_n)
        sin-coefficient of x = T / (2 n^2 pi^2) * sum_k dx_k / dt_k * (sin phi_k - sin phi_{k-1})   (FFPN's a_n)

    and the same with ``dy`` for ``d_n`` and ``c_n``.
    """
    if int(order) < 1:
        raise ValueError(f"the number of harmonics must be >= 1, got {order}")
    points, steps = _closed_segments(contour)
    lengths = np.hypot(steps[:, 0], steps[:, 1])
    t_end = np.cumsum(lengths)
    period = t_end[-1]
    t_start = np.concatenate([[0.0], t_end[:-1]])
    harmonics = np.arange(1, int(order) + 1)[:, None]
    phi_end = 2 * np.pi * harmonics * t_end / period
    phi_start = 2 * np.pi * harmonics * t_start / period
    scale = period / (2 * harmonics[:, 0] ** 2 * np.pi**2)
    slope = steps / lengths[:, None]
    d_cos = np.cos(phi_end) - np.cos(phi_start)
    d_sin = np.sin(phi_end) - np.sin(phi_start)
    cos_x, sin_x = scale * (d_cos @ slope[:, 0]), scale * (d_sin @ slope[:, 0])
    cos_y, sin_y = scale * (d_cos @ slope[:, 1]), scale * (d_sin @ slope[:, 1])
    # FFPN's order: a (sin x), b (cos x), c (sin y), d (cos y); the curve starts at t = 0 at the first vertex.
    coefficients = np.stack([sin_x, cos_x, sin_y, cos_y], axis=1)
    return arc_length_centre(points), coefficients


def decode(centre: torch.Tensor, coefficients: torch.Tensor, num_points: int = 64) -> torch.Tensor:
    """Eq. 1: ``num_points`` points ``t = 0 .. T (T excluded)`` of the contours given by batches of descriptors.

    Args:
        centre: ``(..., 2)`` ``(L_x, L_y)``.
        coefficients: ``(..., N, 4)`` rows ``(a_n, b_n, c_n, d_n)``.
        num_points: ``T``, points per contour.

    Returns:
        ``(..., num_points, 2)`` ``(x, y)`` points, differentiable in both inputs.
    """
    order = coefficients.shape[-2]
    t = torch.arange(num_points, dtype=coefficients.dtype, device=coefficients.device) / num_points
    n = torch.arange(1, order + 1, dtype=coefficients.dtype, device=coefficients.device)
    phase = 2 * torch.pi * n[:, None] * t[None, :]  # (N, T)
    sin, cos = torch.sin(phase), torch.cos(phase)
    a, b, c, d = coefficients.unbind(-1)  # each (..., N)
    x = torch.einsum("...n,nt->...t", a, sin) + torch.einsum("...n,nt->...t", b, cos)
    y = torch.einsum("...n,nt->...t", c, sin) + torch.einsum("...n,nt->...t", d, cos)
    return torch.stack([x, y], dim=-1) + centre[..., None, :]


def harmonic_ellipse_size(coefficients: torch.Tensor | np.ndarray, floor: float = 1e-3):
    """``(E_x, E_y)`` of Eq. 2: width and height of the ellipse traced by each harmonic alone.

    Harmonic ``n`` draws ``x = a_n sin + b_n cos``, whose extent is ``2 sqrt(a_n^2 + b_n^2)`` (and likewise in
    ``y``). ``floor`` keeps the division in Eq. 2 finite for a degenerate (flat) harmonic.
    Returns ``(..., N, 2)`` in the type of the input.
    """
    module = torch if isinstance(coefficients, torch.Tensor) else np
    a, b, c, d = (coefficients[..., i] for i in range(4))
    width = 2 * module.sqrt(a**2 + b**2)
    height = 2 * module.sqrt(c**2 + d**2)
    size = module.stack([width, height], -1)
    return size.clamp_min(floor) if module is torch else np.maximum(size, floor)


def contour_from_mask(mask: np.ndarray) -> np.ndarray:
    """The outer boundary of the largest object in a 2D binary mask as ``(K, 2)`` ``(x, y)`` points, canonical
    (:func:`nnunet_ext.metrics.segmentation.largest_object_outline`, whose polygon fills back into the mask).
    Holes are ignored: a ring-shaped class is a difference of two objects, handled by the caller.
    """
    from nnunet_ext.metrics.segmentation import largest_object_outline

    return canonical_contour(largest_object_outline(mask))
