"""Geometry, random-field and deformation helpers shared by the phantoms (numpy + scipy.ndimage only).

Conventions used throughout ``nnunet_ext.synth``:

* arrays are (z, y, x) or (y, x); stacks of coordinates or vectors carry the component axis FIRST,
  ``(ndim, *shape)``, in the same (z, y, x) order;
* physical positions are in mm measured from the centre of the grid (:func:`grid_mm`);
* displacements are in voxels: ``phi(x) = x + u(x)`` maps voxel index ``x`` to index ``phi(x)``.

Every random quantity is drawn from the ``numpy.random.Generator`` passed in, so results are deterministic per
generator state.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage


# ------------------------------------------------------------------------------------------------ random fields
def _linear_upsample(array: np.ndarray, axis: int, step: int, n_fine: int) -> np.ndarray:
    """Linearly interpolate samples taken at 0, step, 2 step, ... along ``axis`` onto positions 0..n_fine-1."""
    position = np.arange(n_fine) / step
    lower = np.minimum(np.floor(position).astype(int), array.shape[axis] - 2)
    weight_shape = [1] * array.ndim
    weight_shape[axis] = n_fine
    upper_weight = (position - lower).reshape(weight_shape)
    return (np.take(array, lower, axis=axis) * (1.0 - upper_weight)
            + np.take(array, lower + 1, axis=axis) * upper_weight)


def smooth_random_field(rng: np.random.Generator, shape: Sequence[int],
                        sigma: float | Sequence[float]) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field: white noise low-pass filtered by a Gaussian.

    Along axes where ``sigma`` (voxels) is large the noise is drawn on a grid coarsened by ``floor(sigma / 2)``
    and linearly interpolated back, so the cost does not grow with ``sigma`` (the field has no detail finer than
    ``sigma`` anyway).

    Args:
        shape: output shape.
        sigma: Gaussian standard deviation in voxels, scalar or one per axis.
    """
    shape = tuple(int(n) for n in shape)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (len(shape),))
    step = [max(1, int(s // 2)) if n > 2 else 1 for s, n in zip(sigma, shape)]
    coarse_shape = tuple(math.ceil((n - 1) / s) + 1 if s > 1 else n for n, s in zip(shape, step))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), sigma / np.asarray(step), mode="reflect")
    for axis, (n, s) in enumerate(zip(shape, step)):
        if s > 1:
            field = _linear_upsample(field, axis, s, n)
    field = field - field.mean()
    std = field.std()
    return field / std if std > 0 else field


def level_set_distance(field: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """First-order distance (mm) to the zero level set of a smooth field: ``|f| / |grad f|``.

    The zero set of a smooth random field is a network of thin curved sheets (lines in 2D); thresholding this
    distance draws sulci or fissures of a chosen width.
    """
    gradients = np.gradient(field, *spacing)
    gradients = gradients if isinstance(gradients, (list, tuple)) else [gradients]
    gradient_norm = np.sqrt(sum(g ** 2 for g in gradients))
    return np.abs(field) / np.maximum(gradient_norm, 1e-6)


# --------------------------------------------------------------------------------------------------- geometry
def grid_mm(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Physical coordinates (mm) of every voxel centre relative to the grid centre, shape ``(ndim, *shape)``."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def rotate_in_plane(coords: np.ndarray, angle: float) -> np.ndarray:
    """Rotate the last two coordinate components (y, x) by ``angle`` radians about the origin."""
    cos, sin = math.cos(angle), math.sin(angle)
    rotated = coords.copy()
    rotated[-2] = cos * coords[-2] - sin * coords[-1]
    rotated[-1] = sin * coords[-2] + cos * coords[-1]
    return rotated


def ellipsoid_radius(coords: np.ndarray, center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Normalised ellipsoidal radius ``sqrt(sum(((p - c) / r)^2))``: < 1 inside, 1 on the surface (any ndim)."""
    squared = sum(((coords[i] - center[i]) / radii[i]) ** 2 for i in range(len(radii)))
    return np.sqrt(squared)


def radial_depth(coords: np.ndarray, center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Distance (mm) from a point to the ellipsoid surface along the ray from the centre; > 0 inside, < 0 outside.

    For a point ``p`` at normalised radius ``rho`` the ray meets the surface at ``c + (p - c) / rho``, so the depth
    is ``|p - c| (1 / rho - 1)``: exact for a sphere and a close, smooth stand-in for the normal distance of the
    near-spherical shapes used here (skull, brain, breast outline).
    """
    rho = ellipsoid_radius(coords, center, radii)
    length = np.sqrt(sum((coords[i] - center[i]) ** 2 for i in range(len(radii))))
    safe_rho = np.maximum(rho, 1e-6)
    return np.where(rho > 1e-6, length * (1.0 / safe_rho - 1.0), float(min(radii)))


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Average non-overlapping ``factor``-wide blocks along every axis (supersampled rendering -> voxel values)."""
    if factor == 1:
        return array
    reshaped = array.reshape([n for size in array.shape for n in (size // factor, factor)])
    return reshaped.mean(axis=tuple(range(1, 2 * array.ndim, 2)))


def block_mode(labels: np.ndarray, factor: int, n_classes: int) -> np.ndarray:
    """Most frequent label in each ``factor``-wide block (ties go to the lower label); labels in 0..n_classes-1."""
    if factor == 1:
        return labels
    out_shape = tuple(n // factor for n in labels.shape)
    blocks = labels.reshape([n for size in out_shape for n in (size, factor)])
    ndim = labels.ndim
    blocks = blocks.transpose(tuple(range(0, 2 * ndim, 2)) + tuple(range(1, 2 * ndim, 2)))
    blocks = blocks.reshape(-1, factor ** ndim).astype(np.int64)
    codes = blocks + n_classes * np.arange(blocks.shape[0])[:, None]
    counts = np.bincount(codes.ravel(), minlength=blocks.shape[0] * n_classes).reshape(-1, n_classes)
    return np.argmax(counts, axis=1).reshape(out_shape).astype(labels.dtype)


# ------------------------------------------------------------------------------------------------ deformations
def sample(field: np.ndarray, coords_voxel: np.ndarray, order: int = 1) -> np.ndarray:
    """Values of ``field`` at fractional voxel positions ``coords_voxel`` (``(ndim, ...)``); edges are extended."""
    return ndimage.map_coordinates(field, coords_voxel, order=order, mode="nearest")


def warp(image: np.ndarray, displacement: np.ndarray, order: int = 1) -> np.ndarray:
    """Pull-back warp ``image(x + u(x))`` with a displacement ``u`` of shape ``(ndim, *image.shape)`` in voxels."""
    identity = np.indices(image.shape, dtype=float)
    return sample(image, identity + displacement, order=order)


def integrate_velocity(velocity: np.ndarray, steps: int = 7) -> np.ndarray:
    """Displacement of ``exp(v)`` for a stationary velocity field by scaling and squaring.

    Arsigny et al., MICCAI 2006, Sect. 2: ``exp(v) = exp(v / 2^N)^(2^N)``; start from ``u = v / 2^N`` (small enough
    to be a valid first-order step) and square ``N`` times, ``phi <- phi o phi``, i.e. ``u <- u + u(x + u(x))``.

    Args:
        velocity: ``(ndim, *shape)`` in voxels.
        steps: N, the number of squarings.
    """
    displacement = velocity / 2.0 ** steps
    identity = np.indices(velocity.shape[1:], dtype=float)
    for _ in range(steps):
        positions = identity + displacement
        displacement = displacement + np.stack([sample(component, positions) for component in displacement])
    return displacement


def random_velocity_field(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float],
                          max_velocity_mm: float, smoothness_mm: float) -> np.ndarray:
    """Smooth random stationary velocity field in voxels, ``(ndim, *shape)``.

    Each component is Gaussian-smoothed white noise (standard deviation ``smoothness_mm``); the field is scaled so
    its largest vector length is ``max_velocity_mm``, which is about the largest displacement of ``exp(v)``.
    """
    sigma_voxel = [smoothness_mm / s for s in spacing]
    velocity_mm = np.stack([smooth_random_field(rng, shape, sigma_voxel) for _ in shape])
    largest = np.sqrt((velocity_mm ** 2).sum(axis=0)).max()
    velocity_mm *= max_velocity_mm / max(largest, 1e-12)
    return velocity_mm / np.asarray(spacing, dtype=float).reshape((-1,) + (1,) * len(shape))


def jacobian_determinant(displacement: np.ndarray) -> np.ndarray:
    """Determinant of the Jacobian of ``x -> x + u(x)`` (central differences, voxel units); <= 0 means folding."""
    ndim = displacement.shape[0]
    jacobian = np.empty(displacement.shape[1:] + (ndim, ndim))
    for i in range(ndim):
        derivatives = np.gradient(displacement[i]) if ndim > 1 else [np.gradient(displacement[i])]
        for j, derivative in enumerate(derivatives):
            jacobian[..., i, j] = derivative + (1.0 if i == j else 0.0)
    return np.linalg.det(jacobian)
