"""Backbones of HCNet's heterogeneity information prediction model (HIPM, Sect. 2.2) and its Fig. 3 comparison.

HCNet predicts a ``K + 1``-class heterogeneity map from the pre-contrast image with 3D UX-Net (Lee et al., ICLR 2023,
arXiv 2209.15076) and compares it with ResUNet and VNet. Every backbone here maps ``(B, in_channels, *spatial)`` to
logits ``(B, out_channels, *spatial)`` for ANY spatial size: the input is padded at the end of each axis to a size
the network can halve often enough (:func:`padded_forward`) and the logits are cropped back.

:class:`UXNet3D` follows the official implementation (MASILab/3DUX-Net, ``networks/UXNet_3D``):

* stem: ``conv 7^3, stride 2, padding 3`` + channels-first LayerNorm, so the first stage runs at 1/2 resolution;
* blocks (:class:`UXBlock`): depthwise ``conv 7^3`` (padding 3) - LayerNorm - "depthwise convolution scaling"
  (DCS): the paper replaces the Swin MLP by pointwise convolutions applied per channel, i.e. two ``1^3`` convs with
  ``groups = channels`` (expand x4, GELU, back), the official code's ``pwconv1`` / ``pwconv2``; layer scale 1e-6 and
  one residual around the block;
* downsampling between stages: LayerNorm + ``conv 2^3, stride 2``; each stage output passes a LayerNorm;
* decoder (SwinUNETR-style, MONAI blocks): a residual ``UnetrBasicBlock`` on the input and on every stage output
  but the last (skips, widths ``widths[i]``), a bottleneck ``UnetrBasicBlock`` to ``hidden_size`` on the LAST stage
  output (1/16 resolution with four stages: the last stage itself runs after the third downsampling), then
  ``UnetrUpBlock`` s back to full resolution, a ``UnetrBasicBlock`` and a ``1^3`` ``UnetOutBlock``.

The paper preset (widths 48-96-192-384, depths 2-2-2-2, hidden 768) is the published model: 53.0M parameters as
reported in the official README (FeTA/FLARE/AMOS tables); at ``in=1, out=11`` this implementation has 53.0M too
(dense ``1^3`` convs in the blocks would give 56.1M, so the count also pins down the per-channel DCS).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from dynamic_network_architectures.architectures.unet import ResidualUNet
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from monai.networks.nets import VNet
from torch import nn

UXNET_PRESETS = {
    "paper": dict(widths=(48, 96, 192, 384), depths=(2, 2, 2, 2), hidden_size=768),
    "small": dict(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1), hidden_size=128),
}
RESUNET_PRESETS = {
    # one block at full resolution (the costliest stage in memory), two below it
    "paper": dict(features_per_stage=(32, 64, 128, 256), n_blocks_per_stage=(1, 2, 2, 2)),
    "small": dict(features_per_stage=(8, 16, 32, 64), n_blocks_per_stage=(1, 1, 1, 1)),
}
BACKBONES = ("uxnet", "resunet", "vnet")
PRESETS = ("paper", "small")
LAYER_SCALE_INIT = 1e-6  # ConvNeXt / UX-Net layer scale: every block starts close to the identity
MLP_RATIO = 4  # UX-Net's inverted bottleneck expands every channel 4x
VNET_CHANNELS = 16  # MONAI VNet's first feature width; its input channels must divide it


def _pad_end_replicate(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Pad the trailing spatial axes of ``x`` at their end to ``sizes`` by repeating the last slice.

    Built from ``cat`` of an expanded edge slice instead of ``F.pad(mode="replicate")``: the backward of the latter
    is non-deterministic on CUDA (it raises under ``torch.use_deterministic_algorithms(True)``), this one is a plain
    sum, and it works for every dtype and on the ``meta`` device.
    """
    first = x.ndim - len(sizes)
    for axis, target in enumerate(sizes, start=first):
        missing = target - x.shape[axis]
        if missing > 0:
            edge = x.narrow(axis, x.shape[axis] - 1, 1)
            shape = list(x.shape)
            shape[axis] = missing
            x = torch.cat([x, edge.expand(shape)], dim=axis)
    return x


