"""Networks built from an nnU-Net configuration's ``architecture`` entry, so ``nnUNetv2_predict`` rebuilds them.

nnU-Net stores the stages, kernel sizes, strides, widths and conv/norm/nonlinearity of a configuration in the plans
(``network_arch_init_kwargs``). Methods that replace nnU-Net's network but keep its geometry (residual encoders with
an extra branch, two encoders fused by attention) read them here: the encoder is ``dynamic_network_architectures``'
``ResidualEncoder`` (the ResUNet / "RU-Net" encoder of the papers), the decoder its ``UNetDecoder``. A method's
preset may replace the widths and cap the number of resolution levels (e.g. a paper's 64-128-256-512, four levels):
the first levels' kernels and strides are kept, and :func:`deep_supervision_scales` gives the scales of the decoder
outputs of such a capped network.
"""
from __future__ import annotations

import pydoc
from typing import Sequence

import numpy as np
from torch import nn


def plans_architecture_kwargs(configuration_manager) -> dict:
    """The configuration's network keyword arguments with the class names (conv_op, norm_op, ...) resolved."""
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    for key in configuration_manager.network_arch_init_kwargs_req_import:
        if kwargs.get(key) is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    return kwargs


def stage_widths(kwargs: dict, widths: Sequence[int] | None, max_levels: int | None) -> list[int]:
    """Widths of the levels used: the plans' (or ``widths``, repeated past its end), capped at ``max_levels``."""
    n_stages = int(kwargs["n_stages"]) if max_levels is None else min(int(kwargs["n_stages"]), int(max_levels))
    chosen = list(widths) if widths else list(kwargs["features_per_stage"])
    return (chosen + [chosen[-1]] * n_stages)[:n_stages]


def residual_encoder_from_plans(configuration_manager, input_channels: int, widths: Sequence[int] | None = None,
                                max_levels: int | None = None, n_blocks_per_stage: int = 1) -> nn.Module:
    """``ResidualEncoder`` (stem + one stack of residual blocks per level, returning every level's output) with the
    plans' kernels and strides for the first levels, widths from ``widths`` or the plans."""
    from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder

    kwargs = plans_architecture_kwargs(configuration_manager)
    level_widths = stage_widths(kwargs, widths, max_levels)
    n = len(level_widths)
    return ResidualEncoder(
        input_channels, n, level_widths, kwargs["conv_op"], list(kwargs["kernel_sizes"])[:n],
        list(kwargs["strides"])[:n], n_blocks_per_stage, conv_bias=True, norm_op=kwargs["norm_op"],
        norm_op_kwargs=kwargs["norm_op_kwargs"], nonlin=kwargs["nonlin"], nonlin_kwargs=kwargs["nonlin_kwargs"],
        return_skips=True)


def unet_decoder_for(encoder: nn.Module, configuration_manager, num_classes: int, deep_supervision: bool
                     ) -> nn.Module:
    """nnU-Net's ``UNetDecoder`` on ``encoder``'s levels, with the plans' convolutions per decoder stage."""
    from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder

    kwargs = plans_architecture_kwargs(configuration_manager)
    n_convs = kwargs.get("n_conv_per_stage_decoder", 2)
    n_convs = list(n_convs)[:len(encoder.output_channels) - 1] if isinstance(n_convs, (list, tuple)) else n_convs
    return UNetDecoder(encoder, num_classes, n_convs, deep_supervision)


def initialize_residual_network(module: nn.Module) -> None:
    """nnU-Net's initialisation of residual U-Nets: He-normal convolutions, and the last normalisation of every
    residual block at zero (each block starts as its identity path)."""
    from dynamic_network_architectures.initialization.weight_init import (InitWeights_He,
                                                                           init_last_bn_before_add_to_0)

    module.apply(InitWeights_He(1e-2))
    module.apply(init_last_bn_before_add_to_0)


def deep_supervision_scales(pool_op_kernel_sizes, levels: int) -> list[list[float]]:
    """Scales of the decoder outputs of a network with the first ``levels`` levels (nnU-Net's formula, capped)."""
    scales = 1 / np.cumprod(np.vstack(pool_op_kernel_sizes), axis=0)
    return [list(s) for s in scales][:max(levels - 1, 0)]
