"""Dataset fingerprints and once-per-study preparation (planning replaced by a fake: the end-to-end test plans for
real)."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from nnunet_ext.benchmark import datasets as ds
from nnunet_ext.benchmark.spec import parse_spec
from nnunet_ext.errors import UserInputError

SYNTH = {"kind": "breast_dce", "cases": 2, "test_cases": 1, "seed": 0, "options": {"shape": [8, 16, 16]},
         "pre_only_id": None, "labeled_cases": None, "name": None}


def test_synth_fingerprint_follows_parameters_and_code(monkeypatch, tmp_path):
    fp = ds.synth_fingerprint(SYNTH)
    assert fp == ds.synth_fingerprint(copy.deepcopy(SYNTH))
    assert fp != ds.synth_fingerprint({**SYNTH, "seed": 1})
    assert fp != ds.synth_fingerprint({**SYNTH, "options": {"shape": [8, 16, 17]}})
    extra = ds.PACKAGE / "synth" / "breast_dce.py"
    monkeypatch.setattr(ds, "synth_code_files", lambda: [extra])
    assert ds.synth_fingerprint(SYNTH) != fp                     # other code, other fingerprint


def _dataset(folder: Path, name="Dataset777_User") -> Path:
    d = folder / name
    (d / "imagesTr").mkdir(parents=True)
    (d / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "x": 1}}))
    (d / "imagesTr" / "a_0000.nii.gz").write_bytes(b"abc")
    return d


def test_folder_fingerprint_reads_content_and_reuses_unchanged_stat(tmp_path):
    d = _dataset(tmp_path)
    digest, stat = ds.folder_fingerprint(d)
    (d / ".nnunet_ext_output").write_text("marker with a date")  # hidden: ignored
    assert ds.folder_fingerprint(d)[0] == digest
    assert ds.folder_fingerprint(d, {"stat": stat, "sha256": "cached"})[0] == "cached"
    (d / "imagesTr" / "a_0000.nii.gz").write_bytes(b"abd")
    new_digest, new_stat = ds.folder_fingerprint(d, {"stat": stat, "sha256": digest})
    assert new_digest != digest and new_stat != stat


@pytest.fixture
def fake_planning(monkeypatch):
    """Replace the planning subprocess: write the plans file nnU-Net would write, count the calls."""
    calls = []

    def run(cmd, env, log, what):
        calls.append(cmd)
        if "plan_and_preprocess" in cmd:
            ids = cmd[cmd.index("-d") + 1:cmd.index("-pl")]
            for i in ids:
                folder = ds.dataset_folder(Path(env["nnUNet_raw"]), int(i))
                target = Path(env["nnUNet_preprocessed"]) / folder.name
                target.mkdir(parents=True, exist_ok=True)
                (target / "nnUNetPlansCPU.json").write_text("{}")
            return "plans identifier: nnUNetPlansCPU\n"
        if "derive" in what:
            folder = Path(env["nnUNet_raw"]) / f"Dataset{cmd[-1]}_Derived"
            folder.mkdir(parents=True)
            (folder / "dataset.json").write_text(json.dumps({"args": cmd}))
            return ""
        if "convert" in cmd:
            folder = Path(env["nnUNet_raw"]) / f"Dataset{cmd[cmd.index('-d') + 1]}_Converted"
            folder.mkdir(parents=True)
            (folder / "dataset.json").write_text(json.dumps({"args": cmd}))
            return ""
        raise AssertionError(cmd)

    monkeypatch.setattr(ds, "_run", run)
    return calls


def test_existing_dataset_is_linked_read_only_and_planned_once(tmp_path, fake_planning):
    user_raw = tmp_path / "user_raw"
    source = _dataset(user_raw)
    before = sorted(p.relative_to(user_raw) for p in user_raw.rglob("*"))
    spec = parse_spec({"name": "e", "datasets": [{"existing": 777, "raw": str(user_raw)}],
                       "rows": [{"label": "a", "trainer": "T", "dataset": 777}]})
    infos = ds.prepare_datasets(spec, tmp_path / "wd", log=lambda m: None)
    link = tmp_path / "wd" / "nnUNet_raw" / source.name
    assert link.is_symlink() and link.resolve() == source.resolve()
    assert infos[777].plans == "nnUNetPlansCPU" and infos[777].test_images == link / "imagesTs"
    assert sorted(p.relative_to(user_raw) for p in user_raw.rglob("*")) == before   # user's folder untouched
    assert len(fake_planning) == 1
    again = ds.prepare_datasets(spec, tmp_path / "wd", log=lambda m: None)
    assert len(fake_planning) == 1 and again[777].fingerprint == infos[777].fingerprint
    (source / "imagesTr" / "a_0000.nii.gz").write_bytes(b"changed data")
    changed = ds.prepare_datasets(spec, tmp_path / "wd", log=lambda m: None)
    assert len(fake_planning) == 2 and changed[777].fingerprint != infos[777].fingerprint


def test_existing_dataset_missing_is_one_line_error(tmp_path, fake_planning):
    spec = parse_spec({"name": "e", "datasets": [{"existing": 778, "raw": str(tmp_path)}],
                       "rows": [{"label": "a", "trainer": "T", "dataset": 778}]})
    with pytest.raises(UserInputError, match=r"^datasets\[0\]: existing dataset 778: no Dataset778_\* in"):
        ds.prepare_datasets(spec, tmp_path / "wd", log=lambda m: None)


def test_synth_dataset_written_once_and_rewritten_when_parameters_change(tmp_path, fake_planning):
    data = {"name": "s", "datasets": [{"synth": "breast_dce", "id": 601, "cases": 2, "test_cases": 1,
                                       "shape": [8, 16, 16], "pre_only_id": 602, "labeled_cases": 1}],
            "rows": [{"label": "a", "trainer": "T", "dataset": 602}]}
    infos = ds.prepare_datasets(parse_spec(copy.deepcopy(data)), tmp_path / "wd", log=lambda m: None)
    assert set(infos) == {601, 602} and infos[601].fingerprint != infos[602].fingerprint
    written = infos[602].folder / "dataset.json"
    mtime = written.stat().st_mtime_ns
    assert json.loads(written.read_text())["paired_dce_dataset"] == infos[601].folder.name
    again = ds.prepare_datasets(parse_spec(copy.deepcopy(data)), tmp_path / "wd", log=lambda m: None)
    assert written.stat().st_mtime_ns == mtime and len(fake_planning) == 1
    assert again[602].fingerprint == infos[602].fingerprint
    data["datasets"][0]["seed"] = 5
    changed = ds.prepare_datasets(parse_spec(copy.deepcopy(data)), tmp_path / "wd", log=lambda m: None)
    assert changed[602].fingerprint != infos[602].fingerprint and len(fake_planning) == 2
    assert json.loads((changed[601].folder / "dataset.json").read_text())["synth"]["seed"] == 5


def test_converter_is_called_as_a_subprocess_with_the_ids(tmp_path, fake_planning):
    data = {"name": "c", "datasets": [{"convert": "dce_nifti_folder", "id": 621, "args": ["-i", "/src"]}],
            "rows": [{"label": "a", "trainer": "T", "dataset": 621}]}
    infos = ds.prepare_datasets(parse_spec(copy.deepcopy(data)), tmp_path / "wd", log=lambda m: None)
    convert = fake_planning[0]
    assert convert[0].endswith("nnunet-ext") and convert[1:] == ["convert", "dce_nifti_folder", "-i", "/src", "-d",
                                                                 "621"]
    ds.prepare_datasets(parse_spec(copy.deepcopy(data)), tmp_path / "wd", log=lambda m: None)
    assert sum("convert" in c for c in fake_planning) == 1                # same arguments: not converted again
    data["datasets"][0]["args"] = ["-i", "/other"]
    again = ds.prepare_datasets(parse_spec(copy.deepcopy(data)), tmp_path / "wd", log=lambda m: None)
    assert sum("convert" in c for c in fake_planning) == 2 and again[621].fingerprint != infos[621].fingerprint
    assert os.path.isdir(again[621].folder)


def test_derived_dataset_runs_its_command_after_its_inputs_and_reruns_when_they_change(tmp_path, fake_planning):
    data = {"name": "d", "datasets": [
        {"synth": "breast_dce", "id": 631, "cases": 1, "test_cases": 0, "shape": [8, 16, 16]},
        {"derive": "{bin}/nnunet-ext hcnet cluster -d 631 -o {id}", "from": [631], "id": 632}],
        "rows": [{"label": "a", "trainer": "T", "dataset": 632}]}
    infos = ds.prepare_datasets(parse_spec(copy.deepcopy(data)), tmp_path / "wd", log=lambda m: None)
    derive = next(c for c in fake_planning if "cluster" in c)
    assert derive[0].endswith("nnunet-ext") and derive[1:] == ["hcnet", "cluster", "-d", "631", "-o", "632"]
    assert fake_planning.index(derive) > 0  # after the input dataset was written and planned
    ds.prepare_datasets(parse_spec(copy.deepcopy(data)), tmp_path / "wd", log=lambda m: None)
    assert sum("cluster" in c for c in fake_planning) == 1                 # nothing changed: not derived again
    data["datasets"][0]["seed"] = 3                                          # the input changes: derived again
    again = ds.prepare_datasets(parse_spec(copy.deepcopy(data)), tmp_path / "wd", log=lambda m: None)
    assert sum("cluster" in c for c in fake_planning) == 2 and 632 in again and 632 in infos


@pytest.mark.parametrize("entry, message", [
    ({"derive": "make {id}", "from": [9], "id": 632}, r"datasets\[1\]\.from: dataset\(s\) 9 must be declared"),
    ({"derive": "make it", "id": 632}, r"datasets\[1\]\.derive must write dataset \{id\}"),
])
def test_derived_dataset_spec_errors(entry, message):
    data = {"name": "d", "datasets": [{"synth": "breast_dce", "id": 631, "cases": 1}, entry],
            "rows": [{"label": "a", "trainer": "T", "dataset": 632}]}
    with pytest.raises(UserInputError, match=message):
        parse_spec(data)
