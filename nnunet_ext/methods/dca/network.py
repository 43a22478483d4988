"""The TM-DCA registration network (Chen et al., MLMI 2023, Fig. 2a), 2D and 3D.

``TMDCA(image_size, "paper" | "small")``: ``forward(moving, fixed)`` returns the displacement ``u`` that warps the
moving image onto the fixed one, ``(B, ndim, *spatial)`` in voxels, components in array-axis order, pull-back
convention of :mod:`.transform` (``moving(x + u(x)) ~ fixed(x)``); :meth:`TMDCA.register` also warps the image and
the labels.

Architecture (what the authors' code does, ``IXI/models/TransMorph_ConvMultiDWin_Separate_Chan_SEF_XMLP_TVF_SPT.py``
of junyuchen245/TransMorph_DCA, "model file" below):

* Two encoder streams, moving and fixed. They SHARE the patch embedding (``conv k=s=4`` + LayerNorm, one
  ``PatchEmbed(in_chans=1)`` applied to each image, model file l. 924-926, 1024-1025) and the patch merging of every
  stage (one ``PatchMerging`` applied to both streams, l. 757-758: LayerNorm over the ``2^ndim`` neighbours'
  channels, then ``Linear(2^ndim C -> 2C)`` without bias, ``pat_merg_rf=4``). Everything else is per stream:
  LayerNorms, MLPs, attention projections and offset networks (l. 437-448, 472-473), and the LayerNorm applied to each
  stage's output (l. 971-977); also the relative position bias, which the authors share between the two directions
  of a block (see :mod:`.attention`).
* A block (``SwinTransformerBlock``, l. 480-601) updates both streams from the same normalised inputs::

      m_, f_ = LN(m), LN(f)                        (padded to window multiples, cropped back after attention)
      m <- m + DropPath(DW-MCA(base=m_, reference=f_))   fixed queries, moving keys/values
      f <- f + DropPath(DW-MCA(base=f_, reference=m_))   moving queries, fixed keys/values
      m <- m + DropPath(MLP(LN(m))),  f <- f + DropPath(MLP(LN(f)))

  with :class:`~.attention.DeformableWindowCrossAttention` (its docstring has the roles and the offset network).
  Odd blocks of a stage use windows shifted by ``window // 2`` (l. 696); stochastic depth grows linearly from 0 to
  ``drop_path_rate`` over all blocks (l. 943).
* A ConvNet decoder (TransMorph's, l. 1091-1129): start from the sum of both streams' deepest features and, per
  level, upsample by 2 ((bi/tri)linear), concatenate a skip and apply two ``conv 3 - InstanceNorm - LeakyReLU(0.01)``
  layers. The skips are the sums ``moving + fixed`` of the stage outputs (l. 1365-1377), then, below the patch size,
  conv features of the concatenated input pair: at half resolution ``conv([moving, fixed] avg-pooled by 3/2/1)``
  with ``embed_dim / 2`` channels (``c1``, l. 1344, 1359-1362) and at full resolution ``conv([moving, fixed])`` with
  ``head_channels`` channels (TransMorph's ``c2``, ``TransMorph/models/TransMorph.py`` of
  junyuchen245/TransMorph_Transformer_for_Medical_Image_Registration; TM-DCA's OASIS model feeds its
  time-stepping ``cs`` there instead, with ``embed_dim / 2`` channels). A final ``conv 3`` with weights from
  N(0, 1e-5) and zero bias predicts the field, so the initial field is ~0 (``RegistrationHead``, l. 1124-1129).
* ``diffeomorphic=True``: the decoder output is a stationary velocity field ``v``, and the displacement is that of
  ``exp(v)`` by scaling and squaring (:func:`~.transform.integrate_velocity`; the paper's IXI model is diffeomorphic
  through TransMorph-bspl's B-spline SVF, its OASIS model through time steps: we offer the plain SVF).

Presets (:data:`PRESETS`): ``paper`` is the authors' 3-level config (``get_3DTransMorphBsplDWin3Lvl_config``,
``IXI/models/configs_TransMorph_bspl.py`` l. 59-89; ``get_3DTransMorphDWin3Lvl_config``,
``OASIS/models/configs_TransMorph.py`` l. 30-57, same values): embed 96, depths (4, 4, 5), heads (8, 8, 8),
offset kernels (7, 5, 3), MLP ratio 4, no qkv bias, drop path 0.3, 16 head channels. ``small`` is a CPU-sized
version (embed 16, one block per stage, 2 heads, 3x3 offset kernels, no drop path) for tests and smoke runs.
In 3D ``paper`` has 283.5 M parameters, 255 M of them in the offset networks: the released code's ``Offset_block``
(model file l. 58-83) is dense, ``conv k^3 2C -> C``, ``conv k^3 C -> C/2``, two per block, which
:mod:`.attention` follows (the paper calls the offset network lightweight, with a depth-wise conv: that is the
unused ``Offset_block0``, l. 39-56; the configs' docstring "Trainable params: 15,201,579" does not fit this code).

Windows: one window for all stages, ``max(2, n // 32)`` voxels per axis of the image size the network is built for
(the authors' training scripts set ``window_size = (H // 32, W // 32, D // 32)``, ``IXI/train_TransMorph_Dwin_bspl.py``
l. 54, giving (5, 6, 7) for 160 x 192 x 224). Inputs of any size are accepted: ``forward`` pads them at the end with
zeros (as the authors' ``PatchEmbed``) to a multiple of ``4 * 2^(stages - 1)`` per axis, and at least to one window at
the deepest stage, then crops the field back. The window therefore never exceeds a stage's feature map (instead of
capping the window at small feature maps we pad those up, which keeps >= 2 tokens per axis in every window and keeps
the offset networks' BatchNorm off 1-voxel maps); where a feature map is not a multiple of the window, the block pads
it (as Swin and the authors do). Shifts are ``window // 2`` along axes where the stage's map is larger than the
window, 0 elsewhere (Swin's rule).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_ext.methods.dca.attention import DeformableWindowCrossAttention
from nnunet_ext.methods.dca.transform import integrate_velocity, warp, warp_labels_one_hot

PATCH_SIZE = 4  # patch embedding stride; the decoder's two conv levels below it assume 4 (TransMorph)
WINDOW_DIVISOR = 32  # window = image size / 32 (the authors' training scripts)
MIN_WINDOW = 2


@dataclasses.dataclass(frozen=True)
class TMDCAConfig:
    """Size of a TM-DCA network. Defaults: the authors' 3-level config (module docstring).

    Args:
        embed_dim: channels of the first stage; stage ``i`` has ``embed_dim * 2^i``.
        depths: transformer blocks per stage.
        num_heads: attention heads per stage; must divide that stage's channels.
        offset_kernel_sizes: kernel of the offset networks' k x k convolutions per stage (odd).
        mlp_ratio: hidden width of the MLPs relative to the stage's channels.
        qkv_bias: bias in the query and key/value projections.
        drop_path_rate: stochastic depth of the last block (linear from 0 over all blocks).
        head_channels: channels of the full-resolution decoder level that feeds the field head.
    """

    embed_dim: int = 96
    depths: tuple[int, ...] = (4, 4, 5)
    num_heads: tuple[int, ...] = (8, 8, 8)
    offset_kernel_sizes: tuple[int, ...] = (7, 5, 3)
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    drop_path_rate: float = 0.3
    head_channels: int = 16

    def __post_init__(self):
        for name in ("depths", "num_heads", "offset_kernel_sizes"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        stages = len(self.depths)
        if stages < 1 or len(self.num_heads) != stages or len(self.offset_kernel_sizes) != stages:
            raise ValueError(f"depths {self.depths}, num_heads {self.num_heads} and offset_kernel_sizes "
                             f"{self.offset_kernel_sizes} must have one entry per stage")
        if self.embed_dim < 2 or self.embed_dim % 2:
            raise ValueError(f"embed_dim must be even and >= 2, got {self.embed_dim}")
        if min(self.depths) < 1 or self.head_channels < 1 or self.mlp_ratio <= 0:
            raise ValueError("depths, head_channels and mlp_ratio must be positive")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        for i, heads in enumerate(self.num_heads):
            if heads < 1 or self.stage_dims[i] % heads:
                raise ValueError(f"stage {i}: {heads} heads do not divide {self.stage_dims[i]} channels")

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2 ** i for i in range(self.num_stages))


PRESETS = {
    "paper": TMDCAConfig(),
    "small": TMDCAConfig(embed_dim=16, depths=(1, 1, 1), num_heads=(2, 2, 2), offset_kernel_sizes=(3, 3, 3),
                         drop_path_rate=0.0, head_channels=8),
}


def get_config(config: str | TMDCAConfig = "small", **overrides) -> TMDCAConfig:
    """A preset by name (a key of :data:`PRESETS`) or a config, with fields replaced by ``overrides``."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown TM-DCA preset {config!r}; choose one of {sorted(PRESETS)}")
        config = PRESETS[config]
    return dataclasses.replace(config, **overrides) if overrides else config


