"""Windowed cross-attention and the deformable windowed cross-attention of TM-DCA (Chen et al., MLMI 2023, Eq. 2).

Tensors are channels-last, ``(B, *spatial, C)`` with ``spatial`` = ``(H, W)`` or ``(D, H, W)``, as in Swin. The
attention modules compute only the attention term of a transformer block: the block that owns them (built with the
network) applies LayerNorm to both streams before, adds the result to the base stream's shortcut after, and pads the
feature maps to multiples of the window size; here the spatial size must already be a multiple of the window.

Roles, as in Eq. 2 and in the authors' ``WindowAttention`` (``IXI/models/TransMorph_ConvMultiDWin_Separate_Chan_
SEF_XMLP_TVF_SPT.py``): the BASE stream is the one being updated; its rectangular windows give the keys and values,
``[K_b, V_b] = WP(x_b) U_kv``. The REFERENCE stream gives the queries, ``Q_r = psi(x_r; p + dp) U_q``: it is
resampled at the token positions ``p`` moved by the learned offsets ``dp`` and then window-partitioned. The output
at token ``p`` is ``softmax(Q_r K_b^T / sqrt(D_k) + B) V_b`` (``B``: relative position bias), projected back to
``C`` channels. (Queries come from the deformed reference, keys and values from the rectangular base windows: the
reverse of DAT-style deformable attention, where the sampled tokens give keys and values.) TM-DCA's encoder runs
two such modules per block, one with (moving, fixed) as (base, reference) and one with the roles swapped.

What comes from the authors' code (same file, ``Offset_block`` and ``SwinTransformerBlock``), as the paper leaves
it out:

* the offset network input is the CONCATENATION ``[reference, base]`` along channels (the paper's text says
  "added"); it is ``conv k x k (2C -> C) - BatchNorm - ReLU - conv k x k (C -> C/2) - BatchNorm - ReLU -
  conv 1 x 1 (C/2 -> heads * ndim)``, all weights drawn from N(0, 1e-5), so the offsets start almost (not exactly)
  at zero and training starts from (nearly) plain windowed cross-attention; ``k`` is 7, 5, 3 in the three encoder
  stages (``dwin_kernel_size`` in their configs);
* the raw output is squashed and scaled per axis: ``dp_d = tanh(raw_d) * 0.5 * n_d`` voxels (``n_d``: feature-map
  size along axis ``d``), so an offset can reach half the feature map; channel ``h * ndim + d`` is head ``h``'s
  offset along array axis ``d``;
* every head samples its own channel group (channels ``h * C/heads .. (h + 1) * C/heads - 1``) with its own
  offsets, (tri/bi)linearly, zero outside the map;
* the offsets are predicted from, and the reference is sampled on, the cyclically SHIFTED maps; the Swin attention
  mask (-100 between tokens from different regions) is applied in shifted blocks; the relative position bias is
  indexed by the rectangular window positions of query and key.

What we chose: ``grid_sample(align_corners=True)`` with the matching voxel-to-[-1, 1] map (the authors normalise
for ``align_corners=True`` but call ``grid_sample`` with the default ``False``, a sub-voxel misalignment, and they
normalise the H and W components with each other's size, which mis-scales them when H != W), so zero offsets
sample the reference at its voxel centres and the deformable module reduces to :class:`WindowCrossAttention` up to float
round-off; the last offset layer has a bias (initialised to zero, so nothing changes at initialisation) so a fixed
offset can be set by hand; each direction owns its relative position bias table (the authors share one table
between the two directions of a block).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_ext.methods.dca.transform import warp

MASK_VALUE = -100.0  # Swin's additive attention mask between tokens of different shifted regions


def _tuple(values: Sequence[int], name: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if len(values) not in (2, 3):
        raise ValueError(f"{name} must have one entry per spatial axis (2 or 3), got {values}")
    return values


def _check_multiple(spatial: Sequence[int], window: Sequence[int]) -> None:
    if len(spatial) != len(window):
        raise ValueError(f"window {tuple(window)} has {len(window)} axes, the tensor has {len(spatial)} spatial axes")
    if any(w < 1 or n % w for n, w in zip(spatial, window)):
        raise ValueError(f"spatial size {tuple(spatial)} must be a multiple of the window {tuple(window)} "
                         "along every axis (pad first)")


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """Cut a channels-last map into non-overlapping windows.

    Args:
        x: ``(B, *spatial, C)``, 2D or 3D; every spatial size must be a multiple of the window.
        window: window size per spatial axis.

    Returns:
        ``(B * num_windows, *window, C)``, batch-major, windows in row-major (C) order of the window grid.

    Raises:
        ValueError: wrong number of axes or a spatial size not a multiple of the window.
    """
    window = tuple(int(w) for w in window)
    batch, *spatial, channels = x.shape
    _check_multiple(spatial, window)
    ndim = len(window)
    split = [batch]
    for n, w in zip(spatial, window):
        split += [n // w, w]
    order = [0] + [1 + 2 * d for d in range(ndim)] + [2 + 2 * d for d in range(ndim)] + [2 * ndim + 1]
    return x.reshape(split + [channels]).permute(order).reshape((-1,) + window + (channels,))


def window_reverse(windows: torch.Tensor, window: Sequence[int], spatial: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * num_windows, *window, C)`` -> ``(B, *spatial, C)``.

    Raises:
        ValueError: ``spatial`` not a multiple of ``window``, or a window count that does not fit ``spatial``.
    """
    window = tuple(int(w) for w in window)
    spatial = tuple(int(n) for n in spatial)
    _check_multiple(spatial, window)
    ndim = len(window)
    if tuple(windows.shape[1:-1]) != window:
        raise ValueError(f"windows of shape {tuple(windows.shape)} do not have the window size {window}")
    grid = [n // w for n, w in zip(spatial, window)]
    if windows.shape[0] % math.prod(grid):
        raise ValueError(f"{windows.shape[0]} windows do not make whole maps of size {spatial} ({grid} windows)")
    channels = windows.shape[-1]
    x = windows.reshape([-1] + grid + list(window) + [channels])
    order = [0] + [i for d in range(ndim) for i in (1 + d, 1 + ndim + d)] + [2 * ndim + 1]
    return x.permute(order).reshape((-1,) + spatial + (channels,))


def relative_position_index(window: Sequence[int]) -> torch.Tensor:
    """Swin's relative position index of every (query, key) pair of tokens in one window.

    For tokens at window coordinates ``a`` and ``b`` the relative offset ``a_d - b_d + (w_d - 1)`` lies in
    ``0 .. 2 w_d - 2``; the index is that offset vector in mixed radix ``(2 w_d - 1)``, last axis fastest.

    Returns:
        ``(N, N)`` int64 with ``N = prod(window)``, values in ``0 .. prod(2 w_d - 1) - 1``.
    """
    window = _tuple(window, "window")
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")).flatten(1)
    relative = coords[:, :, None] - coords[:, None, :]  # (ndim, N, N)
    index = torch.zeros(relative.shape[1:], dtype=torch.long)
    for d, w in enumerate(window):
        index = index * (2 * w - 1) + relative[d] + (w - 1)
    return index


class RelativePositionBias(nn.Module):
    """Learnable bias ``B[h, i, j]`` added to the attention logits, one value per head and relative offset (Swin).

    The table has ``prod(2 w_d - 1)`` rows, initialised from a truncated normal with std 0.02 (Swin, TransMorph).
    """

    def __init__(self, window: Sequence[int], num_heads: int):
        super().__init__()
        self.window = _tuple(window, "window")
        size = math.prod(2 * w - 1 for w in self.window)
        self.table = nn.Parameter(torch.zeros(size, num_heads))
        nn.init.trunc_normal_(self.table, std=0.02)
        self.register_buffer("index", relative_position_index(self.window), persistent=False)

    def forward(self) -> torch.Tensor:
        """The bias, ``(num_heads, N, N)``."""
        tokens = self.index.shape[0]
        return self.table[self.index.reshape(-1)].reshape(tokens, tokens, -1).permute(2, 0, 1)


def shifted_window_mask(spatial: Sequence[int], window: Sequence[int], shift: Sequence[int],
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Swin's attention mask for a map rolled by ``-shift``: 0 within a region, :data:`MASK_VALUE` across regions.

    After the roll, along each axis the positions ``[0, n - w)``, ``[n - w, n - s)`` and ``[n - s, n)`` come from
    different places of the unrolled map (the last ones wrapped around); tokens of one window may only attend to
    tokens of the same region in every axis.

    Returns:
        ``(num_windows, N, N)`` float, windows ordered as in :func:`window_partition` of one map.
    """
    spatial = tuple(int(n) for n in spatial)
    _check_multiple(spatial, window)
    region = torch.zeros(spatial, dtype=torch.long, device=device)
    for d, (n, w, s) in enumerate(zip(spatial, window, shift)):
        position = torch.arange(n, device=device)
        axis_region = (position >= n - w).long() + (position >= n - s).long()  # s = 0: no third region
        region = region * 3 + axis_region.view([-1 if i == d else 1 for i in range(len(spatial))])
    region_windows = window_partition(region[None, ..., None], window).flatten(1)  # (num_windows, N)
    different = region_windows[:, None, :] != region_windows[:, :, None]
    return torch.zeros(different.shape, device=device).masked_fill(different, MASK_VALUE)


class WindowCrossAttention(nn.Module):
    """Windowed multi-head cross-attention (Eq. 1 inside Swin windows), optionally on cyclically shifted windows.

    For every window ``w`` of the (shifted) maps:

        ``Q = WP(x_r)_w U_q,  [K, V] = WP(x_b)_w U_kv,  out_w = softmax(Q K^T / sqrt(C / heads) + B + M) V U_o``

    with ``B`` the relative position bias and ``M`` the shifted-window mask (zero when ``shift`` is zero). This is
    :class:`DeformableWindowCrossAttention` with zero offsets, and the two share this code: the deformable module
    only replaces the reference by its resampled version (:meth:`sample_reference`).

    Args:
        dim: channels ``C`` of both streams.
        num_heads: attention heads; must divide ``dim``.
        window: window size per spatial axis (2 or 3 entries).
        shift: cyclic shift per axis, ``0 <= shift_d < window_d``; zeros (default) for regular windows.
        qkv_bias: bias in the query and key/value projections (the authors' configs use ``False``).
    """

    def __init__(self, dim: int, num_heads: int, window: Sequence[int], shift: Sequence[int] | None = None,
                 qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide dim ({dim})")
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.window = _tuple(window, "window")
        self.ndim = len(self.window)
        self.shift = tuple(int(s) for s in shift) if shift is not None else (0,) * self.ndim
        if len(self.shift) != self.ndim or any(not 0 <= s < w for s, w in zip(self.shift, self.window)):
            raise ValueError(f"shift {self.shift} must have one entry per axis with 0 <= shift < window {self.window}")
        self.scale = (dim // num_heads) ** -0.5
        self.query = nn.Linear(dim, dim, bias=qkv_bias)
        self.key_value = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.position_bias = RelativePositionBias(self.window, num_heads)

    def _check_inputs(self, base: torch.Tensor, reference: torch.Tensor) -> None:
        if base.shape != reference.shape:
            raise ValueError(f"base {tuple(base.shape)} and reference {tuple(reference.shape)} must have one shape")
        if base.dim() != self.ndim + 2 or base.shape[-1] != self.dim:
            raise ValueError(f"expected (B, *spatial, {self.dim}) with {self.ndim} spatial axes, "
                             f"got {tuple(base.shape)}")
        _check_multiple(base.shape[1:-1], self.window)

    def sample_reference(self, base: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The reference map the queries are taken from: the reference itself (no offsets)."""
        return reference

    def forward(self, base: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Attention output for the base stream.

        Args:
            base: ``(B, *spatial, C)``, gives keys and values (normalised by the caller).
            reference: ``(B, *spatial, C)``, gives the queries.

        Returns:
            ``(B, *spatial, C)``, to be added to the base stream's shortcut.
        """
        self._check_inputs(base, reference)
        dims = tuple(range(1, self.ndim + 1))
        shifted = any(self.shift)
        if shifted:
            base = torch.roll(base, [-s for s in self.shift], dims)
            reference = torch.roll(reference, [-s for s in self.shift], dims)
        out = self._attend(base, self.sample_reference(base, reference))
        if shifted:
            out = torch.roll(out, list(self.shift), dims)
        return out

    def _attend(self, base: torch.Tensor, queries_from: torch.Tensor) -> torch.Tensor:
        """Multi-head attention inside every window: queries from ``queries_from``, keys/values from ``base``."""
        spatial = tuple(base.shape[1:-1])
        heads, head_dim = self.num_heads, self.dim // self.num_heads
        key_value_tokens = window_partition(base, self.window).flatten(1, -2)  # (B * nW, N, C)
        query_tokens = window_partition(queries_from, self.window).flatten(1, -2)
        windows, tokens, _ = key_value_tokens.shape
        query = self.query(query_tokens).reshape(windows, tokens, heads, head_dim).transpose(1, 2)
        key_value = self.key_value(key_value_tokens).reshape(windows, tokens, 2, heads, head_dim)
        key, value = key_value.permute(2, 0, 3, 1, 4)
        logits = (query * self.scale) @ key.transpose(-2, -1) + self.position_bias().unsqueeze(0)
        if any(self.shift):
            mask = shifted_window_mask(spatial, self.window, self.shift, device=base.device).to(logits.dtype)
            per_map = mask.shape[0]
            logits = (logits.reshape(-1, per_map, heads, tokens, tokens) + mask[None, :, None]).flatten(0, 1)
        attention = F.softmax(logits, dim=-1)
        out = (attention @ value).transpose(1, 2).reshape(windows, tokens, self.dim)
        out = self.proj(out)
        return window_reverse(out.reshape((windows,) + self.window + (self.dim,)), self.window, spatial)


def _conv(ndim: int, in_channels: int, out_channels: int, kernel_size: int, bias: bool) -> nn.Module:
    conv = (nn.Conv2d if ndim == 2 else nn.Conv3d)(in_channels, out_channels, kernel_size,
                                                   padding=kernel_size // 2, bias=bias)
    nn.init.normal_(conv.weight, 0.0, 1e-5)  # the authors' initialisation of every offset-network layer
    return conv


class DeformableWindowCrossAttention(WindowCrossAttention):
    """Deformable windowed multi-head cross-attention, DW-MCA (Eq. 2).

        ``dp = theta(x_b, x_r)``,  ``Q_r = WP(psi(x_r; p + dp)) U_q``,  ``[K_b, V_b] = WP(x_b) U_kv``,
        ``DW-MCA = softmax(Q_r K_b^T / sqrt(D_k) + B + M) V_b``

    ``theta`` is the offset network (see the module docstring), ``psi`` (tri/bi)linear interpolation of each head's
    channel group at its own offsets, zero outside the map. With zero offsets this is exactly the
    :class:`WindowCrossAttention` computation (same code; the resampling at voxel centres is the identity up to
    float round-off).

    Args:
        dim, num_heads, window, shift, qkv_bias: as in :class:`WindowCrossAttention`.
        offset_kernel_size: kernel of the two k x k offset convolutions (odd; the authors use 7, 5, 3 by stage).
        offset_scale: largest offset as a fraction of the feature-map size per axis (the authors' 0.5).
    """

    def __init__(self, dim: int, num_heads: int, window: Sequence[int], shift: Sequence[int] | None = None,
                 qkv_bias: bool = True, offset_kernel_size: int = 3, offset_scale: float = 0.5):
        super().__init__(dim, num_heads, window, shift, qkv_bias)
        if offset_kernel_size < 1 or offset_kernel_size % 2 == 0:
            raise ValueError(f"offset_kernel_size must be odd and positive, got {offset_kernel_size}")
        if not offset_scale > 0:
            raise ValueError(f"offset_scale must be > 0, got {offset_scale}")
        self.offset_scale = float(offset_scale)
        hidden, narrow = dim, max(dim // 2, 1)
        norm = nn.BatchNorm2d if self.ndim == 2 else nn.BatchNorm3d
        self.offset_net = nn.Sequential(
            _conv(self.ndim, 2 * dim, hidden, offset_kernel_size, bias=False), norm(hidden), nn.ReLU(),
            _conv(self.ndim, hidden, narrow, offset_kernel_size, bias=False), norm(narrow), nn.ReLU(),
            _conv(self.ndim, narrow, num_heads * self.ndim, 1, bias=True),
        )
        nn.init.zeros_(self.offset_net[-1].bias)

    def predict_offsets(self, base: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Offsets ``dp`` in voxels, ``(B, num_heads, ndim, *spatial)``, components in array-axis order.

        ``dp_{h,d} = tanh(theta([x_r, x_b])_{h * ndim + d}) * offset_scale * n_d``.
        """
        spatial = tuple(base.shape[1:-1])
        features = torch.cat([reference, base], dim=-1).movedim(-1, 1)
        raw = self.offset_net(features).reshape((base.shape[0], self.num_heads, self.ndim) + spatial)
        reach = torch.tensor([self.offset_scale * n for n in spatial], dtype=raw.dtype, device=raw.device)
        return torch.tanh(raw) * reach.view((1, 1, -1) + (1,) * self.ndim)

    def sample_reference(self, base: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The reference resampled per head at ``p + dp``, ``(B, *spatial, C)`` (``psi(x_r; p + dp)``)."""
        return resample_per_head(reference, self.predict_offsets(base, reference))


def resample_per_head(features: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Sample each head's channel group of a channels-last map at ``p + offsets``, (tri/bi)linearly, 0 outside.

    Args:
        features: ``(B, *spatial, C)``.
        offsets: ``(B, heads, ndim, *spatial)`` in voxels; head ``h`` owns channels ``h * C/heads ..``.

    Returns:
        ``(B, *spatial, C)``; ``out[b, p, c] = features[b, p + offsets[b, c // (C / heads), :, p], c]``.
    """
    batch, *spatial, channels = features.shape
    heads, ndim = offsets.shape[1], offsets.shape[2]
    if tuple(offsets.shape) != (batch, heads, len(spatial)) + tuple(spatial) or channels % heads:
        raise ValueError(f"offsets {tuple(offsets.shape)} do not fit features {tuple(features.shape)}")
    grouped = features.movedim(-1, 1).reshape([batch * heads, channels // heads] + spatial)
    sampled = warp(grouped, offsets.reshape([batch * heads, ndim] + spatial), "bilinear", "zeros")
    return sampled.reshape([batch, channels] + spatial).movedim(1, -1)
