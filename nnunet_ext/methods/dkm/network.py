"""Networks of the Diffusion Kinetic Model (DKM; Lv et al., MICCAI 2023).

* :class:`DiffusionUNet` - the diffusion module (DM) noise predictor eps_theta(x_t, t) (Sect. 2.1, Eq. 6), a DDPM
  U-Net with 128, 256, 256, 256 channels per stage (Sect. 3). It also returns the multi-scale "latent kinetic code"
  f_1..f_4 (Sect. 2.2 / 3, Table 2).
* :class:`KineticBlock` - encoder block of the segmentation module (SM) with the Eq. 5 fusion layer.
* :class:`UpBlock` - decoder block of the SM.
* :class:`DKMSegmentationNet` - the SM (four kinetic blocks, a bottleneck, four up blocks, 128-256-512-1024 channels,
  Sect. 3) fed by a frozen, pretrained DM.

All networks work for 2D (``spatial_dims=2``, tensors (B, C, Y, X)) and 3D (``spatial_dims=3``, (B, C, Z, Y, X)),
on CPU and CUDA unchanged. Inputs whose size is not a multiple of the total down-sampling factor are padded at the
end of each spatial axis (replicate) and the outputs are cropped back.
"""
from __future__ import annotations

import math
from functools import reduce
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_ext.methods.dkm.diffusion import LinearDiffusionSchedule, fixed_noise_like

#: Default DM timestep for kinetic-code extraction (0-based). With the DKM schedule abar_100 ~ 0.94, i.e. the noisy
#: input keeps ~97 % of the pre-contrast amplitude and ~24 % noise std: small enough that the pre-contrast content
#: dominates, large enough to lie well inside the trained range (Baranchuk et al. read features at t = 50-250 of 1000).
DEFAULT_FEATURE_TIMESTEP = 100

#: Stages whose kinetic code is fused by default: f_3 and f_4, the best combination of Table 2.
DEFAULT_CODE_STAGES = (3, 4)


