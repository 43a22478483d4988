"""KIS-Net (Sect. 2.3, Fig. 1c-d): a ResUNet backbone fused with the frozen HIPM's heterogeneity prior by the Kinetic
Information Fusion Block (KIFB).

Readings (no public code):

- Backbone: ``dynamic_network_architectures``' ``ResidualUNet`` with the stages, strides and widths of the nnU-Net
  plans (so ``nnUNetv2_predict`` rebuilds the same network), no deep supervision; its last 1x1x1 segmentation conv is
  dropped, so it returns the full-resolution decoder features ("structural features").
- KIFB: prior (the HIPM's K + 1 softmax channels, or their one-hot argmax for ``hard_prior``) -> 1x1x1 conv
  embedding -> 3x3x3 conv -> sigmoid; concatenated with the backbone features; then two 3x3x3 conv + BatchNorm +
  ReLU layers and a 1x1x1 conv to two class logits (the softmax of nnU-Net's inference plays the paper's final
  sigmoid; Eq. 5 reads its foreground channel).
- The HIPM sees the same (preprocessed) pre-contrast channel, is frozen (no gradients, always in eval mode, so its
  normalisation statistics never change) and its weights are part of this network's state, so a KIS-Net checkpoint
  predicts on its own.
"""
from __future__ import annotations

import torch
from torch import nn


class KineticFusionBlock(nn.Module):
    """KIFB (Fig. 1d): sigmoid-gated embedding of the heterogeneity prior, concatenated with structural features."""

    def __init__(self, feature_channels: int, prior_channels: int, n_classes: int = 2, embed_channels: int = 16,
                 fused_channels: int | None = None, n_fusion_convs: int = 2):
        super().__init__()
        fused_channels = fused_channels or feature_channels
        self.embed = nn.Conv3d(prior_channels, embed_channels, 1)
        self.prior_conv = nn.Conv3d(embed_channels, embed_channels, 3, padding=1)
        layers, channels = [], feature_channels + embed_channels
        for _ in range(n_fusion_convs):
            layers += [nn.Conv3d(channels, fused_channels, 3, padding=1, bias=False), nn.BatchNorm3d(fused_channels),
                       nn.ReLU(inplace=True)]
            channels = fused_channels
        self.fusion = nn.Sequential(*layers)
        self.head = nn.Conv3d(fused_channels, n_classes, 1)

    def forward(self, features: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        kinetic = torch.sigmoid(self.prior_conv(self.embed(prior)))
        return self.head(self.fusion(torch.cat([features, kinetic], 1)))


class HCNetSegmentationNet(nn.Module):
    """KIS-Net: structural features of the backbone + KIFB-fused prior of the frozen HIPM (Fig. 1c)."""

    def __init__(self, backbone: nn.Module, feature_channels: int, hipm: nn.Module, prior_channels: int,
                 n_classes: int = 2, embed_channels: int = 16, hard_prior: bool = False, hipm_input_channel: int = 0):
        super().__init__()
        self.backbone, self.hipm = backbone, hipm
        self.hard_prior, self.hipm_input_channel = hard_prior, hipm_input_channel
        self.kifb = KineticFusionBlock(feature_channels, prior_channels, n_classes, embed_channels)
        self.hipm.requires_grad_(False)
        self.hipm.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.hipm.eval()  # frozen: its normalisation layers keep the statistics of HIPM training
        return self

    def prior(self, x: torch.Tensor) -> torch.Tensor:
        """Heterogeneity prior of the HIPM for input ``x`` (softmax, or one-hot argmax with ``hard_prior``)."""
        with torch.no_grad():
            logits = self.hipm(x[:, self.hipm_input_channel:self.hipm_input_channel + 1]).float()
            if self.hard_prior:
                return nn.functional.one_hot(logits.argmax(1), logits.shape[1]).movedim(-1, 1).float()
            return torch.softmax(logits, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prior = self.prior(x).to(x.dtype)
        return self.kifb(self.backbone(x), prior)

    def trainable_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith("hipm.")]

    def load_hipm_state(self, state_dict: dict) -> None:
        self.hipm.load_state_dict(state_dict)


def residual_unet_from_plans(configuration_manager, num_input_channels: int, num_output_channels: int,
                             features: tuple[int, ...] | None = None, n_blocks_per_stage: int = 1,
                             features_only: bool = False) -> tuple[nn.Module, int]:
    """``ResidualUNet`` with the plans' stages, kernels, strides, conv/norm/nonlinearity and widths (``features``
    replaces the widths, truncated to the number of stages); ``features_only`` drops the final 1x1x1 segmentation
    conv so the network returns its full-resolution decoder features. Returns (network, output channels)."""
    from dynamic_network_architectures.architectures.unet import ResidualUNet

    from nnunet_ext.training.plans_networks import plans_architecture_kwargs, stage_widths

    kwargs = plans_architecture_kwargs(configuration_manager)
    n_stages = kwargs["n_stages"]
    widths = stage_widths(kwargs, features, None)
    network = ResidualUNet(
        input_channels=num_input_channels, n_stages=n_stages, features_per_stage=widths,
        conv_op=kwargs["conv_op"], kernel_sizes=kwargs["kernel_sizes"], strides=kwargs["strides"],
        n_blocks_per_stage=n_blocks_per_stage, num_classes=num_output_channels, n_conv_per_stage_decoder=1,
        conv_bias=True, norm_op=kwargs["norm_op"], norm_op_kwargs=kwargs["norm_op_kwargs"],
        dropout_op=None, nonlin=kwargs["nonlin"], nonlin_kwargs=kwargs["nonlin_kwargs"], deep_supervision=False)
    if features_only:
        network.decoder.seg_layers[-1] = nn.Identity()
        return network, widths[0]
    return network, num_output_channels