def default_window(image_size: Sequence[int]) -> tuple[int, ...]:
    """The window for an image size: ``max(2, n // 32)`` voxels per axis (the authors' ``H // 32`` rule)."""
    return tuple(max(MIN_WINDOW, int(n) // WINDOW_DIVISOR) for n in image_size)


def padded_input_size(spatial: Sequence[int], window: Sequence[int], num_stages: int) -> tuple[int, ...]:
    """The size an input is padded to: per axis a multiple of ``u = 4 * 2^(stages - 1)`` and at least ``u * window``.

    Every stage's feature map is then a whole number of tokens and at least one window large.
    """
    unit = PATCH_SIZE * 2 ** (num_stages - 1)
    return tuple(max(math.ceil(int(n) / unit), int(w)) * unit for n, w in zip(spatial, window))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _conv(ndim: int) -> type[nn.Module]:
    return nn.Conv2d if ndim == 2 else nn.Conv3d


def _crop(x: torch.Tensor, spatial: Sequence[int], first: int) -> torch.Tensor:
    """Keep the leading ``spatial`` voxels of the axes ``first .. first + ndim - 1``."""
    return x[(slice(None),) * first + tuple(slice(0, int(n)) for n in spatial)]


def _pad_end(x: torch.Tensor, pad: Sequence[int], channels_last: bool) -> torch.Tensor:
    """Zero-pad the spatial axes at their end by ``pad`` voxels each."""
    if not any(pad):
        return x
    spec = [0, 0] if channels_last else []
    for p in reversed(pad):
        spec += [0, int(p)]
    return F.pad(x, spec)


# ------------------------------------------------------------------ transformer
class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch per sample with probability ``p``, scale by 1/(1-p)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


def _mlp(dim: int, ratio: float) -> nn.Sequential:
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class DualCrossAttentionBlock(nn.Module):
    """One TM-DCA transformer block on a (moving, fixed) pair of channels-last maps (module docstring).

    Args:
        dim: channels of both streams.
        num_heads: attention heads.
        window: window per spatial axis (2 or 3 entries).
        shift: cyclic shift per axis (``0 <= shift < window``); ``None`` for regular windows.
        mlp_ratio, qkv_bias: as in :class:`TMDCAConfig`.
        offset_kernel_size: kernel of the offset networks (odd).
        drop_path: stochastic depth probability of this block's residual branches.
    """

    def __init__(self, dim: int, num_heads: int, window: Sequence[int], shift: Sequence[int] | None = None,
                 mlp_ratio: float = 4.0, qkv_bias: bool = False, offset_kernel_size: int = 3, drop_path: float = 0.0):
        super().__init__()
        self.window = tuple(int(w) for w in window)
        attention = dict(dim=dim, num_heads=num_heads, window=self.window, shift=shift, qkv_bias=qkv_bias,
                         offset_kernel_size=offset_kernel_size)
        self.moving_norm1, self.fixed_norm1 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.moving_attention = DeformableWindowCrossAttention(**attention)  # base moving, reference fixed
        self.fixed_attention = DeformableWindowCrossAttention(**attention)  # base fixed, reference moving
        self.moving_norm2, self.fixed_norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.moving_mlp, self.fixed_mlp = _mlp(dim, mlp_ratio), _mlp(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, *spatial, C)`` each -> the updated ``(moving, fixed)``, same shapes."""
        spatial = tuple(moving.shape[1:-1])
        pad = [(-n) % w for n, w in zip(spatial, self.window)]
        moving_in = _pad_end(self.moving_norm1(moving), pad, channels_last=True)
        fixed_in = _pad_end(self.fixed_norm1(fixed), pad, channels_last=True)
        moving_update = _crop(self.moving_attention(moving_in, fixed_in), spatial, 1)
        fixed_update = _crop(self.fixed_attention(fixed_in, moving_in), spatial, 1)
        moving = moving + self.drop_path(moving_update)
        fixed = fixed + self.drop_path(fixed_update)
        moving = moving + self.drop_path(self.moving_mlp(self.moving_norm2(moving)))
        fixed = fixed + self.drop_path(self.fixed_mlp(self.fixed_norm2(fixed)))
        return moving, fixed


class PatchEmbedding(nn.Module):
    """``conv k=s=4`` + LayerNorm: ``(B, C_in, *spatial)`` (a multiple of 4) -> channels-last ``(B, *spatial/4, C)``."""

    def __init__(self, ndim: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = _conv(ndim)(in_channels, dim, PATCH_SIZE, stride=PATCH_SIZE)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).movedim(1, -1))


class PatchMerging(nn.Module):
    """Swin patch merging: the ``2^ndim`` tokens of every 2 x 2 (x 2) block, concatenated, LayerNorm, ``Linear -> 2C``.

    Channels-last ``(B, *spatial, C)`` -> ``(B, *ceil(spatial / 2), 2C)`` (odd sizes are zero-padded first).
    """

    def __init__(self, ndim: int, dim: int):
        super().__init__()
        self.ndim = ndim
        self.norm = nn.LayerNorm(2 ** ndim * dim)
        self.reduction = nn.Linear(2 ** ndim * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_end(x, [n % 2 for n in x.shape[1:-1]], channels_last=True)
        parts = [x[(slice(None),) + tuple(slice(o, None, 2) for o in offset)]
                 for offset in itertools.product((0, 1), repeat=self.ndim)]
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class DualStreamEncoder(nn.Module):
    """The moving and fixed Swin encoders with deformable cross-attention between them.

    Args:
        ndim: 2 or 3.
        in_channels: channels of each image (moving and fixed alike: the patch embedding is shared).
        config: network size.
        window: window per axis, the same at every stage.
        shifted_axes: per stage, which axes the odd blocks shift (by ``window // 2``).
    """

    def __init__(self, ndim: int, in_channels: int, config: TMDCAConfig, window: Sequence[int],
                 shifted_axes: Sequence[Sequence[bool]]):
        super().__init__()
        dims = config.stage_dims
        blocks = sum(config.depths)
        rates = [config.drop_path_rate * b / max(blocks - 1, 1) for b in range(blocks)]  # torch.linspace's
        self.patch_embedding = PatchEmbedding(ndim, in_channels, config.embed_dim)
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for i, depth in enumerate(config.depths):
            shift = tuple(w // 2 if s else 0 for w, s in zip(window, shifted_axes[i]))
            first = sum(config.depths[:i])
            self.stages.append(nn.ModuleList(
                DualCrossAttentionBlock(dims[i], config.num_heads[i], window, shift if b % 2 else None,
                                        config.mlp_ratio, config.qkv_bias, config.offset_kernel_sizes[i],
                                        rates[first + b])
                for b in range(depth)))
            if i < config.num_stages - 1:
                self.merges.append(PatchMerging(ndim, dims[i]))
        self.moving_out_norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        self.fixed_out_norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Images ``(B, C_in, *spatial)`` -> per stage the normalised ``(moving, fixed)`` outputs, channels-first."""
        moving, fixed = self.patch_embedding(moving), self.patch_embedding(fixed)
        outputs = []
        for i, blocks in enumerate(self.stages):
            for block in blocks:
                moving, fixed = block(moving, fixed)
            outputs.append((self.moving_out_norms[i](moving).movedim(-1, 1),
                            self.fixed_out_norms[i](fixed).movedim(-1, 1)))
            if i < len(self.merges):
                moving, fixed = self.merges[i](moving), self.merges[i](fixed)
        return outputs


# ------------------------------------------------------------------ decoder
class ConvNormAct(nn.Sequential):
    """``conv 3 (no bias) - InstanceNorm - LeakyReLU(0.01)``: TransMorph's ``Conv3dReLU(use_batchnorm=False)``."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int):
        norm = nn.InstanceNorm2d if ndim == 2 else nn.InstanceNorm3d
        super().__init__(_conv(ndim)(in_channels, out_channels, 3, padding=1, bias=False), norm(out_channels),
                         nn.LeakyReLU(0.01))


class UpBlock(nn.Module):
    """Upsample by 2 ((bi/tri)linear) to the skip's size, concatenate the skip, two :class:`ConvNormAct`.

    TransMorph's ``DecoderBlock`` (``align_corners=False``).
    """

    def __init__(self, ndim: int, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.mode = "bilinear" if ndim == 2 else "trilinear"
        self.convs = nn.Sequential(ConvNormAct(ndim, in_channels + skip_channels, out_channels),
                                   ConvNormAct(ndim, out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode=self.mode, align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class FieldDecoder(nn.Module):
    """TransMorph's ConvNet decoder: stage skips, then half- and full-resolution conv features of the input pair.

    Args:
        ndim: 2 or 3.
        pair_channels: channels of the concatenated ``[moving, fixed]`` input.
        stage_dims: channels of the encoder stages, shallowest first.
        head_channels: channels of the full-resolution level.
    """

    def __init__(self, ndim: int, pair_channels: int, stage_dims: Sequence[int], head_channels: int):
        super().__init__()
        half = stage_dims[0] // 2
        self.pool = (nn.AvgPool2d if ndim == 2 else nn.AvgPool3d)(3, stride=2, padding=1)
        self.half_res_features = ConvNormAct(ndim, pair_channels, half)
        self.full_res_features = ConvNormAct(ndim, pair_channels, head_channels)
        self.stage_ups = nn.ModuleList(UpBlock(ndim, stage_dims[i + 1], stage_dims[i], stage_dims[i])
                                       for i in reversed(range(len(stage_dims) - 1)))
        self.half_up = UpBlock(ndim, stage_dims[0], half, half)
        self.full_up = UpBlock(ndim, half, head_channels, head_channels)
        self.head = _conv(ndim)(head_channels, ndim, 3, padding=1)
        nn.init.normal_(self.head.weight, 0.0, 1e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, skips: Sequence[torch.Tensor], pair: torch.Tensor) -> torch.Tensor:
        """``skips``: per stage ``(B, C_i, *spatial_i)``, shallowest first; ``pair``: ``(B, 2 C_in, *spatial)``."""
        x = skips[-1]
        for up, skip in zip(self.stage_ups, reversed(skips[:-1])):
            x = up(x, skip)
        x = self.half_up(x, self.half_res_features(self.pool(pair)))
        x = self.full_up(x, self.full_res_features(pair))
        return self.head(x)


# ------------------------------------------------------------------ network
class Registration(NamedTuple):
    """Output of :meth:`PairRegistrationNetwork.register` (TM-DCA, ConvNetRegistration)."""

    warped: torch.Tensor  # moving image warped onto the fixed one, (B, C, *spatial)
    warped_labels: Optional[torch.Tensor]  # moving labels warped, (B, 1, *spatial), or None
    displacement: torch.Tensor  # (B, ndim, *spatial) in voxels


class PairRegistrationNetwork(nn.Module):
    """What TM-DCA and :class:`~.convnet.ConvNetRegistration` share: input checks, ``forward`` and ``register``.

    A subclass sets its layers and implements :meth:`predict_field` (the decoder's field, cropped to the input).

    Args:
        image_size: spatial size the network is built for, 2 or 3 entries.
        diffeomorphic: predict a stationary velocity field and return the displacement of its exponential.
        integration_steps: scaling-and-squaring steps for ``diffeomorphic``.
        in_channels: channels of each image.
    """

    def __init__(self, image_size: Sequence[int], diffeomorphic: bool = False, integration_steps: int = 7,
                 in_channels: int = 1):
        super().__init__()
        self.image_size = tuple(int(n) for n in image_size)
        self.ndim = len(self.image_size)
        if self.ndim not in (2, 3) or min(self.image_size) < 1:
            raise ValueError(f"image_size must have 2 or 3 positive entries, got {self.image_size}")
        if integration_steps < 0:
            raise ValueError(f"integration_steps must be >= 0, got {integration_steps}")
        self.diffeomorphic = bool(diffeomorphic)
        self.integration_steps = int(integration_steps)
        self.in_channels = int(in_channels)

    def _check_pair(self, moving: torch.Tensor, fixed: torch.Tensor) -> None:
        if moving.shape != fixed.shape:
            raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must have one shape")
        if moving.dim() != self.ndim + 2 or moving.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, *spatial) with {self.ndim} spatial axes, "
                             f"got {tuple(moving.shape)}")

    def predict_field(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """Displacement ``(B, ndim, *spatial)`` in voxels with ``moving(x + u(x)) ~ fixed(x)``.

        Args:
            moving, fixed: ``(B, in_channels, *spatial)``, any spatial size.
        """
        field = self.predict_field(moving, fixed)
        if self.diffeomorphic:
            field = integrate_velocity(field, self.integration_steps)
        return field

    def register(self, moving: torch.Tensor, fixed: torch.Tensor, moving_labels: torch.Tensor | None = None,
                 num_classes: int | None = None) -> Registration:
        """Predict the field and warp the moving image (linearly, zero outside) and, if given, its labels.

        Args:
            moving, fixed: ``(B, in_channels, *spatial)``.
            moving_labels: integer labels ``(B, 1, *spatial)``.
            num_classes: ``None``: warp the labels by nearest neighbour; else warp their one-hot maps linearly and
                take the argmax (:func:`~.transform.warp_labels_one_hot`).
        """
        displacement = self(moving, fixed)
        warped = warp(moving, displacement.to(moving.dtype), "bilinear", "zeros")
        labels = None
        if moving_labels is not None:  # not differentiable: no graph through the field
            field = displacement.detach()
            if num_classes is None:
                labels = warp(moving_labels.to(field.dtype), field, "nearest", "zeros").round().to(moving_labels.dtype)
            else:
                labels = warp_labels_one_hot(moving_labels, field, num_classes)
        return Registration(warped, labels, displacement)


class TMDCA(PairRegistrationNetwork):
    """TM-DCA: dual Swin encoders with deformable cross-attention and a ConvNet decoder (module docstring).

    Args:
        image_size: spatial size the network is built for (the training patch), 2 or 3 entries; sets the window.
        config: a preset name (``"paper"``, ``"small"``) or a :class:`TMDCAConfig`.
        diffeomorphic: predict a stationary velocity field and return the displacement of its exponential.
        integration_steps: scaling-and-squaring steps for ``diffeomorphic``.
        in_channels: channels of each image.
        window_size: override the window (default :func:`default_window` of ``image_size``).
        **overrides: fields of :class:`TMDCAConfig` replacing the preset's.
    """

    def __init__(self, image_size: Sequence[int], config: str | TMDCAConfig = "small", diffeomorphic: bool = False,
                 integration_steps: int = 7, in_channels: int = 1, window_size: Sequence[int] | None = None,
                 **overrides):
        super().__init__(image_size, diffeomorphic, integration_steps, in_channels)
        self.config = get_config(config, **overrides)
        self.window = tuple(int(w) for w in (window_size if window_size is not None
                                             else default_window(self.image_size)))
        if len(self.window) != self.ndim or min(self.window) < 1:
            raise ValueError(f"window_size {self.window} must have {self.ndim} positive entries")
        padded = padded_input_size(self.image_size, self.window, self.config.num_stages)
        self.stage_sizes = tuple(tuple(n // (PATCH_SIZE * 2 ** i) for n in padded)
                                 for i in range(self.config.num_stages))
        shifted_axes = [[n > w for n, w in zip(size, self.window)] for size in self.stage_sizes]
        self.encoder = DualStreamEncoder(self.ndim, self.in_channels, self.config, self.window, shifted_axes)
        self.decoder = FieldDecoder(self.ndim, 2 * self.in_channels, self.config.stage_dims,
                                    self.config.head_channels)

    def predict_field(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The decoder's field, cropped to the input: the velocity if ``diffeomorphic``, else the displacement."""
        self._check_pair(moving, fixed)
        spatial = tuple(moving.shape[2:])
        size = padded_input_size(spatial, self.window, self.config.num_stages)
        pad = [p - n for p, n in zip(size, spatial)]
        moving, fixed = _pad_end(moving, pad, False), _pad_end(fixed, pad, False)
        skips = [m + f for m, f in self.encoder(moving, fixed)]
        field = self.decoder(skips, torch.cat([moving, fixed], dim=1))
        return _crop(field, spatial, 2)