def _conv(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def _batch_norm(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims]


def _check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "replicate") -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the spatial axes of ``x`` at their end to a multiple of ``multiple``.

    Returns:
        (padded tensor, original spatial shape) - crop with ``x[(..., *map(slice, shape))]``.
    """
    shape = tuple(x.shape[2:])
    extra = [(-size) % multiple for size in shape]
    if any(extra):
        # F.pad takes (last-axis begin, last-axis end, previous-axis begin, ...).
        pad = [value for amount in reversed(extra) for value in (0, amount)]
        x = F.pad(x, pad, mode=mode)
    return x, shape


def _crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    return x[(..., *(slice(0, size) for size in shape))]


def _ceil_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    return tuple(-(-size // factor) for size in shape)


def _resize_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    mode = "trilinear" if x.ndim == 5 else "bilinear"
    return F.interpolate(x, size=tuple(shape), mode=mode, align_corners=False)


# ---------------------------------------------------------------------------------------------------------------------
# Diffusion module
# ---------------------------------------------------------------------------------------------------------------------
class DiffusionUNet(nn.Module):
    """DDPM noise predictor eps_theta(x_t, t) of the DKM diffusion module (Sect. 2.1, Eq. 6; Sect. 3).

    A wrapper around MONAI's ``DiffusionModelUNet`` (the DDPM U-Net of Ho et al.: GroupNorm residual blocks with
    sinusoidal timestep embedding, optional self-attention, average-pool down / nearest+conv up sampling), with
    ``in_channels = out_channels = 1``. MONAI is imported lazily; it is only needed when a DM is built.

    Kinetic code (``forward_features``): f_i is the output of decoder (up-path) stage i, i.e. of the last residual
    (or attention) block of the up block working at resolution 1/2^(i-1), taken BEFORE that block's up-sampler
    (decoder activations, as in Baranchuk et al. 2022 whom DKM cites). f_1 is full resolution, f_L the deepest;
    f_i has ``widths[i-1]`` channels (see :attr:`feature_channels`).

    Args:
        spatial_dims: 2 or 3.
        widths: channels per stage (paper/DDPM: 128, 256, 256, 256).
        num_res_blocks: residual blocks per encoder stage (the decoder has one more, as in DDPM); paper/DDPM: 2.
        attention_levels: per-stage self-attention flags (DDPM uses attention at 16x16); default none, which keeps
            3D volumes tractable on CPU.
        num_head_channels: channels per attention head; default None = one head per stage (as DDPM).
        norm_num_groups: GroupNorm groups; default ``min(32, gcd(widths))`` so that it divides every width and every
            concatenation of widths in the decoder.
        pad_mode: ``F.pad`` mode used to pad inputs to a multiple of 2^(len(widths)-1).
    """

    def __init__(self, spatial_dims: int = 3, widths: Sequence[int] = (128, 256, 256, 256),
                 num_res_blocks: int = 2, attention_levels: Sequence[bool] | None = None,
                 num_head_channels: int | Sequence[int] | None = None, norm_num_groups: int | None = None,
                 pad_mode: str = "replicate") -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        try:
            from monai.networks.nets import DiffusionModelUNet
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("DKM's diffusion module needs MONAI (>= 1.4): pip install monai") from error
        widths = tuple(int(w) for w in widths)
        if len(widths) < 1 or min(widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {widths}")
        attention_levels = tuple(bool(a) for a in (attention_levels or (False,) * len(widths)))
        if len(attention_levels) != len(widths):
            raise ValueError(f"attention_levels needs {len(widths)} entries, got {len(attention_levels)}")
        if norm_num_groups is None:
            norm_num_groups = min(32, reduce(math.gcd, widths))
        if num_head_channels is None:
            num_head_channels = widths
        self.spatial_dims = spatial_dims
        self.widths = widths
        self.pad_mode = pad_mode
        self.unet = DiffusionModelUNet(
            spatial_dims=spatial_dims, in_channels=1, out_channels=1, num_res_blocks=num_res_blocks,
            channels=widths, attention_levels=attention_levels, norm_num_groups=norm_num_groups,
            num_head_channels=num_head_channels,
        )

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of f_1..f_L (= ``widths``)."""
        return self.widths

    @property
    def size_multiple(self) -> int:
        """Inputs are padded to a multiple of this (2^(number of down-samplings))."""
        return 2 ** (len(self.widths) - 1)

    def _timesteps(self, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
        if isinstance(t, int):
            return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        t = t.to(x.device).reshape(-1)
        return t.expand(x.shape[0]) if t.numel() == 1 else t

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Predict the noise eps_theta(x_t, t).

        Args:
            x: noisy image (B, 1, *spatial).
            t: LongTensor (B,) of 0-based timesteps, or an int for the whole batch.
        """
        padded, shape = pad_to_multiple(x, self.size_multiple, self.pad_mode)
        return _crop(self.unet(padded, self._timesteps(t, x)), shape)

    def forward_features(self, x: torch.Tensor, t: torch.Tensor | int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Noise prediction plus the decoder stage features [f_1, ..., f_L] (f_1 full resolution).

        f_i has shape (B, widths[i-1], *ceil(spatial / 2^(i-1))).
        """
        padded, shape = pad_to_multiple(x, self.size_multiple, self.pad_mode)
        up_blocks = self.unet.up_blocks
        captured: dict[int, torch.Tensor] = {}
        handles = []

        # up_blocks[j] works at resolution level L-1-j; its stage output is the input of its up-sampler, or, for
        # the last (full-resolution) block, which has no up-sampler, the block output.
        def keep_input(level: int):
            def hook(_module, args):
                captured[level] = args[0]
            return hook

        def keep_output(level: int):
            def hook(_module, _args, output):
                captured[level] = output
            return hook

        try:
            for j, block in enumerate(up_blocks):
                level = len(up_blocks) - 1 - j
                if getattr(block, "upsampler", None) is not None:
                    handles.append(block.upsampler.register_forward_pre_hook(keep_input(level)))
                else:
                    handles.append(block.register_forward_hook(keep_output(level)))
            eps = self.unet(padded, self._timesteps(t, x))
        finally:
            for handle in handles:
                handle.remove()
        features = [_crop(captured[level], _ceil_shape(shape, 2 ** level)) for level in range(len(up_blocks))]
        return _crop(eps, shape), features


# ---------------------------------------------------------------------------------------------------------------------
# Segmentation module
# ---------------------------------------------------------------------------------------------------------------------
def _conv_bn_relu(in_channels: int, out_channels: int, spatial_dims: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        _conv(spatial_dims)(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        _batch_norm(spatial_dims)(out_channels),
        nn.ReLU(inplace=True),
    )


class KineticBlock(nn.Module):
    """SM encoder block with the kinetic-code fusion layer (Sect. 2.2, Eq. 5).

    ``f_hat = C(ReLU(BN(W * f_dm)), f_sm)``, W a 1x1(x1) convolution; then two conv3-BN-ReLU layers, a residual
    addition and 2x max pooling. The fusion width ``W: code_channels -> out_channels // 2`` is our choice (the paper
    does not give it): it is a learnable linear map as Eq. 5 requires, and half the block width keeps the kinetic
    code (frozen, computed from a noisy input) from outnumbering the block's own features while staying large
    enough to carry it. The residual branch is the fused input itself when its channel count equals
    ``out_channels``, else a 1x1 convolution of it.

    With ``code_channels=None`` the fusion layer is absent: the "baseline without kinetic code" (Fig. 4).

    Args:
        in_channels: channels of f_sm (the previous block's pooled output or the image).
        out_channels: block width.
        code_channels: channels of f_dm, or None for no fusion.
        spatial_dims: 2 or 3.
    """

    def __init__(self, in_channels: int, out_channels: int, code_channels: int | None = None,
                 spatial_dims: int = 3) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        self.code_channels = code_channels
        fused_channels = in_channels
        self.fusion: nn.Module | None = None
        if code_channels:
            code_width = max(1, out_channels // 2)
            self.fusion = nn.Sequential(
                _conv(spatial_dims)(code_channels, code_width, kernel_size=1, bias=False),
                _batch_norm(spatial_dims)(code_width),
                nn.ReLU(inplace=True),
            )
            fused_channels += code_width
        self.convs = nn.Sequential(
            _conv_bn_relu(fused_channels, out_channels, spatial_dims),
            _conv_bn_relu(out_channels, out_channels, spatial_dims),
        )
        self.residual = (nn.Identity() if fused_channels == out_channels
                         else _conv(spatial_dims)(fused_channels, out_channels, kernel_size=1))
        self.pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims](kernel_size=2, stride=2)

    def forward(self, f_sm: torch.Tensor, f_dm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (skip features at the input resolution, max-pooled features).

        ``f_dm`` is required iff the block has a fusion layer; it is resized (bi/trilinear) to ``f_sm``'s spatial
        size if the two differ.
        """
        if self.fusion is not None:
            if f_dm is None:
                raise ValueError("this KineticBlock fuses a kinetic code: pass f_dm")
            x = torch.cat([self.fusion(_resize_to(f_dm, f_sm.shape[2:])), f_sm], dim=1)
        elif f_dm is not None:
            raise ValueError("this KineticBlock has no fusion layer (code_channels=None) but got f_dm")
        else:
            x = f_sm
        skip = self.convs(x) + self.residual(x)
        return skip, self.pool(skip)


class UpBlock(nn.Module):
    """SM decoder block: 2x transposed-conv up-sampling, concatenation with the skip, two conv3-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, spatial_dims: int = 3) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        transposed = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]
        self.up = transposed(in_channels, out_channels, kernel_size=2, stride=2)
        self.convs = nn.Sequential(
            _conv_bn_relu(out_channels + skip_channels, out_channels, spatial_dims),
            _conv_bn_relu(out_channels, out_channels, spatial_dims),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.up(x), skip], dim=1))


