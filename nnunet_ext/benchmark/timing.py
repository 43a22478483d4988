"""Small timing and peak-memory helpers shared by the speed/cost scripts of the methods (``ffpn.speed``,
``dca.cost``).

Conventions: a script measures each model in a fresh child process (:func:`run_json_child`), so one model's
allocations cannot hide another's. Peak memory (:func:`peak_memory_mb`) is, on CUDA,
``torch.cuda.max_memory_allocated`` since :func:`reset_peak_memory` (tensor bytes); on CPU, the peak resident set
size of the process (``ru_maxrss``) minus the resident size :func:`rss_mb` read before the model was built (weights,
inputs, activations and whatever the runtime allocated on the way, e.g. thread pools and allocator caches).
Only the standard library is imported here; torch is imported inside the functions that need it.
"""
from __future__ import annotations

import json
import resource
import signal
import subprocess
import time
from typing import Callable, Sequence


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux ``/proc``)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2 ** 20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far in MB (``ru_maxrss``, which Linux reports in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device: str) -> None:
    """Wait for queued CUDA work (no-op on CPU), so a clock read after it covers the work."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def reset_peak_memory(device: str) -> None:
    """Start a new CUDA peak (``torch.cuda.reset_peak_memory_stats``); no-op on CPU (``ru_maxrss`` cannot be reset,
    hence one child process per measurement)."""
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device: str, rss_before_mb: float) -> float:
    """Peak memory in MB: CUDA ``max_memory_allocated``; CPU ``ru_maxrss`` minus ``rss_before_mb`` (see module)."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2 ** 20
    return peak_rss_mb() - rss_before_mb


def time_calls(fn: Callable[[], object], warmup: int, repeats: int, device: str = "cpu") -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (CUDA synchronised per call)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


class ChildKilled(RuntimeError):
    """A measuring child process was killed by a signal (SIGKILL: usually the kernel's out-of-memory killer)."""


def run_json_child(cmd: Sequence[str]) -> dict:
    """Run ``cmd`` and return the JSON object on the last line of its stdout.

    Raises:
        ChildKilled: the child died from a signal (its name is in the message).
        RuntimeError: the child exited non-zero (the message ends with its last stderr line).
    """
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        hint = " (likely out of memory)" if name == "SIGKILL" else ""
        raise ChildKilled(f"{' '.join(cmd)}: killed by {name}{hint}")
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no stderr"])[-1]
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
