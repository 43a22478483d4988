"""Residual pre/post fusion encoder (Yan et al., "Clinical inspired MRI lesion segmentation", Sect. 2, Fig. 2).

The post-contrast image is the main branch, the pre-contrast image the auxiliary branch. Both pass through residual
encoder levels E_k; at every level the auxiliary features are added to the main ones through a fusion weight W_k::

    aux_k  = E_k(aux_{k-1})
    main_k = E_k(main_{k-1}) + W_k(aux_k)              (Fig. 2b with W = identity, Fig. 2c with W a 1x1x1 conv)

and nnU-Net's U-Net decoder reads the main branch's levels as its skips. Readings where the paper is silent:

- ``shared=True`` (default): one set of encoder weights serves both branches ("shared neural networks in encoding
  blocks", Sect. 2); ``shared=False`` gives the auxiliary branch its own copy (the ``Unshared`` ablation).
- The stem convolution (nnU-Net's ``ResidualEncoder`` stem, before level 0) belongs to the encoder and is shared too.
- ``fusion``: ``"proj"`` W_k = 1x1x1 conv (Sect. 2.2, the paper's final module), ``"gate"`` W_k(aux) =
  tanh(1x1x1 conv of [E_k(main), aux_k]) * aux_k (a feature-wise dynamic weight, our alternative reading of "dynamic
  weights"), ``"none"`` W_k = identity (Fig. 2b), ``"single"`` no auxiliary branch at all (the paper's ResUNet
  single-input row): the same encoder and decoder, so with W_k = 0 the fused network equals it.
- Sizes follow the nnU-Net plans (:mod:`nnunet_ext.training.plans_networks`), capped by the trainer's preset.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

FUSIONS = ("proj", "gate", "none", "single")


class FusionWeight(nn.Module):
    """W_k of one level: what of the auxiliary features ``aux`` is added to the main features ``main``."""

    def __init__(self, fusion: str, channels: int, conv_op: type[nn.Module]):
        super().__init__()
        if fusion not in FUSIONS[:3]:
            raise ValueError(f"fusion must be one of {FUSIONS[:3]}, got {fusion!r}")
        self.fusion = fusion
        if fusion == "proj":
            self.conv = conv_op(channels, channels, 1)
        elif fusion == "gate":
            self.conv = conv_op(2 * channels, channels, 1)

    def forward(self, main: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        if self.fusion == "proj":
            return self.conv(aux)
        if self.fusion == "gate":
            return torch.tanh(self.conv(torch.cat([main, aux], 1))) * aux
        return aux


class ResidualFusionUNet(nn.Module):
    """Main (post) and auxiliary (pre) residual encoders fused level by level; U-Net decoder on the main levels.

    Args:
        encoder: a ``ResidualEncoder`` with ``return_skips=True`` and one input channel per branch.
        decoder: a ``UNetDecoder`` built on ``encoder``.
        fusion: one of :data:`FUSIONS`.
        shared: the auxiliary branch uses ``encoder`` itself (True) or a copy with its own weights (False).
        main_channel, aux_channel: input channels of the two branches (0 = pre, 1 = first post-contrast phase).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, fusion: str = "proj", shared: bool = True,
                 main_channel: int = 1, aux_channel: int = 0):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.encoder, self.decoder = encoder, decoder
        self.fusion, self.shared = fusion, shared
        self.main_channel, self.aux_channel = main_channel, aux_channel
        self.aux_encoder = None if shared or fusion == "single" else copy.deepcopy(encoder)
        self.fusion_weights = None if fusion == "single" else nn.ModuleList(
            FusionWeight(fusion, c, encoder.conv_op) for c in encoder.output_channels)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The main branch's levels, fused with the auxiliary branch's (the decoder's skips)."""
        main = x[:, self.main_channel:self.main_channel + 1]
        if self.fusion == "single":
            return self.encoder(main)
        aux_encoder = self.encoder if self.aux_encoder is None else self.aux_encoder
        main = self.encoder.stem(main)
        aux = aux_encoder.stem(x[:, self.aux_channel:self.aux_channel + 1])
        skips = []
        for level, weight, aux_level in zip(self.encoder.stages, self.fusion_weights, aux_encoder.stages):
            aux = aux_level(aux)
            main = level(main)
            main = main + weight(main, aux)
            skips.append(main)
        return skips

    def forward(self, x: torch.Tensor):
        return self.decoder(self.encode(x))


def build_residual_fusion_unet(configuration_manager, num_classes: int, deep_supervision: bool, fusion: str = "proj",
                               shared: bool = True, widths=None, max_levels: int | None = None,
                               main_channel: int = 1, aux_channel: int = 0) -> ResidualFusionUNet:
    """:class:`ResidualFusionUNet` with the plans' geometry (widths and levels optionally replaced by a preset)."""
    from nnunet_ext.training.plans_networks import (initialize_residual_network, residual_encoder_from_plans,
                                                    unet_decoder_for)

    encoder = residual_encoder_from_plans(configuration_manager, 1, widths, max_levels)
    decoder = unet_decoder_for(encoder, configuration_manager, num_classes, deep_supervision)
    network = ResidualFusionUNet(encoder, decoder, fusion, shared, main_channel, aux_channel)
    initialize_residual_network(network)
    return network