class DKMDecoder(nn.Module):
    """The SM up path plus 1x1 segmentation heads.

    Named ``decoder`` with a ``deep_supervision`` flag in :class:`DKMSegmentationNet` because nnU-Net's trainer sets
    ``network.decoder.deep_supervision`` in ``on_train_start`` and around validation. With the flag off the output
    is the full-resolution logits; with it on, a list of logits from the full resolution down to 1/2^(L-1)
    (highest resolution first, nnU-Net's order), one per up block. All heads always exist, so the state_dict does
    not depend on the flag.
    """

    def __init__(self, widths: Sequence[int], bottleneck_channels: int, num_classes: int, spatial_dims: int,
                 deep_supervision: bool = False) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        below = [bottleneck_channels, *reversed(widths)][:-1]  # channels arriving from one level deeper
        self.up_blocks = nn.ModuleList(
            UpBlock(in_ch, skip_ch, skip_ch, spatial_dims) for in_ch, skip_ch in zip(below, reversed(widths)))
        # seg_heads[k] belongs to up_blocks[k] (deepest first), the last one is the main output layer.
        self.seg_heads = nn.ModuleList(_conv(spatial_dims)(w, num_classes, kernel_size=1) for w in reversed(widths))

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """``skips`` are the kinetic-block skip features, highest resolution first."""
        outputs = []
        for up_block, head, skip in zip(self.up_blocks, self.seg_heads, reversed(skips)):
            x = up_block(x, skip)
            if self.deep_supervision:
                outputs.append(head(x))
        if self.deep_supervision:
            return outputs[::-1]
        return self.seg_heads[-1](x)