def padded_size(size: Sequence[int], divisor: int, min_size: int = 0) -> tuple[int, ...]:
    """Per axis, the smallest multiple of ``divisor`` that is ``>= size`` and ``>= min_size``."""
    return tuple(max(-(-s // divisor), -(-min_size // divisor), 1) * divisor for s in size)


def padded_forward(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, divisor: int,
                   min_size: int = 0) -> torch.Tensor:
    """Run ``module`` on ``x`` padded at the end of each spatial axis to a multiple of ``divisor``, crop back.

    Args:
        module: any callable mapping ``(B, C, *S)`` to ``(B, K, *S)`` when every ``S`` is a multiple of
            ``divisor`` (a U-Net whose skips need exact halving).
        x: input ``(B, C, *spatial)``; the spatial axes are all axes after the channel axis.
        divisor: the network's total downsampling factor.
        min_size: lower bound on every padded axis. ``2 * divisor`` keeps >= 2 voxels per axis at the coarsest
            level, where instance norm refuses a single voxel and batch norm with batch size 1 does too.

    Returns:
        ``module``'s output cropped to ``x``'s spatial size (contiguous).

    The padding replicates the last slice instead of adding zeros: inputs are z-scored, so zero is "mean tissue"
    rather than background, and a constant slab would put an artificial edge next to the real voxels that the large
    (7^3 at 1/2 to 1/16 resolution) receptive fields carry into the cropped output.
    """
    spatial = tuple(x.shape[2:])
    target = padded_size(spatial, divisor, min_size)
    if target == spatial:
        return module(x)
    out = module(_pad_end_replicate(x, target))
    if tuple(out.shape[2:]) != target:
        raise RuntimeError(f"expected an output of spatial size {target}, got {tuple(out.shape[2:])}")
    return out[(...,) + tuple(slice(0, s) for s in spatial)].contiguous()


class PaddedNet(nn.Module):
    """Wrap a network that needs sizes divisible by ``divisor`` so that it accepts any input size."""

    def __init__(self, net: nn.Module, divisor: int, min_size: int = 0):
        super().__init__()
        self.net = net
        self.divisor = divisor
        self.min_size = min_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, *spatial)`` for an input ``(B, C, *spatial)`` of any spatial size."""
        return padded_forward(self.net, x, self.divisor, self.min_size)


class LayerNorm3d(nn.Module):
    """LayerNorm over the channel axis of a channels-first ``(B, C, *spatial)`` tensor (ConvNeXt's channels_first).

    Statistics are computed in float32 so the layer is safe under fp16 autocast; the output keeps the input dtype.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise every voxel's feature vector, then scale and shift per channel."""
        xf = x.float()
        mean = xf.mean(1, keepdim=True)
        var = (xf - mean).pow(2).mean(1, keepdim=True)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        return (y * self.weight.float().view(shape) + self.bias.float().view(shape)).to(x.dtype)


class UXBlock(nn.Module):
    """3D UX-Net block: depthwise ``k^3`` conv - LayerNorm - DCS (per-channel ``1^3`` expand x4, GELU, back).

    Args:
        channels: feature width (kept).
        kernel_size: odd size of the large depthwise kernel (7 in the paper).
        layer_scale: initial value of the per-channel scale on the block's branch.
    """

    def __init__(self, channels: int, kernel_size: int = 7, layer_scale: float = LAYER_SCALE_INIT):
        super().__init__()
        self.dwconv = nn.Conv3d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = LayerNorm3d(channels)
        # DCS: groups=channels makes both pointwise convs act per channel, the paper's replacement for the dense MLP
        self.pwconv1 = nn.Conv3d(channels, MLP_RATIO * channels, 1, groups=channels)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv3d(MLP_RATIO * channels, channels, 1, groups=channels)
        self.gamma = nn.Parameter(torch.full((channels,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + gamma * DCS(LN(DWConv(x)))``."""
        y = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))
        return x + self.gamma.view(1, -1, 1, 1, 1).to(y.dtype) * y


class UXEncoder(nn.Module):
    """UX-Net encoder: stem (``conv k^3`` stride 2 + LN), stages of :class:`UXBlock`, LN + ``conv 2^3`` stride 2.

    ``forward`` returns one LayerNorm-ed feature map per stage; stage ``i`` has ``widths[i]`` channels at
    1 / ``2^(i + 1)`` of the input resolution.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], depths: Sequence[int], kernel_size: int = 7):
        super().__init__()
        stem = nn.Sequential(nn.Conv3d(in_channels, widths[0], kernel_size, stride=2, padding=kernel_size // 2),
                             LayerNorm3d(widths[0]))
        downs = [nn.Sequential(LayerNorm3d(c_in), nn.Conv3d(c_in, c_out, 2, stride=2))
                 for c_in, c_out in zip(widths[:-1], widths[1:])]
        self.downsample = nn.ModuleList([stem] + downs)
        self.stages = nn.ModuleList(nn.Sequential(*[UXBlock(c, kernel_size) for _ in range(d)])
                                    for c, d in zip(widths, depths))
        self.out_norms = nn.ModuleList(LayerNorm3d(c) for c in widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs, finest first."""
        outs = []
        for down, stage, norm in zip(self.downsample, self.stages, self.out_norms):
            x = stage(down(x))
            outs.append(norm(x))
        return outs


class UXNet3D(nn.Module):
    """3D UX-Net (Lee et al., ICLR 2023): :class:`UXEncoder` + the SwinUNETR-style MONAI decoder; any input size.

    Args:
        in_channels: input channels.
        out_channels: output channels (logits).
        widths: stage widths; the network downsamples by ``2 ** len(widths)``.
        depths: blocks per stage.
        hidden_size: width of the bottleneck block on the last stage output.
        kernel_size: odd depthwise kernel size (and the stem's kernel).
        norm_name: MONAI norm of the decoder blocks.
        divisor: inputs are padded to a multiple of this (at least ``2 * divisor``); a multiple of
            ``2 ** len(widths)``.
    """

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int] = (48, 96, 192, 384),
                 depths: Sequence[int] = (2, 2, 2, 2), hidden_size: int = 768, kernel_size: int = 7,
                 norm_name: str | tuple = "instance", divisor: int = 16):
        super().__init__()
        widths, depths = tuple(widths), tuple(depths)
        if not widths or len(widths) != len(depths):
            raise ValueError(f"widths {widths} and depths {depths} must be non-empty and of equal length")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same-size depthwise conv), got {kernel_size}")
        if divisor % 2 ** len(widths):
            raise ValueError(f"divisor {divisor} must be a multiple of 2 ** {len(widths)} (the total downsampling)")
        self.divisor = divisor
        self.encoder = UXEncoder(in_channels, widths, depths, kernel_size)

        def basic(c_in: int, c_out: int) -> UnetrBasicBlock:
            return UnetrBasicBlock(3, c_in, c_out, kernel_size=3, stride=1, norm_name=norm_name, res_block=True)

        def up(c_in: int, c_out: int) -> UnetrUpBlock:
            return UnetrUpBlock(3, c_in, c_out, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name,
                                res_block=True)

        # skip i sits at 1/2^i: the input for i = 0, else stage i - 1's output (stage j runs at 1/2^(j + 1))
        self.skips = nn.ModuleList([basic(in_channels, widths[0])]
                                   + [basic(c_in, c_out) for c_in, c_out in zip(widths[:-1], widths[1:])])
        self.bottleneck = basic(widths[-1], hidden_size)
        # ups[i] brings the features from 1/2^(i + 1) to 1/2^i and fuses skip i
        self.ups = nn.ModuleList(up(c_in, c_out) for c_in, c_out in zip(widths[1:] + (hidden_size,), widths))
        self.head = basic(widths[0], widths[0])
        self.out = UnetOutBlock(3, widths[0], out_channels)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for an input whose spatial size is a multiple of ``2 ** len(widths)``."""
        stages = self.encoder(x)
        skips = [self.skips[0](x)] + [block(s) for block, s in zip(self.skips[1:], stages[:-1])]
        y = self.bottleneck(stages[-1])
        for i in reversed(range(len(self.ups))):
            y = self.ups[i](y, skips[i])
        return self.out(self.head(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, *spatial)`` for an input ``(B, in_channels, *spatial)`` of any size."""
        return padded_forward(self.forward_features, x, self.divisor, 2 * self.divisor)


def _build_resunet(in_channels: int, out_channels: int, preset: str) -> nn.Module:
    """nnU-Net-style residual U-Net: 4 stages, strides 1-2-2-2, conv 3, InstanceNorm (affine), LeakyReLU."""
    net = ResidualUNet(
        input_channels=in_channels, n_stages=4, conv_op=nn.Conv3d, kernel_sizes=3, strides=(1, 2, 2, 2),
        num_classes=out_channels, n_conv_per_stage_decoder=1, conv_bias=True, norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
        deep_supervision=False, **RESUNET_PRESETS[preset])
    return PaddedNet(net, divisor=8, min_size=16)


def _build_vnet(in_channels: int, out_channels: int) -> nn.Module:
    """MONAI VNet (fixed widths 16-256, MONAI's default ELU and dropout); any ``in_channels``.

    MONAI's input transition adds the input repeated ``16 / in_channels`` times to its output, so it requires
    ``16 % in_channels == 0``; otherwise a learned ``1^3`` conv first maps the input to 16 channels.
    """
    if VNET_CHANNELS % in_channels == 0:
        net = VNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels)
    else:
        net = nn.Sequential(nn.Conv3d(in_channels, VNET_CHANNELS, 1),
                            VNet(spatial_dims=3, in_channels=VNET_CHANNELS, out_channels=out_channels))
    return PaddedNet(net, divisor=16, min_size=32)


def build_hipm_backbone(name: str, in_channels: int, out_channels: int, preset: str = "paper") -> nn.Module:
    """The HIPM network ``name`` ("uxnet", "resunet" or "vnet") at size ``preset`` ("paper" or "small").

    Every returned module maps ``(B, in_channels, *spatial)`` to logits ``(B, out_channels, *spatial)`` for any
    spatial size. MONAI's VNet has fixed widths, so both presets build the same VNet.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown HIPM backbone {name!r}; choose one of {BACKBONES}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    if name == "uxnet":
        return UXNet3D(in_channels, out_channels, **UXNET_PRESETS[preset])
    if name == "resunet":
        return _build_resunet(in_channels, out_channels, preset)
    return _build_vnet(in_channels, out_channels)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on the ``meta`` device)."""
    return sum(p.numel() for p in module.parameters())
