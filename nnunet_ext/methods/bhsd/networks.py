"""The transformer baselines of BHSD Table 1 (UNETR, Swin UNETR), from MONAI, shaped for nnU-Net's pipeline.

Both need input sizes the plans do not guarantee: UNETR embeds fixed 16^3 patches into a position table sized for
one input shape, Swin UNETR halves the resolution five times. :class:`PaddedToMultiple` zero-pads nnU-Net's patch
(training patches and sliding-window tiles have the same size) up to the next multiple and crops the logits back, so
nnU-Net's patch size, sliding window, export and ensembling are unchanged. MONAI's defaults are the "official
default settings" the paper keeps: UNETR feature size 16, hidden size 768, 12 heads; Swin UNETR feature size 48
(the size of the authors' BTCV/BraTS models; MONAI's constructor default is 24).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def padded_size(size: Sequence[int], multiple: int) -> tuple[int, ...]:
    return tuple(int(math.ceil(s / multiple) * multiple) for s in size)


class PaddedToMultiple(nn.Module):
    """Pad the input's spatial size (at the end of each axis) to ``target_size`` and crop the output back."""

    def __init__(self, network: nn.Module, target_size: Sequence[int]):
        super().__init__()
        self.network = network
        self.target_size = tuple(int(s) for s in target_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        if len(size) != len(self.target_size) or any(s > t for s, t in zip(size, self.target_size)):
            raise RuntimeError(f"input of spatial size {tuple(size)} does not fit the network's {self.target_size}")
        pad = []
        for s, t in zip(reversed(size), reversed(self.target_size)):  # F.pad lists the last axis first
            pad += [0, t - s]
        out = self.network(F.pad(x, pad))
        return out[(slice(None), slice(None), *(slice(0, s) for s in size))]


def build_unetr(in_channels: int, out_channels: int, patch_size: Sequence[int], feature_size: int = 16,
                hidden_size: int = 768, mlp_dim: int = 3072, num_heads: int = 12) -> nn.Module:
    """MONAI UNETR (Hatamizadeh et al., WACV 2022) behind a pad to multiples of its 16-voxel tokens."""
    from monai.networks.nets import UNETR

    size = padded_size(patch_size, 16)
    network = UNETR(in_channels, out_channels, img_size=size, feature_size=feature_size, hidden_size=hidden_size,
                    mlp_dim=mlp_dim, num_heads=num_heads, spatial_dims=len(size))
    return PaddedToMultiple(network, size)


def build_swin_unetr(in_channels: int, out_channels: int, patch_size: Sequence[int], feature_size: int = 48,
                     depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24)) -> nn.Module:
    """MONAI Swin UNETR (Hatamizadeh et al., BrainLes 2021) behind a pad to multiples of 32 (five halvings)."""
    from monai.networks.nets import SwinUNETR

    size = padded_size(patch_size, 32)
    if all(s == 32 for s in size):  # a 1 x 1 x 1 bottleneck: instance norm needs more than one voxel to train
        size = (*size[:-1], 64)
    network = SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size,
                        depths=tuple(depths), num_heads=tuple(num_heads), spatial_dims=len(size))
    return PaddedToMultiple(network, size)