class DKMSegmentationNet(nn.Module):
    """DKM segmentation module (SM) with the frozen diffusion module (Sect. 2.2, Fig. 2(b)).

    Forward pass for an input image x (B, C_in, *spatial), padded to a multiple of 2^L (L = len(widths) poolings):

    1. kinetic code: x_pre = x[:, dm_input_channel], x_t = q_sample(x_pre, t_feat, eps_fixed) (Eq. 4) with
       deterministic noise ``fixed_noise_like(x_pre, feature_noise_seed)`` (same image -> same code), then
       ``(_, [f_1..f_L']) = dm.forward_features(x_t, t_feat)`` under ``torch.no_grad()``;
    2. encoder: kinetic block i (i = 1..L, resolution 1/2^(i-1)) fuses f_i (Eq. 5) if i is in ``code_stages``;
    3. bottleneck (two conv3-BN-ReLU at 1/2^L), L up blocks, 1x1 output convolution -> logits, cropped back.

    The DM is a registered submodule (its weights are in this network's state_dict, so a checkpoint carries them),
    frozen (``requires_grad=False``) and kept in eval mode even when ``.train()`` is called. With ``dm=None`` or empty
    ``code_stages`` this is the "baseline without kinetic code" (Fig. 4) and no DM is stored (a DM given with
    ``code_stages=()`` is dropped).

    Args:
        in_channels: image channels fed to the SM (nnU-Net's input channels).
        num_classes: output channels (logits).
        widths: SM channels per stage (paper: 128, 256, 512, 1024).
        dm: pretrained :class:`DiffusionUNet` (its spatial_dims must match), or None.
        code_stages: 1-based stages whose kinetic code f_i is fused; default (3, 4) with a DM (the paper's best,
            Table 2), () without.
        feature_timestep: 0-based DM timestep t_feat for the code (see ``DEFAULT_FEATURE_TIMESTEP``).
        feature_noise_seed: seed of the fixed noise eps_fixed.
        spatial_dims: 2 or 3.
        schedule: diffusion schedule the DM was trained with (default: the paper's linear 1e-4..1e-2, T = 1000).
        dm_input_channel: input channel holding the pre-contrast image given to the DM.
        bottleneck_channels: bottleneck width (default ``widths[-1]``).
        deep_supervision: initial value of ``decoder.deep_supervision``.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (128, 256, 512, 1024),
                 dm: DiffusionUNet | None = None, code_stages: Sequence[int] | None = None,
                 feature_timestep: int = DEFAULT_FEATURE_TIMESTEP, feature_noise_seed: int = 0,
                 spatial_dims: int = 3, schedule: LinearDiffusionSchedule | None = None, dm_input_channel: int = 0,
                 bottleneck_channels: int | None = None, deep_supervision: bool = False) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        widths = tuple(int(w) for w in widths)
        if code_stages is None:
            code_stages = DEFAULT_CODE_STAGES if dm is not None else ()
        code_stages = tuple(sorted({int(s) for s in code_stages}))
        if code_stages and dm is None:
            raise ValueError(f"code_stages={code_stages} needs a diffusion module (dm)")
        if any(not 1 <= s <= len(widths) for s in code_stages):
            raise ValueError(f"code_stages must lie in 1..{len(widths)}, got {code_stages}")
        if not 0 <= dm_input_channel < in_channels:
            raise ValueError(f"dm_input_channel {dm_input_channel} is not one of the {in_channels} input channels")
        self.spatial_dims = spatial_dims
        self.widths = widths
        self.code_stages = code_stages
        self.feature_timestep = int(feature_timestep)
        self.feature_noise_seed = int(feature_noise_seed)
        self.dm_input_channel = dm_input_channel
        self.schedule = schedule if schedule is not None else LinearDiffusionSchedule()
        if not 0 <= self.feature_timestep < self.schedule.num_timesteps:
            raise ValueError(f"feature_timestep must be in [0, {self.schedule.num_timesteps - 1}], "
                             f"got {feature_timestep}")

        self.dm: DiffusionUNet | None = None
        code_channels: list[int | None] = [None] * len(widths)
        if code_stages:
            if dm.spatial_dims != spatial_dims:
                raise ValueError(f"the DM is {dm.spatial_dims}D but the segmentation net is {spatial_dims}D")
            if max(code_stages) > len(dm.feature_channels):
                raise ValueError(f"the DM has {len(dm.feature_channels)} feature stages, code_stages={code_stages}")
            self.dm = dm
            self.dm.requires_grad_(False)
            self.dm.eval()
            for stage in code_stages:
                code_channels[stage - 1] = dm.feature_channels[stage - 1]

        self.encoder = nn.ModuleList(
            KineticBlock(in_ch, out_ch, code_ch, spatial_dims)
            for in_ch, out_ch, code_ch in zip((in_channels, *widths[:-1]), widths, code_channels))
        bottleneck_channels = bottleneck_channels or widths[-1]
        self.bottleneck = nn.Sequential(
            _conv_bn_relu(widths[-1], bottleneck_channels, spatial_dims),
            _conv_bn_relu(bottleneck_channels, bottleneck_channels, spatial_dims),
        )
        self.decoder = DKMDecoder(widths, bottleneck_channels, num_classes, spatial_dims, deep_supervision)

    @property
    def size_multiple(self) -> int:
        return 2 ** len(self.widths)

    def train(self, mode: bool = True) -> DKMSegmentationNet:
        """Switch the SM's mode; the frozen DM always stays in eval mode."""
        super().train(mode)
        if self.dm is not None:
            self.dm.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the SM only (the DM's are frozen); convenient for the optimizer."""
        return [p for p in self.parameters() if p.requires_grad]

    def load_dm_state(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load pretrained DM weights (a :class:`DiffusionUNet` state_dict) into the embedded DM (strict).

        Common wrapper prefixes (``module.``, ``_orig_mod.``, ``dm.``) are stripped, so the state dict of a
        DDP/compiled DM or of another DKMSegmentationNet also works.
        """
        if self.dm is None:
            raise ValueError("this DKMSegmentationNet has no diffusion module (dm=None or empty code_stages)")
        items = dict(state_dict)
        if any(key.startswith("dm.") for key in items):  # a DKMSegmentationNet state dict: keep its DM part
            items = {key[len("dm."):]: value for key, value in items.items() if key.startswith("dm.")}
        cleaned = {}
        for key, value in items.items():
            while key.startswith(("module.", "_orig_mod.")):
                key = key.split(".", 1)[1]
            cleaned[key] = value
        self.dm.load_state_dict(cleaned, strict=True)

    def kinetic_code(self, x: torch.Tensor) -> list[torch.Tensor]:
        """DM decoder features [f_1..f_L'] of the (padded) input, computed without gradients (step 1 above)."""
        if self.dm is None:
            raise ValueError("this DKMSegmentationNet has no diffusion module")
        self.dm.eval()  # also guards against a caller that switched the DM itself to train mode
        pre = x[:, self.dm_input_channel:self.dm_input_channel + 1]
        with torch.no_grad():
            t = torch.full((pre.shape[0],), self.feature_timestep, dtype=torch.long, device=pre.device)
            noisy = self.schedule.q_sample(pre, t, fixed_noise_like(pre, self.feature_noise_seed))
            _, features = self.dm.forward_features(noisy, t)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits (B, num_classes, *spatial), or the deep-supervision list (see :class:`DKMDecoder`)."""
        padded, shape = pad_to_multiple(x, self.size_multiple)
        features = self.kinetic_code(padded) if self.code_stages else None
        skips = []
        h = padded
        for stage, block in enumerate(self.encoder, start=1):
            skip, h = block(h, features[stage - 1] if stage in self.code_stages else None)
            skips.append(skip)
        logits = self.decoder(self.bottleneck(h), skips)
        if isinstance(logits, list):
            return [_crop(out, _ceil_shape(shape, 2 ** level)) for level, out in enumerate(logits)]
        return _crop(logits, shape)
