"""Dense spatial transforms in torch: pull-back warping with a voxel displacement and scaling-and-squaring.

Conventions (the same as :mod:`nnunet_ext.synth._shapes`, so a field made there can be used here unchanged):

* an image is ``(B, C, *spatial)``; a displacement or velocity field is ``(B, ndim, *spatial)`` in VOXELS, its
  components in array-axis order (``(z, y, x)`` in 3D, ``(y, x)`` in 2D);
* warping pulls: the warped image at voxel ``x`` is the input at ``phi(x) = x + u(x)``;
* ``grid_sample`` is called with ``align_corners=True``, so the normalised coordinate -1 is the centre of voxel 0 and
  +1 the centre of voxel ``n - 1``; the voxel-to-normalised map below uses the same convention, hence a zero field
  samples every voxel centre and returns the input (up to float round-off for linear interpolation, exactly for
  nearest). VoxelMorph/TransMorph's ``SpatialTransformer`` normalises this way but calls ``grid_sample`` with
  ``align_corners=False``, which samples slightly off the voxel centres; we do not reproduce that.

Why a torch :func:`integrate_velocity` next to the numpy one in ``nnunet_ext.synth._shapes``: the numpy version
makes ground-truth deformations for the phantoms and keeps ``synth`` free of torch; this one runs inside a network,
batched, on the GPU and differentiably (the velocity is a network output). Both use linear interpolation with edge
extension, and ``tests/methods/dca/test_transform.py`` checks that they agree.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_MODES = ("bilinear", "nearest")
_PADDING_MODES = ("zeros", "border", "reflection")


def identity_grid(size: Sequence[int], dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Voxel coordinates of every voxel, ``(ndim, *size)``, component ``d`` = index along array axis ``d``."""
    axes = [torch.arange(int(n), dtype=dtype, device=device) for n in size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def _check_field(image: torch.Tensor, field: torch.Tensor, name: str) -> None:
    ndim = image.dim() - 2
    if ndim not in (2, 3):
        raise ValueError(f"image must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(image.shape)}")
    expected = (image.shape[0], ndim) + tuple(image.shape[2:])
    if tuple(field.shape) != expected:
        raise ValueError(f"{name} must have shape {expected} (B, ndim, *spatial) for image {tuple(image.shape)}, "
                         f"got {tuple(field.shape)}")


def warp(image: torch.Tensor, displacement: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros",
         grid: torch.Tensor | None = None) -> torch.Tensor:
    """Pull-back warp ``image(x + u(x))`` with a voxel displacement ``u``.

    Args:
        image: ``(B, C, *spatial)``, 2D or 3D.
        displacement: ``(B, ndim, *spatial)`` in voxels, components in array-axis order.
        mode: ``"bilinear"`` ((tri)linear in 3D) or ``"nearest"``.
        padding_mode: value outside the image, as in ``grid_sample``: ``"zeros"`` (background, the VoxelMorph and
            TransMorph choice for images), ``"border"`` (edge extension, used to compose displacement fields) or
            ``"reflection"``.
        grid: the identity grid ``(ndim, *spatial)`` if the caller keeps one (:class:`SpatialTransformer`).

    Returns:
        the warped image, ``(B, C, *spatial)``, dtype of ``image``.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    _check_field(image, displacement, "displacement")
    spatial = tuple(image.shape[2:])
    if grid is None:
        grid = identity_grid(spatial, displacement.dtype, displacement.device)
    positions = grid.to(displacement.dtype).unsqueeze(0) + displacement
    # voxel index p -> normalised 2 p / (n - 1) - 1 (align_corners=True); an axis of size 1 maps everything to -1
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in spatial], dtype=positions.dtype, device=positions.device)
    normalised = positions * scale.view((1, -1) + (1,) * len(spatial)) - 1.0
    # grid_sample wants the components last and in (x, y[, z]) order, i.e. array axes reversed
    sample_grid = normalised.movedim(1, -1).flip(-1)
    return F.grid_sample(image, sample_grid.to(image.dtype), mode=mode, padding_mode=padding_mode,
                         align_corners=True)


class SpatialTransformer(nn.Module):
    """Warp images of a fixed size with voxel displacement fields: ``out(x) = image(x + u(x))``.

    The identity grid is a non-persistent buffer: it follows ``.to(device)`` but is not written to checkpoints.

    Args:
        size: spatial size ``(H, W)`` or ``(D, H, W)``.
        mode: default interpolation, ``"bilinear"`` or ``"nearest"`` (can be overridden per call).
        padding_mode: ``grid_sample`` padding outside the image (see :func:`warp`).
    """

    def __init__(self, size: Sequence[int], mode: str = "bilinear", padding_mode: str = "zeros"):
        super().__init__()
        self.size = tuple(int(n) for n in size)
        if len(self.size) not in (2, 3):
            raise ValueError(f"size must have 2 or 3 entries, got {self.size}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode
        self.padding_mode = padding_mode
        self.register_buffer("grid", identity_grid(self.size), persistent=False)

    def forward(self, image: torch.Tensor, displacement: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        if tuple(image.shape[2:]) != self.size:
            raise ValueError(f"image spatial size {tuple(image.shape[2:])} != transformer size {self.size}")
        return warp(image, displacement, mode or self.mode, self.padding_mode, grid=self.grid)


def warp_labels_one_hot(labels: torch.Tensor, displacement: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Warp a label map by linearly interpolating its one-hot maps and taking the argmax.

    Smoother label boundaries than nearest-neighbour warping, and still only labels that occur in the input (or 0,
    background, where every class interpolates to 0 outside the image).

    Args:
        labels: integer labels in ``0 .. num_classes - 1``, ``(B, 1, *spatial)``.
        displacement: ``(B, ndim, *spatial)`` in voxels.
        num_classes: number of classes, background included.

    Returns:
        the warped labels, ``(B, 1, *spatial)``, dtype of ``labels``.
    """
    if labels.dim() < 4 or labels.shape[1] != 1:
        raise ValueError(f"labels must be (B, 1, *spatial), got shape {tuple(labels.shape)}")
    one_hot = F.one_hot(labels[:, 0].long(), num_classes).movedim(-1, 1)
    dtype = displacement.dtype if displacement.is_floating_point() else torch.float32
    warped = warp(one_hot.to(dtype), displacement, mode="bilinear", padding_mode="zeros")
    return warped.argmax(dim=1, keepdim=True).to(labels.dtype)


def integrate_velocity(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Displacement of ``exp(v)`` for a stationary velocity field, by scaling and squaring.

    Arsigny et al., MICCAI 2006: ``exp(v) = exp(v / 2^N)^(2^N)``. Start from ``u = v / 2^N`` (a small step, so
    ``x + u`` is a good first-order approximation of ``exp(v / 2^N)``) and square ``N`` times,
    ``phi <- phi o phi``, i.e. ``u <- u + u(x + u(x))``, with linear interpolation and edge extension
    (``padding_mode="border"``: with zero padding the composed field would shrink towards the image border).

    Args:
        velocity: ``(B, ndim, *spatial)`` in voxels, 2D or 3D.
        steps: N, the number of squarings (0 returns ``v``).

    Returns:
        the displacement ``(B, ndim, *spatial)`` in voxels.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if velocity.dim() not in (4, 5) or velocity.shape[1] != velocity.dim() - 2:
        raise ValueError(f"velocity must be (B, ndim, *spatial) with ndim 2 or 3, got {tuple(velocity.shape)}")
    grid = identity_grid(velocity.shape[2:], velocity.dtype, velocity.device)
    displacement = velocity / 2.0 ** steps
    for _ in range(steps):
        displacement = displacement + warp(displacement, displacement, "bilinear", "border", grid=grid)
    return displacement
