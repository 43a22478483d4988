"""A plain ConvNet registration network with TM-DCA's decoder: the "ConvNet" of a TM-DCA vs ConvNet comparison.

``ConvNetRegistration(image_size, "paper" | "small")`` has TM-DCA's forward contract
(:class:`~.network.PairRegistrationNetwork`): ``forward(moving, fixed)`` returns the voxel displacement
``(B, ndim, *spatial)``, components in array-axis order, pull-back (``moving(x + u(x)) ~ fixed(x)``);
``diffeomorphic=True`` integrates a stationary velocity field by scaling and squaring; ``register`` also warps the
image and the labels. Only the encoder differs from :class:`~.network.TMDCA`:

* VoxelMorph-style (Balakrishnan et al., TMI 2019): ONE stream on the concatenated pair ``[moving, fixed]``, built
  from ``conv 3 - LeakyReLU(0.2)`` layers, downsampling by stride-2 convolutions, no normalisation.
* Its stage outputs have exactly the channels and strides TM-DCA's encoder hands :class:`~.network.FieldDecoder`:
  stage ``i`` has ``config.stage_dims[i]`` channels at stride ``4 * 2^i``. Two levels lead to stride 4: (stride 2,
  ``embed_dim / 2`` channels), (stride 4, ``embed_dim``); every later stage halves the resolution. Each level is a
  stride-2 ``conv 3`` followed by a ``conv 3`` at the new resolution (VoxelMorph's encoder has one convolution per
  level; the second one gives every stage some processing at its own resolution, as TM-DCA's blocks do).
* The decoder is :class:`~.network.FieldDecoder`, unchanged: stage skips, then TransMorph's half- and
  full-resolution conv features of the pair, and the field head initialised to ~0.

The size comes from the same presets as TM-DCA (:data:`~.network.PRESETS`, so ``--preset`` means one size for both
networks): the ConvNet reads ``embed_dim`` (hence ``stage_dims``), the number of stages (``len(depths)``) and
``head_channels``; the transformer fields (depths per stage, heads, offset kernels, MLP ratio, drop path) do not
apply to it. Inputs of any size are zero-padded at the end to a multiple of ``4 * 2^(stages - 1)`` per axis
(:func:`~.network.padded_input_size` without a window) and the field is cropped back, as TM-DCA does.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnunet_ext.methods.dca.network import (
    FieldDecoder,
    PairRegistrationNetwork,
    TMDCAConfig,
    _conv,
    _crop,
    _pad_end,
    get_config,
    padded_input_size,
)

NEGATIVE_SLOPE = 0.2  # VoxelMorph's LeakyReLU


class ConvAct(nn.Sequential):
    """``conv 3 (stride 1 or 2, with bias) - LeakyReLU(0.2)``: VoxelMorph's ``ConvBlock``."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(_conv(ndim)(in_channels, out_channels, 3, stride=stride, padding=1),
                         nn.LeakyReLU(NEGATIVE_SLOPE))


class ConvLevel(nn.Sequential):
    """Half the resolution with a stride-2 :class:`ConvAct`, then one :class:`ConvAct` at the new resolution."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int):
        super().__init__(ConvAct(ndim, in_channels, out_channels, stride=2),
                         ConvAct(ndim, out_channels, out_channels))


class PairConvEncoder(nn.Module):
    """One conv stream on the concatenated pair; per stage ``i`` a map of ``stage_dims[i]`` channels at stride
    ``4 * 2^i`` (module docstring).

    Args:
        ndim: 2 or 3.
        pair_channels: channels of ``[moving, fixed]``.
        stage_dims: channels per stage, shallowest first (the first must be even).
    """

    def __init__(self, ndim: int, pair_channels: int, stage_dims: Sequence[int]):
        super().__init__()
        self.stem = ConvLevel(ndim, pair_channels, stage_dims[0] // 2)  # stride 2, no skip of its own
        channels = [stage_dims[0] // 2, *stage_dims]
        self.stages = nn.ModuleList(ConvLevel(ndim, channels[i], channels[i + 1]) for i in range(len(stage_dims)))

    def forward(self, pair: torch.Tensor) -> list[torch.Tensor]:
        """``(B, pair_channels, *spatial)`` (a multiple of ``4 * 2^(stages - 1)``) -> per stage ``(B, C_i, ...)``."""
        x = self.stem(pair)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


class ConvNetRegistration(PairRegistrationNetwork):
    """ConvNet encoder on the pair + TM-DCA's :class:`~.network.FieldDecoder` (module docstring).

    Args:
        image_size: spatial size the network is built for, 2 or 3 entries (any input size is accepted; kept for the
            same constructor as :class:`~.network.TMDCA`).
        config: a preset name (``"paper"``, ``"small"``) or a :class:`~.network.TMDCAConfig`.
        diffeomorphic: predict a stationary velocity field and return the displacement of its exponential.
        integration_steps: scaling-and-squaring steps for ``diffeomorphic``.
        in_channels: channels of each image.
        **overrides: fields of :class:`~.network.TMDCAConfig` replacing the preset's (those the ConvNet does not
            read are accepted and ignored, so one call builds either network).
    """

    def __init__(self, image_size: Sequence[int], config: str | TMDCAConfig = "small", diffeomorphic: bool = False,
                 integration_steps: int = 7, in_channels: int = 1, **overrides):
        super().__init__(image_size, diffeomorphic, integration_steps, in_channels)
        self.config = get_config(config, **overrides)
        self.encoder = PairConvEncoder(self.ndim, 2 * self.in_channels, self.config.stage_dims)
        self.decoder = FieldDecoder(self.ndim, 2 * self.in_channels, self.config.stage_dims,
                                    self.config.head_channels)

    def predict_field(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The decoder's field, cropped to the input: the velocity if ``diffeomorphic``, else the displacement."""
        self._check_pair(moving, fixed)
        spatial = tuple(moving.shape[2:])
        size = padded_input_size(spatial, (1,) * self.ndim, self.config.num_stages)
        pair = _pad_end(torch.cat([moving, fixed], dim=1), [p - n for p, n in zip(size, spatial)], False)
        field = self.decoder(self.encoder(pair), pair)
        return _crop(field, spatial, 2)


NETWORKS = {"tmdca": "TM-DCA", "convnet": "ConvNet"}  # --network values and display names


def build_network(name: str, image_size: Sequence[int], config: str | TMDCAConfig = "small",
                  **kwargs) -> PairRegistrationNetwork:
    """``"tmdca"`` -> :class:`~.network.TMDCA`, ``"convnet"`` -> :class:`ConvNetRegistration`, same arguments."""
    from nnunet_ext.methods.dca.network import TMDCA

    if name == "tmdca":
        return TMDCA(image_size, config, **kwargs)
    if name == "convnet":
        return ConvNetRegistration(image_size, config, **kwargs)
    raise ValueError(f"unknown registration network {name!r}; choose one of {sorted(NETWORKS)}")
