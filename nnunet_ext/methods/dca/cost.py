"""Time and peak memory of XMorpher's cross-attention, windowed self-attention and TM-DCA's deformable cross-attention
at equal feature size and channels (the paper's complexity argument, Sect. 2).

``python -m nnunet_ext.methods.dca.cost -o cost.json [--size Z Y X] [--dim 96] [--heads 8] [--window 5 6 7]
[--offset_kernel 7] [--device cpu|cuda] [--warmup 1] [--repeats 5] [--backward]``

The paper's claim: with ``N`` tokens per window and ``D`` channels, windowed attention costs ``O(N^2 D)`` per
window; XMorpher's search window, 3x the query window along each axis, makes it ``O(27 N^2 D)``, while the
deformable cross-attention keeps equal windows (``O(N^2 D)`` per direction, ``O(2 N^2 D)`` for TM-DCA's two). The
blocks, all on a ``(1, *size, dim)`` channels-last map per stream, no qkv bias (the authors' configs):

- ``xmorpher``: windowed cross-attention whose queries come from an ``N``-voxel window of the reference and whose
  keys/values come from the ``3^3 N`` base voxels of the 3 x 3 x 3 windows around it (:func:`search_windows`;
  XMorpher's ``window_area_partition`` + ``CrossWindowAttention3D``, ``models/XMorpher.py``): no relative position
  bias and no mask, keys/values outside the map are zero (XMorpher zero-pads the features; with its bias-free
  projection that is the same). One difference, in XMorpher's favour: XMorpher copies the 27 windows first and then
  projects every copy; here the map is projected once and the projected keys/values are copied, which gives the
  same result with 1/27 of the key/value projection work, so the measured ratios are conservative. (Roles as in
  :mod:`.attention`; XMorpher's code takes the queries from the stream being updated, at the same cost);
- ``self``: :class:`~.attention.WindowCrossAttention` with the same map as base and reference (``N`` keys);
- ``dca``: :class:`~.attention.DeformableWindowCrossAttention` (``N`` keys), offset network included: the dense
  ``k^3`` convolutions of the released code, ``k = 7`` at the 1/4-resolution stage (``--offset_kernel``).

Defaults: the first (1/4-resolution) stage of the paper's model on 160 x 192 x 224 volumes: a 40 x 48 x 56 map,
96 channels, 8 heads, 5 x 6 x 7 windows. Both streams are allocated for every block (a registration encoder holds
both); ``self`` attends within the base.

Measuring: each block runs in a fresh child process (:func:`nnunet_ext.benchmark.timing.run_json_child`). Time:
``warmup`` untimed calls, then the median of ``repeats`` timed calls, forward in ``torch.inference_mode`` (eval
mode), or with ``--backward`` forward plus the gradients of ``out.sum()`` w.r.t. the parameters and the inputs
(train mode). Peak memory (:func:`nnunet_ext.benchmark.timing.peak_memory_mb`): on CUDA
``torch.cuda.max_memory_allocated`` (tensor bytes); on CPU the growth of the child's peak resident set size
(``ru_maxrss``) over its resident size before the block and inputs were built, i.e. weights, inputs, activations
and runtime overhead (thread pools, allocator caches). A block that runs out of memory is reported with an
``error`` and ``null`` figures instead of stopping the run. The JSON also holds, per block, the keys per query, the
parameters and analytic multiply-accumulates of the attention products (``Q K^T`` and ``A V``) and of the offset
network, so measured and analytic ratios can be compared.

What to expect at the defaults (analytic, batch 1): XMorpher's attention products take 117 G multiply-accumulates
(5670 keys per query) against 4.3 G for ``self`` and ``dca``, and its attention matrix alone holds
512 windows x 8 heads x 210 x 5670 floats = 18.2 GiB (twice that with the logits and the softmax both alive; on a
CPU the child may be killed, which is reported). The 27x claim leaves out the offset network: with the released
code's dense 7^3 convolutions it costs 850 G multiply-accumulates at this stage (67 G with ``--offset_kernel 3``),
so ``dca`` saves memory but need not save time against ``xmorpher``.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import statistics
import sys
from pathlib import Path
from typing import Sequence

from nnunet_ext.benchmark.timing import (
    ChildKilled,
    peak_memory_mb,
    reset_peak_memory,
    rss_mb,
    run_json_child,
    time_calls,
)
from nnunet_ext.cli import run_module_cli
from nnunet_ext.errors import UserInputError

PROG = "python -m nnunet_ext.methods.dca.cost"
BLOCKS = ("xmorpher", "self", "dca")
SEARCH = 3  # XMorpher's search window: 3x the query window along every axis (alpha = beta = gamma = 3)


def search_windows(x, window: Sequence[int], search: int = SEARCH):
    """The search region of every window: the ``search^ndim`` windows centred on it, zero outside the map.

    Args:
        x: ``(B, *spatial, C)`` channels-last tensor; every spatial size a multiple of the window.
        window: window size per spatial axis.
        search: odd number of windows per axis in a region (XMorpher: 3).

    Returns:
        ``(B * num_windows, search^ndim * N, C)`` with ``N = prod(window)``; windows in the order of
        :func:`~.attention.window_partition`, tokens of a region in row-major order.
    """
    import torch.nn.functional as F

    window = tuple(int(w) for w in window)
    ndim, channels = len(window), x.shape[-1]
    if search < 1 or search % 2 == 0:
        raise ValueError(f"search must be odd and positive, got {search}")
    if x.dim() != ndim + 2 or any(n % w for n, w in zip(x.shape[1:-1], window)):
        raise ValueError(f"expected (B, *spatial, C) with spatial a multiple of {window}, got {tuple(x.shape)}")
    pad = []
    for w in reversed(window):  # F.pad lists the last axis first
        pad += [(search // 2) * w] * 2
    regions = F.pad(x.movedim(-1, 1), pad)  # (B, C, *padded)
    for d, w in enumerate(window):  # each unfold turns axis 2 + d into the window grid and appends the region axis
        regions = regions.unfold(2 + d, search * w, w)
    order = [0] + list(range(2, 2 + 2 * ndim)) + [1]  # (B, *grid, *region, C)
    return regions.permute(order).reshape(-1, search ** ndim * math.prod(window), channels)


@functools.lru_cache(maxsize=None)
def search_window_cross_attention_class() -> type:
    """:class:`SearchWindowCrossAttention`, defined on first use so that importing this module does not import torch.

    ``SearchWindowCrossAttention(dim, num_heads, window, search=3, qkv_bias=False)`` is
    :class:`~.attention.WindowCrossAttention` (same projections, same ``forward(base, reference)``) whose keys and
    values come from the ``search^ndim`` base windows around each query window (XMorpher's cross-attention):

        ``Q = WP(x_r)_w U_q,  [K, V] = S(x_b U_kv)_w,  out_w = softmax(Q K^T / sqrt(C / heads)) V U_o``

    with ``S`` :func:`search_windows`; no relative position bias, no shift, no mask.
    """
    import torch.nn.functional as F

    from nnunet_ext.methods.dca.attention import WindowCrossAttention, window_partition, window_reverse

    class SearchWindowCrossAttention(WindowCrossAttention):
        """XMorpher's windowed cross-attention: keys/values from the ``search^ndim`` windows around each query
        window (see :func:`search_window_cross_attention_class`)."""

        def __init__(self, dim: int, num_heads: int, window: Sequence[int], search: int = SEARCH,
                     qkv_bias: bool = False):
            super().__init__(dim, num_heads, window, None, qkv_bias)
            if search < 1 or search % 2 == 0:
                raise ValueError(f"search must be odd and positive, got {search}")
            self.search = int(search)
            self.position_bias = None  # XMorpher has none

        @property
        def keys_per_query(self) -> int:
            return self.search ** self.ndim * math.prod(self.window)

        def _query_key_value(self, base, queries_from):
            heads, head_dim = self.num_heads, self.dim // self.num_heads
            query_tokens = window_partition(queries_from, self.window).flatten(1, -2)  # (B * nW, N, C)
            key_value = search_windows(self.key_value(base), self.window, self.search)  # (B * nW, K, 2 C)
            windows, tokens, _ = query_tokens.shape
            query = self.query(query_tokens).reshape(windows, tokens, heads, head_dim).transpose(1, 2)
            key, value = key_value.reshape(windows, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
            return query, key, value

        def attention_weights(self, base, reference):
            """Softmax attention, ``(B * num_windows, heads, N, search^ndim * N)``: one row per query."""
            self._check_inputs(base, reference)
            query, key, _ = self._query_key_value(base, reference)
            return F.softmax((query * self.scale) @ key.transpose(-2, -1), dim=-1)

        def _attend(self, base, queries_from):
            query, key, value = self._query_key_value(base, queries_from)
            attention = F.softmax((query * self.scale) @ key.transpose(-2, -1), dim=-1)
            windows, _, tokens, _ = query.shape
            out = self.proj((attention @ value).transpose(1, 2).reshape(windows, tokens, self.dim))
            return window_reverse(out.reshape((windows,) + self.window + (self.dim,)), self.window,
                                  tuple(base.shape[1:-1]))

    return SearchWindowCrossAttention


def build_block(name: str, dim: int, heads: int, window: Sequence[int], offset_kernel: int = 7):
    """The attention block ``name`` (one of :data:`BLOCKS`), without qkv bias (the authors' configs)."""
    from nnunet_ext.methods.dca.attention import DeformableWindowCrossAttention, WindowCrossAttention

    if name == "xmorpher":
        return search_window_cross_attention_class()(dim, heads, window, SEARCH, qkv_bias=False)
    if name == "self":
        return WindowCrossAttention(dim, heads, window, qkv_bias=False)
    if name == "dca":
        return DeformableWindowCrossAttention(dim, heads, window, qkv_bias=False, offset_kernel_size=offset_kernel)
    raise ValueError(f"unknown block {name!r}; choose one of {BLOCKS}")


def analytic_macs(block, spatial: Sequence[int], batch: int = 1) -> dict:
    """Multiply-accumulates of one forward: ``attention`` = ``Q K^T`` and ``A V`` (``2 * voxels * K * C`` with ``K``
    keys per query), ``offset_net`` = the offset network's convolutions (stride 1, same padding)."""
    from torch import nn

    voxels = batch * math.prod(spatial)
    keys = getattr(block, "keys_per_query", math.prod(block.window))
    convs = [m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    return {"keys_per_query": keys, "attention_macs": 2 * voxels * keys * block.dim,
            "offset_net_macs": voxels * sum(m.weight.numel() for m in convs)}


def measure(name: str, size: Sequence[int], dim: int, heads: int, window: Sequence[int], offset_kernel: int = 7,
            device: str = "cpu", warmup: int = 1, repeats: int = 5, backward: bool = False) -> dict:
    """Time and peak memory of block ``name`` in this process (the CLI calls it in a fresh child per block).

    Returns:
        ``seconds`` (every timed call), ``seconds_median``, ``peak_mem_mb`` (see the module docstring),
        ``parameters``, ``threads``, and :func:`analytic_macs`.
    """
    import torch

    search_window_cross_attention_class()  # imports the attention module before the memory baseline, as torch
    torch.manual_seed(0)
    reset_peak_memory(device)
    before = rss_mb()
    block = build_block(name, dim, heads, window, offset_kernel).to(device)
    base, reference = (torch.randn((1, *size, dim), device=device, requires_grad=backward) for _ in range(2))
    if name == "self":
        inputs, streams = (base,), (base, base)
    else:
        inputs, streams = (base, reference), (base, reference)
    if backward:
        block.train()
        wrt = list(block.parameters()) + list(inputs)

        def call():
            return torch.autograd.grad(block(*streams).sum(), wrt)

        seconds = time_calls(call, warmup, repeats, device)
    else:
        block.eval()
        with torch.inference_mode():
            seconds = time_calls(lambda: block(*streams), warmup, repeats, device)
    return {"seconds": seconds, "seconds_median": statistics.median(seconds),
            "peak_mem_mb": peak_memory_mb(device, before), "parameters": sum(p.numel() for p in block.parameters()),
            "threads": torch.get_num_threads(), **analytic_macs(block, size)}


def _measure_or_oom(args: argparse.Namespace) -> dict:
    """:func:`measure` for the child; running out of memory is a result (``error``), anything else a bug."""
    import torch

    try:
        return measure(args.block, args.size, args.dim, args.heads, args.window, args.offset_kernel, args.device,
                       args.warmup, args.repeats, args.backward)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, torch.OutOfMemoryError) and "can't allocate memory" not in str(exc):
            raise
        return {"error": f"out of memory: {' '.join(str(exc).split())[:200]}"}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", required=True, help="output JSON")
    parser.add_argument("--size", type=int, nargs=3, default=[40, 48, 56], metavar=("Z", "Y", "X"),
                        help="feature-map size (default 40 48 56: the 1/4-resolution stage of 160 x 192 x 224)")
    parser.add_argument("--dim", type=int, default=96, help="channels (default 96)")
    parser.add_argument("--heads", type=int, default=8, help="attention heads (default 8)")
    parser.add_argument("--window", type=int, nargs=3, default=[5, 6, 7], metavar=("Z", "Y", "X"),
                        help="query window (default 5 6 7); XMorpher's key window is 3x along every axis")
    parser.add_argument("--offset_kernel", type=int, default=7,
                        help="kernel of the DCA offset convolutions (default 7: the paper's 1/4-resolution stage)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the median is reported (default 5)")
    parser.add_argument("--backward", action="store_true", help="time forward + backward instead of forward")
    parser.add_argument("--block", choices=BLOCKS, help=argparse.SUPPRESS)  # one block, in a child process


def check_args(args: argparse.Namespace) -> None:
    """Raise a one-line :class:`UserInputError` for options the blocks cannot run with."""
    if min(args.size) < 1 or min(args.window) < 1:
        raise UserInputError(f"--size {args.size} and --window {args.window} must be positive")
    if any(n % w for n, w in zip(args.size, args.window)):
        raise UserInputError(f"--size {args.size} must be a multiple of --window {args.window} along every axis")
    if args.dim < 1 or args.heads < 1 or args.dim % args.heads:
        raise UserInputError(f"--heads ({args.heads}) must be positive and divide --dim ({args.dim})")
    if args.offset_kernel < 1 or args.offset_kernel % 2 == 0:
        raise UserInputError(f"--offset_kernel must be odd and positive, got {args.offset_kernel}")
    if args.warmup < 0 or args.repeats < 1:
        raise UserInputError(f"--warmup must be >= 0 and --repeats >= 1, got {args.warmup} and {args.repeats}")
    if Path(args.o).is_dir():
        raise UserInputError(f"-o {args.o} is a folder; give a JSON file path")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserInputError("--device cuda: no CUDA device is available on this machine (use --device cpu)")


def _environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "device": device, "device_name": platform.processor() or platform.machine()}
    if device == "cuda":
        env["device_name"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    return env


def _ratio(results: dict, name: str, key: str):
    a, b = results[name].get(key), results["xmorpher"].get(key)
    return a / b if a is not None and b else None


def run(args: argparse.Namespace) -> int:
    """Measure every block in a child process, print one line each, write the JSON."""
    from nnunet_ext.atomic import atomic_output_file

    check_args(args)
    if args.block:
        print(json.dumps(_measure_or_oom(args)))
        return 0
    results = {}
    for name in BLOCKS:
        cmd = [sys.executable, "-m", "nnunet_ext.methods.dca.cost", "-o", args.o, "--block", name,
               "--size", *map(str, args.size), "--dim", str(args.dim), "--heads", str(args.heads),
               "--window", *map(str, args.window), "--offset_kernel", str(args.offset_kernel),
               "--device", args.device, "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
        try:
            results[name] = run_json_child(cmd + (["--backward"] if args.backward else []))
        except ChildKilled as exc:
            results[name] = {"error": str(exc)}
        for key in ("seconds_median", "peak_mem_mb"):
            results[name].setdefault(key, None)
        r = results[name]
        line = r.get("error") or f"{r['seconds_median']:.4f} s, peak {r['peak_mem_mb']:.1f} MB, " \
                                 f"{r['keys_per_query']} keys per query"
        print(f"{name}: {line}")
    summary = {
        "dca_time_ratio_vs_xmorpher": _ratio(results, "dca", "seconds_median"),
        "dca_mem_ratio_vs_xmorpher": _ratio(results, "dca", "peak_mem_mb"),
        "self_time_ratio_vs_xmorpher": _ratio(results, "self", "seconds_median"),
        "self_mem_ratio_vs_xmorpher": _ratio(results, "self", "peak_mem_mb"),
        "blocks": results,
        "settings": {"size": args.size, "dim": args.dim, "heads": args.heads, "window": args.window,
                     "search": SEARCH, "offset_kernel": args.offset_kernel, "batch": 1, "qkv_bias": False,
                     "device": args.device, "warmup": args.warmup, "repeats": args.repeats,
                     "mode": "forward+backward" if args.backward else "forward"},
        "memory": ("torch.cuda.max_memory_allocated in a fresh process per block, MB" if args.device == "cuda" else
                   "growth of peak RSS (ru_maxrss) over RSS before building, fresh process per block, MB"),
        "environment": _environment(args.device),
    }
    with atomic_output_file(args.o) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_module_cli(PROG, __doc__, configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
