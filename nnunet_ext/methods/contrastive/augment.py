"""The SimSiam baseline's views (Sect. 3): "blurring, horizontal and vertical flipping, Gaussian noising, and scaling at
different probabilities", as batched torch ops that run on the patch's device.

Each sample of a (B, C, X0, X1, X2) batch draws, from the given generator, whether each transform applies and its
parameter, in this order:

1. scaling: an isotropic spatial zoom about the patch centre by ``s ~ U(0.75, 1.25)`` (``s > 1`` magnifies),
   trilinear resampling to the same patch size, border values outside. We read "scaling" as a zoom, as nnU-Net's and
   SimSiam's own augmentations (random resized crops) scale space, not intensity; the patch size stays fixed.
2. flipping: along each of the two in-plane axes (the last two), independently;
3. blurring: a 3D Gaussian of ``sigma ~ U(0.5, 1.0)`` voxels (separable, replicate padding);
4. Gaussian noising: ``N(0, (a std)^2)`` added, ``a ~ U(0, 0.1)``, ``std`` the sample's intensity std.

The uniform draws (a flag per flip axis, a flag and a parameter for each other transform) come in a fixed number
per call, so a view depends only on the generator's state; noise fields are drawn afterwards for the samples
that get noise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SCALE_RANGE = (0.75, 1.25)
BLUR_SIGMA_RANGE = (0.5, 1.0)
NOISE_RANGE = (0.0, 0.1)  # times the sample's std
_BLUR_RADIUS = math.ceil(3 * BLUR_SIGMA_RANGE[1])


def _uniform(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    return bounds[0] + (bounds[1] - bounds[0]) * u


def _zoom(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Isotropic zoom of (n, C, *S) by ``factor`` (n,) about the centre, same output size."""
    theta = torch.zeros((x.shape[0], 3, 4), dtype=x.dtype, device=x.device)
    for axis in range(3):
        theta[:, axis, axis] = 1.0 / factor
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (n, C, *S) with one ``sigma`` (n,) per sample (voxels)."""
    n, channels = x.shape[:2]
    offsets = torch.arange(-_BLUR_RADIUS, _BLUR_RADIUS + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-offsets[None] ** 2 / (2.0 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # (n C, k)
    y = x.reshape(1, n * channels, *x.shape[2:])
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = kernel.shape[1]
        padding = [0] * 6
        padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = _BLUR_RADIUS  # F.pad lists the last axis first
        y = F.conv3d(F.pad(y, padding, mode="replicate"), kernel.view(n * channels, 1, *shape), groups=n * channels)
    return y.reshape(x.shape)


def simsiam_view(patch: torch.Tensor, generator: torch.Generator, p_blur: float = 0.5, p_flip: float = 0.5,
                 p_noise: float = 0.5, p_scale: float = 0.5) -> torch.Tensor:
    """One random view of each sample of ``patch`` (B, C, X0, X1, X2); the input is not modified.

    Args:
        patch: the batch, on any device.
        generator: the source of every random choice (CPU or the patch's device); drawn values are moved to the
            patch's device.
        p_blur, p_flip, p_noise, p_scale: the probability of each transform per sample (``p_flip`` per axis).
    """
    if patch.ndim != 5:
        raise ValueError(f"patch must be (B, C, X0, X1, X2), got shape {tuple(patch.shape)}")
    batch, device = patch.shape[0], patch.device
    # columns: scale flag, factor; flip flags (X1, X2); blur flag, sigma; noise flag, amplitude
    draws = torch.rand((batch, 8), generator=generator, device=generator.device)
    scale, flip_1, flip_2, blur, noise = (draws[:, 0] < p_scale, draws[:, 2] < p_flip, draws[:, 3] < p_flip,
                                          draws[:, 4] < p_blur, draws[:, 6] < p_noise)
    parameters = draws.to(device=device, dtype=torch.float32)
    x = patch.to(dtype=torch.float32, copy=True)

    def chosen(flags: torch.Tensor) -> torch.Tensor:
        return flags.nonzero().flatten().to(device)

    if scale.any():
        index = chosen(scale)
        x[index] = _zoom(x[index], _uniform(parameters[index, 1], SCALE_RANGE))
    for flags, dim in ((flip_1, -2), (flip_2, -1)):
        if flags.any():
            index = chosen(flags)
            x[index] = x[index].flip(dim)
    if blur.any():
        index = chosen(blur)
        x[index] = _blur(x[index], _uniform(parameters[index, 5], BLUR_SIGMA_RANGE))
    if noise.any():
        index = chosen(noise)
        field = torch.randn((len(index), *x.shape[1:]), generator=generator, device=generator.device).to(device)
        amplitude = _uniform(parameters[index, 7], NOISE_RANGE) * x[index].flatten(1).std(1)
        x[index] = x[index] + field * amplitude.view(-1, 1, 1, 1, 1)
    return x.to(patch.dtype) if patch.is_floating_point() else x
