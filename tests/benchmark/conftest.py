"""Helpers of the benchmark tests: spec files, fake prepared datasets, a fixed code state."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from nnunet_ext.benchmark.datasets import DatasetInfo

CODE = {"commit": "a" * 40, "dirty": False, "diff_sha256": None}


def command_spec(name: str = "cmds", **extra) -> dict:
    """A spec of command rows only (runs in seconds, no nnU-Net)."""
    spec = {"name": name, "seeds": [0],
            "rows": [{"label": "one", "kind": "command", "command": "echo value=1", "extract": {"value": "value=(\\d+)"}},
                     {"label": "two", "kind": "command", "command": "echo value=2", "extract": {"value": "value=(\\d+)"}}]}
    spec.update(copy.deepcopy(extra))
    return spec


def write_spec(folder: Path, data: dict, name: str = "spec.yaml") -> Path:
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fake_datasets(tmp_path: Path, ids=(601, 602, 603)) -> dict[int, DatasetInfo]:
    out = {}
    for i in ids:
        folder = tmp_path / "raw" / f"Dataset{i:03d}_Fake"
        (folder / "imagesTs").mkdir(parents=True, exist_ok=True)
        out[i] = DatasetInfo(i, folder, f"fp{i}", "nnUNetPlansCPU", folder / "imagesTs", folder / "labelsTs")
    return out


@pytest.fixture
def code():
    return dict(CODE)
