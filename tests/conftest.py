"""Shared fixtures: seeded RNGs, single-threaded torch, and isolated nnU-Net folders."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nnunet_ext.pipeline import prediction_workers
from tests.warm_launcher import env_mismatch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# nnUNetv2_predict's worker options on CPU, as nnunet-ext's pipeline passes them (sequential, no spawned workers);
# test_integration_nnunet also runs the spawned-worker mode and checks that both export the same probabilities
PREDICT_ON_CPU = tuple(prediction_workers("cpu"))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    np.random.seed(0)
    try:
        import torch
        torch.manual_seed(0)
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch):
    """nnU-Net paths and the fast CPU settings, as ``nnunet-ext env`` exports them, inside ``tmp_path``."""
    from nnunet_ext.env import environment

    env = environment(tmp_path / "ws", keep_existing=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[k]).mkdir(parents=True, exist_ok=True)
    return env


def tiny_schedule_env(workspace: Path, final_validation: bool = False) -> dict:
    """This process's environment plus nnU-Net folders under ``workspace`` and the integration tests' schedule:
    1 epoch x 2 iterations, 1 validation iteration, nnU-Net's final validation only where a test reads it."""
    from nnunet_ext.env import environment

    env = {**os.environ, **environment(Path(workspace), keep_existing=False), "nnUNet_ext_epochs": "1",
           "nnUNet_ext_iters": "2", "nnUNet_ext_val_iters": "1"}
    if not final_validation:
        env["nnUNet_ext_skip_final_validation"] = "1"
    return env


def shared_data(sub: str) -> Path:
    """Path into ../shared/data, skipping the test (with the reason) when the folder is absent."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (CI clones shared/ beside the repo)")
    return path


def tree_hash(root: Path) -> str:
    """Digest of every path name and file byte under ``root``: equal before and after means nothing was touched."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def nnunet_bin(name: str) -> str:
    """An nnU-Net (or nnunet-ext) console script of the running environment."""
    return str(Path(sys.executable).parent / name)


class WarmLauncher:
    """Client of ``tests/warm_launcher.py``: one launcher per test process (each xdist worker), started by the first
    command with that command's environment, and restarted when a command's environment differs from it where
    imports may read it. Variables do change under a running test session: importing MONAI sets
    ``CUBLAS_WORKSPACE_CONFIG`` in this process, and later commands inherit it."""

    def __init__(self):
        import atexit
        import threading

        self._proc: subprocess.Popen | None = None
        self._env: dict = {}
        self._lock = threading.Lock()  # one request/answer exchange at a time
        self.starts = 0
        self.last_refusal: str | None = None
        atexit.register(self.close)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def _start(self, env) -> subprocess.Popen:
        self.close()
        self._env = dict(env)
        self._proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("warm_launcher.py"))],
                                      env=self._env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout.readline().strip() == "ready", "tests/warm_launcher.py did not start"
        self.starts += 1
        return self._proc

    @staticmethod
    def runs_warm(cmd) -> bool:
        """Console scripts of this environment (a Python shebang naming this interpreter's folder)."""
        script = Path(str(cmd[0]))
        if script.parent != Path(sys.executable).parent or not script.is_file():
            return False
        with open(script, "rb") as handle:
            first = handle.readline()
        return first.startswith(b"#!") and Path(first[2:].decode().strip()).parent == script.parent

    def run(self, cmd, env, cwd, scratch: Path) -> subprocess.CompletedProcess | None:
        """``cmd`` run warm, or None if the launcher refuses it (``last_refusal`` says why; the caller then runs it
        as a subprocess)."""
        out, err = scratch / "stdout", scratch / "stderr"
        with self._lock:
            proc = self._proc
            if proc is None or env_mismatch(dict(env), self._env) is not None:
                proc = self._start(env)
            proc.stdin.write(json.dumps({"argv": list(cmd), "env": dict(env), "cwd": str(cwd), "stdout": str(out),
                                         "stderr": str(err)}) + "\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())
        if "refused" in answer:
            self.last_refusal = answer["refused"]
            return None
        proc = subprocess.CompletedProcess(list(cmd), answer["returncode"], out.read_text(), err.read_text())
        proc.warm = True  # tests that compare warm and plain runs check it
        return proc


_WARM = WarmLauncher()


def run_command(cmd, env, cwd, ok: bool = True, warm: bool = True) -> subprocess.CompletedProcess:
    """Run a command (items stringified); with ``ok``, fail the test with the output tails if it fails.

    With ``warm`` (default), a console script of this environment runs in a process forked from the pre-imported
    ``tests/warm_launcher.py`` (same script, argv, environment and directory; ~10 s less import time per command);
    ``warm=False`` runs the installed command as a plain subprocess, as test_integration_nnunet does throughout.
    The result's ``warm`` attribute says which way it ran.
    """
    cmd = [str(c) for c in cmd]
    proc = None
    if warm and os.environ.get("NNUNET_EXT_TESTS_COLD") != "1" and _WARM.runs_warm(cmd):
        with tempfile.TemporaryDirectory(prefix="warm_") as scratch:
            proc = _WARM.run(cmd, env, cwd, Path(scratch))
    if proc is None:
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
        proc.warm = False
    if ok:
        assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


class _ReadyResult:
    def __init__(self, value):
        self._value = value

    def ready(self) -> bool:
        return True

    def get(self, timeout=None):
        return self._value


class InProcessPool:
    """Stand-in for ``multiprocessing`` pools: nnU-Net's fingerprinting and preprocessing code runs unchanged, in
    this process (a spawn pool costs ~2.5 s per use on 2 cores; the suite would spend half its budget there)."""

    _pool: list = []  # nnU-Net polls its workers' liveness: no workers, nothing dead

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def starmap(self, function, arguments):
        return [function(*a) for a in arguments]

    def starmap_async(self, function, arguments):
        return _ReadyResult(self.starmap(function, arguments))


@pytest.fixture
def verify_with_nnunet(monkeypatch, capsys):
    """nnU-Net's ``verify_dataset_integrity`` run in-process; its printed geometry warnings count as failures."""
    from nnunetv2.experiment_planning import verify_dataset_integrity as vdi

    monkeypatch.setattr(vdi, "multiprocessing", SimpleNamespace(
        get_context=lambda method: SimpleNamespace(Pool=InProcessPool)))

    def check(folder: Path) -> None:
        vdi.verify_dataset_integrity(str(folder), num_processes=1)
        printed = capsys.readouterr().out
        assert "mismatch" not in printed and "Error:" not in printed, printed

    return check
