"""Shared fixtures: seeded RNGs, single-threaded torch, and isolated nnU-Net folders."""
from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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


def shared_data(sub: str) -> Path:
    """Path into ../shared/data, skipping the test (with the reason) when the folder is absent."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (CI clones shared/ beside the repo)")
    return path


class _InProcessPool:
    """Stand-in for multiprocessing's spawn pool: nnU-Net's checks run unchanged, without spawning workers."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def starmap(self, function, arguments):
        return list(itertools.starmap(function, arguments))


@pytest.fixture
def verify_with_nnunet(monkeypatch, capsys):
    """nnU-Net's ``verify_dataset_integrity`` run in-process; its printed geometry warnings count as failures."""
    from nnunetv2.experiment_planning import verify_dataset_integrity as vdi

    monkeypatch.setattr(vdi, "multiprocessing", SimpleNamespace(
        get_context=lambda method: SimpleNamespace(Pool=_InProcessPool)))

    def check(folder: Path) -> None:
        vdi.verify_dataset_integrity(str(folder), num_processes=1)
        printed = capsys.readouterr().out
        assert "mismatch" not in printed and "Error:" not in printed, printed

    return check
