"""nnunet-ext demo: workspace safety (only its own earlier workspace is ever replaced) and one tiny end-to-end run."""
from __future__ import annotations

import json
import os

import pytest

from nnunet_ext import demo
from nnunet_ext.atomic import MARKER, write_marker
from nnunet_ext.cli import main

TINY = ["--cases", "5", "--test_cases", "1", "--epochs", "1", "--shape", "8", "32", "32", "-device", "cpu"]


@pytest.mark.parametrize("prepare", ["nnunet_root", "empty_dir", "file", "other_nnunet_ext_output"])
def test_foreign_workspace_is_refused_and_untouched(tmp_path, capsys, prepare):
    workspace = tmp_path / "ws"
    if prepare == "nnunet_root":
        (workspace / "nnUNet_raw" / "Dataset001_Mine").mkdir(parents=True)
        (workspace / "nnUNet_raw" / "Dataset001_Mine" / "dataset.json").write_text("{}")
    elif prepare == "empty_dir":
        workspace.mkdir()
    elif prepare == "file":
        workspace.write_text("not a folder")
    else:
        workspace.mkdir()
        write_marker(workspace, "nnunet-ext dkm synthesize-post")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert main(["demo", "--workspace", str(workspace), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was not created by nnunet-ext demo" in err[0]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("argv,message", [
    (["--cases", "4"], "--cases must be >= 5"), (["--test_cases", "0"], "--test_cases must be >= 1"),
    (["--epochs", "0"], "--epochs must be >= 1"), (["--shape", "4", "32", "32"], "--shape entries"),
    (["-device", "tpu"], "-device must be cpu, cuda or mps")])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, argv, message):
    assert main(["demo", "--workspace", str(tmp_path / "ws"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "ws").exists()


@pytest.mark.slow
def test_tiny_demo_runs_and_replaces_only_its_own_workspace(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("nnUNet_ext_iters", "2")  # the demo passes the schedule overrides on to nnUNetv2_train
    monkeypatch.setenv("nnUNet_ext_val_iters", "1")
    monkeypatch.setenv("nnUNet_ext_skip_final_validation", "1")  # the demo's report reads the test predictions only
    workspace = tmp_path / "demo"
    nnunet_settings = {name: value for name, value in os.environ.items() if name.startswith("nnUNet")}
    assert main(["demo", "--workspace", str(workspace), *TINY]) == 0
    # the demo's folders and settings were in force for its in-process steps only
    assert {name: value for name, value in os.environ.items() if name.startswith("nnUNet")} == nnunet_settings
    report = workspace / "report"
    assert (workspace / MARKER).is_file() and (report / "README.md").is_file()
    assert (report / "training_curve.png").is_file() and (report / "test_0000.png").is_file()
    first = json.loads((workspace / "demo_result.json").read_text())
    assert 0.0 <= first["demo_dice"] <= 1.0 and set(first["per_case_dice"]) == {"test_0000"}
    assert "mean foreground Dice" in capsys.readouterr().out

    # a second run replaces the first one's workspace (its own), leaving no temporary or old folders behind
    def second_run(workspace_tmp, *args):
        (workspace_tmp / "second").write_text("run 2")
        return {"demo_dice": 0.5}

    monkeypatch.setattr(demo, "run_demo", second_run)
    assert main(["demo", "--workspace", str(workspace), *TINY]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    assert sorted(p.name for p in workspace.iterdir()) == [MARKER, "second"]
