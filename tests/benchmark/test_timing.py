"""Tests of nnunet_ext.benchmark.timing: memory readings, per-call timing and the JSON child runner."""
from __future__ import annotations

import sys

import pytest

from nnunet_ext.benchmark.timing import (
    ChildKilled,
    peak_memory_mb,
    peak_rss_mb,
    reset_peak_memory,
    rss_mb,
    run_json_child,
    time_calls,
)


def test_rss_readings_are_consistent():
    before = rss_mb()
    block = bytearray(64 * 2 ** 20)  # 64 MB, zero-filled: touched pages
    assert 0 < before <= peak_rss_mb()
    reset_peak_memory("cpu")  # no-op on CPU
    assert peak_memory_mb("cpu", before) >= 60
    del block


def test_time_calls_runs_warmup_then_times_each_repeat():
    calls = []
    seconds = time_calls(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and len(seconds) == 3 and all(s >= 0 for s in seconds)


def test_run_json_child_reads_the_last_stdout_line():
    assert run_json_child([sys.executable, "-c", "print('log line'); print('{\"a\": 1}')"]) == {"a": 1}


def test_run_json_child_failures_name_the_cause():
    with pytest.raises(RuntimeError, match="exit 3: boom"):
        run_json_child([sys.executable, "-c", "import sys; sys.stderr.write('trace\\nboom\\n'); sys.exit(3)"])
    with pytest.raises(ChildKilled, match="SIGKILL .likely out of memory"):
        run_json_child([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
