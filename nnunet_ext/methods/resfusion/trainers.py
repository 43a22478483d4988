"""Residual pre/post fusion (Yan et al., "Clinical inspired MRI lesion segmentation") as nnU-Net trainers.

Channels: 0 = pre-contrast (auxiliary branch), 1 = first post-contrast phase (main branch); further channels (later
phases, a ``SUB`` channel) are not read by these networks (the residual fusion learns the pre/post difference
itself), so every row of a comparison can train on the same dataset. nnU-Net's loss, sampling, augmentation and
inference are unchanged; region-based datasets (BraTS WT/TC/ET, ``breast_dce --subregions``) work as with plain
nnU-Net.

| trainer | network |
| --- | --- |
| ``ResFusionTrainer`` | Fig. 2c: W_k = 1x1x1 conv, shared encoder |
| ``ResFusionTrainer_gate`` | W_k = tanh(1x1x1 conv of [main, aux]) * aux |
| ``ResFusionNoWeightTrainer`` | Fig. 2b: W_k = identity |
| ``ResFusionUnsharedTrainer`` | Fig. 2c with separate encoder weights for the auxiliary branch |
| ``PostOnlyTrainer`` | the same ResUNet on the post-contrast channel only (the paper's ResUNet row) |

Sizes: the plans' kernels and strides; the ``paper`` preset (default) takes widths 64-128-256-512 over the first
four levels (Sect. 3.2: the ResUNet encoder of [17]), ``_small`` trainers 16-32-64-128 (CPU).
"""
from __future__ import annotations

from torch import nn

from nnunet_ext.methods.resfusion.network import build_residual_fusion_unet
from nnunet_ext.training.base import ExtTrainerBase
from nnunet_ext.training.plans_networks import deep_supervision_scales

PRESETS = {"paper": ((64, 128, 256, 512), 4), "small": ((16, 32, 64, 128), 4)}


class ResFusionTrainer(ExtTrainerBase):
    """Residual fusion of pre-contrast features into the post-contrast encoder at every level (Fig. 2c)."""

    fusion = "proj"
    shared_encoder = True
    preset = "paper"
    main_channel, aux_channel = 1, 0
    supported_configurations = ("3d_fullres",)
    spatial_dims = 3
    conformance_overrides = {"preset": "small"}

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        widths, levels = PRESETS[cls.preset]
        return build_residual_fusion_unet(configuration_manager, num_output_channels, enable_deep_supervision,
                                          cls.fusion, cls.shared_encoder, widths, levels, cls.main_channel,
                                          cls.aux_channel)

    def initialize(self):
        if not self.was_initialized:
            channels = len(self.dataset_json["channel_names"])
            needed = max(self.main_channel, self.aux_channel if self.fusion != "single" else 0) + 1
            if channels < needed:
                raise RuntimeError(f"{type(self).__name__} reads channel {self.aux_channel} (pre-contrast) and "
                                   f"{self.main_channel} (post-contrast); {self.plans_manager.dataset_name} has "
                                   f"{channels} channel(s): convert it with its pre- and post-contrast images")
        super().initialize()

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        return deep_supervision_scales(self.configuration_manager.pool_op_kernel_sizes, self._levels())

    def _levels(self) -> int:
        return min(len(self.configuration_manager.pool_op_kernel_sizes), PRESETS[self.preset][1])


class ResFusionTrainer_gate(ResFusionTrainer):
    fusion = "gate"
    conformance_variant_of = "ResFusionTrainer"


class ResFusionNoWeightTrainer(ResFusionTrainer):
    """Fig. 2b: the auxiliary features are added as they are."""

    fusion = "none"
    conformance_variant_of = "ResFusionTrainer"


class ResFusionUnsharedTrainer(ResFusionTrainer):
    """Ablation: the auxiliary branch has its own encoder weights."""

    shared_encoder = False
    conformance_variant_of = "ResFusionTrainer"


class PostOnlyTrainer(ResFusionTrainer):
    """The paper's ResUNet row: the same encoder and decoder on the post-contrast channel alone."""

    fusion = "single"
    conformance_variant_of = "ResFusionTrainer"


class ResFusionTrainer_small(ResFusionTrainer):
    preset = "small"
    conformance_variant_of = "ResFusionTrainer"


class ResFusionTrainer_gate_small(ResFusionTrainer_gate):
    preset = "small"


class ResFusionNoWeightTrainer_small(ResFusionNoWeightTrainer):
    preset = "small"


class ResFusionUnsharedTrainer_small(ResFusionUnsharedTrainer):
    preset = "small"


class PostOnlyTrainer_small(PostOnlyTrainer):
    preset = "small"

