"""Job expansion, keys, placeholders, the resume state and running one command job."""
from __future__ import annotations

import copy
import json
import math

import pytest
import yaml

from nnunet_ext.benchmark import jobs as jobs_module
from nnunet_ext.benchmark.jobs import (FAILED, FINISHED, job_state, plan_jobs, read_job_record, retire, run_job,
                                       slug, write_payload)
from nnunet_ext.benchmark.spec import parse_spec
from nnunet_ext.errors import UserInputError

from .conftest import CODE, fake_datasets

SPEC = {
    "name": "k",
    "datasets": [{"synth": "breast_dce", "id": 601, "cases": 5, "pre_only_id": 602, "labeled_cases": 3},
                 {"synth": "breast_dce", "id": 603, "cases": 3}],
    "folds": [0, 1], "seeds": [0, 1], "baseline": "base",
    "rows": [
        {"label": "DM", "trainer": "DKMDiffusionTrainer_small", "dataset": 601, "folds": "all", "predict": False},
        {"label": "base", "trainer": "DemoTrainer", "dataset": 602, "ensemble": True},
        {"label": "dkm", "trainer": "DKMTrainer_small", "dataset": 602, "requires": ["DM"],
         "env": {"nnUNet_ext_dkm_dm_checkpoint": "{checkpoint:DM}"}, "schedule": {"epochs": 3}},
        {"label": "analysis", "kind": "command", "requires": ["DM"], "env": {"nnUNet_results": "{results:DM}"},
         "command": "run {dataset:601}/imagesTs {job_dir} {seed}", "json": "{job_dir}/a.json"},
    ],
}


def _plan(tmp_path, data=None, code=CODE, device="cpu"):
    spec = parse_spec(copy.deepcopy(data or SPEC))
    return {j.id: j for j in plan_jobs(spec, tmp_path / "wd", fake_datasets(tmp_path), device, code)}


def test_expansion_rows_folds_seeds_and_ensemble(tmp_path):
    jobs = _plan(tmp_path)
    by_label = {}
    for job in jobs.values():
        by_label.setdefault(job.label, []).append(job)
    assert {label: len(js) for label, js in by_label.items()} == {
        "DM": 2, "base": 4, "base (ensemble)": 2, "dkm": 4, "analysis": 2}
    ensemble = next(j for j in by_label["base (ensemble)"] if j.seed == 1)
    members = [jobs[i] for i in ensemble.requires]
    assert sorted(m.fold for m in members) == [0, 1] and {m.seed for m in members} == {1}
    assert ensemble.payload["members"] == {str(m.fold): str(m.dir) for m in members}
    dkm = next(j for j in by_label["dkm"] if j.seed == 1 and j.fold == 0)
    dm = jobs[dkm.requires[0]]
    assert dm.label == "DM" and dm.seed == 1 and dm.fold == "all"
    # order: every job comes after the jobs it requires
    order = list(jobs)
    assert all(order.index(r) < order.index(j.id) for j in jobs.values() for r in j.requires)


def test_placeholders_and_environment(tmp_path):
    jobs = _plan(tmp_path)
    dkm = next(j for j in jobs.values() if j.label == "dkm" and j.seed == 1 and j.fold == 0)
    dm = jobs[dkm.requires[0]]
    env = dkm.payload["env"]
    assert env["nnUNet_ext_dkm_dm_checkpoint"] == str(
        dm.dir / "nnUNet_results" / "Dataset601_Fake" / "DKMDiffusionTrainer_small__nnUNetPlansCPU__3d_fullres" /
        "fold_all" / "checkpoint_final.pth")
    assert env["nnUNet_ext_seed"] == "1" and env["nnUNet_ext_epochs"] == "3"
    assert env["nnUNet_results"] == str(dkm.dir / "nnUNet_results")      # one results folder per job
    assert env["nnUNet_raw"].startswith(str(tmp_path / "wd"))            # the study's own workspace
    assert env["nnUNet_ext_deterministic"] == "1"
    analysis = next(j for j in jobs.values() if j.label == "analysis" and j.seed == 0)
    assert analysis.payload["command"] == f"run {tmp_path}/raw/Dataset601_Fake/imagesTs {analysis.dir} 0"
    assert analysis.payload["env"]["nnUNet_results"] == str(jobs[analysis.requires[0]].dir / "nnUNet_results")
    assert analysis.payload["json"] == f"{analysis.dir}/a.json"
    assert dm.payload["predict"] is False


def _keys(tmp_path, data=None, code=CODE, device="cpu"):
    return {j.id: j.key for j in _plan(tmp_path, data, code, device).values()}


def _change(path_value):
    data = copy.deepcopy(SPEC)
    path, value = path_value
    row, key = path
    data["rows"][row][key] = value
    return data


def test_keys_are_stable(tmp_path):
    assert _keys(tmp_path) == _keys(tmp_path)
    assert len(set(_keys(tmp_path).values())) == len(_keys(tmp_path))


@pytest.mark.parametrize("what", ["commit", "diff", "device", "dm schedule", "dkm env", "dataset fingerprint"])
def test_a_change_gives_new_keys_exactly_where_it_matters(tmp_path, what):
    before = _keys(tmp_path)
    if what == "commit":
        after = _keys(tmp_path, code={**CODE, "commit": "b" * 40})
        changed = set(before)
    elif what == "diff":
        after = _keys(tmp_path, code={**CODE, "dirty": True, "diff_sha256": "d" * 64})
        changed = set(before)
    elif what == "device":
        after = _keys(tmp_path, device="cuda")
        changed = set(before)
    elif what == "dm schedule":
        after = _keys(tmp_path, _change(((0, "schedule"), {"epochs": 9})))
        # the DM and every job that requires it (through its key)
        changed = {i for i in before if i.startswith(("dm-", "dkm-", "analysis-"))}
    elif what == "dkm env":
        after = _keys(tmp_path, _change(((2, "env"), {"nnUNet_ext_dkm_dm_checkpoint": "{checkpoint:DM}",
                                                      "EXTRA": "1"})))
        changed = {i for i in before if i.startswith("dkm-")}
    else:
        spec = parse_spec(copy.deepcopy(SPEC))
        datasets = fake_datasets(tmp_path)
        datasets[602] = datasets[602].__class__(**{**datasets[602].__dict__, "fingerprint": "other"})
        after = {j.id: j.key for j in plan_jobs(spec, tmp_path / "wd", datasets, "cpu", CODE)}
        changed = {i for i in before if i.startswith(("base", "dkm-"))}
    assert {i for i in before if before[i] != after[i]} == changed


def test_key_ignores_thread_settings(tmp_path):
    job = next(iter(_plan(tmp_path).values()))
    key = job.key
    path = write_payload(job, {"OMP_NUM_THREADS": "1"})
    assert json.loads(path.read_text())["key"] == key
    assert json.loads(path.read_text())["env"]["OMP_NUM_THREADS"] == "1"


def test_placeholder_of_a_row_not_required_is_refused(tmp_path):
    data = _change(((1, "env"), {"X": "{checkpoint:DM}"}))
    with pytest.raises(UserInputError, match=r"^rows\[1\]: placeholder \{checkpoint:DM\} names a row that is not in "
                                             r"requires"):
        _plan(tmp_path, data)


def test_placeholder_of_an_unknown_dataset_is_refused(tmp_path):
    data = copy.deepcopy(SPEC)
    data["rows"][3]["command"] = "ls {dataset:777}"
    with pytest.raises(UserInputError, match=r"^rows\[3\]: placeholder \{dataset:777\} names no dataset"):
        _plan(tmp_path, data)


def test_slugs_are_distinct_and_safe():
    names = [slug(x) for x in ("DKM f3+f4", "DKM f3 f4", "dkm-f3-f4", "nnU-Net pre + post (reference)")]
    assert len(set(names)) == len(names)
    assert all("/" not in n and " " not in n for n in names)


def test_job_state_finished_stale_absent_and_retire(tmp_path):
    job = next(iter(_plan(tmp_path).values()))
    assert job_state(job) == "absent"
    job.dir.mkdir(parents=True)
    (job.dir / "job.json").write_text(json.dumps({"key": job.key, "status": FINISHED}))
    assert job_state(job) == FINISHED
    (job.dir / "job.json").write_text(json.dumps({"key": "other", "status": FINISHED}))
    assert job_state(job) == "stale"
    (job.dir / "job.json").write_text(json.dumps({"key": job.key, "status": FAILED}))
    assert job_state(job) == "stale"
    (job.dir / "job.json").write_text("{ half written")
    assert job_state(job) == "stale"
    retire(job.dir)
    assert not job.dir.exists() and not any(p.name.startswith("." + job.dir.name) for p in job.dir.parent.iterdir())


def _command_payload(tmp_path, **kw):
    payload = {"kind": "command", "label": "c", "fold": None, "seed": 0, "job_dir": str(tmp_path / "job"),
               "device": "cpu", "env": {}, "key": "k1", "command": "echo value=3", "setup": None, "teardown": None,
               "json": None, "cwd": str(tmp_path), "extract": {"value": r"value=(\d+)"}, "timeout_min": None}
    payload.update(kw)
    return payload


def test_run_command_job_records_metrics_and_provenance(tmp_path):
    out = tmp_path / "job" / "out.json"
    payload = _command_payload(tmp_path, setup="mkdir -p sub", teardown="touch torn_down",
                               command=f"echo value=3; echo value=5; echo "
                                       f"'{{\"acc\": 0.5, \"note\": \"x\", \"per_case\": {{\"c1\": {{\"acc\": 0.4}}, "
                                       f"\"c2\": {{\"acc\": null}}}}}}' > {out}",
                               json=str(out), invocation="nnunet-ext benchmark run x.yaml")
    assert run_job(payload) == FINISHED
    record = read_job_record(tmp_path / "job")
    assert record["metrics"]["value"] == 5.0 and record["metrics"]["acc"] == 0.5 and "note" not in record["metrics"]
    assert record["metrics"]["seconds"] >= 0
    assert record["per_case"]["c1"] == {"acc": 0.4} and math.isnan(record["per_case"]["c2"]["acc"])
    assert record["key"] == "k1" and record["provenance"]["command"] == "nnunet-ext benchmark run x.yaml"
    assert {"commit", "dirty", "date", "machine", "versions", "device"} <= set(record["provenance"])
    assert (tmp_path / "sub").is_dir() and (tmp_path / "job" / "torn_down").exists()


@pytest.mark.parametrize("kw, error", [
    ({"command": "echo broken >&2; exit 4"}, r"command failed \(exit 4\)"),
    ({"command": "echo nothing"}, r"extract\.value: pattern .* not found"),
    ({"setup": "exit 1"}, r"setup failed \(exit 1\)"),
    ({"json": "/nonexistent/x.json"}, r"json: cannot read /nonexistent/x.json"),
    ({"command": "sleep 5", "timeout_min": 0.01}, r"command timed out after 1 s"),
])
def test_failing_command_job_is_recorded_with_its_log(tmp_path, kw, error):
    import re

    assert run_job(_command_payload(tmp_path, **kw)) == FAILED
    record = read_job_record(tmp_path / "job")
    assert record["status"] == FAILED and re.search(error, record["error"]), record["error"]
    assert record["log"] == str(tmp_path / "job" / "command.log")
    assert (tmp_path / "job" / "command.log").is_file()


def test_worker_entry_point_exit_status(tmp_path):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    good = job_dir / "good.json"
    good.write_text(json.dumps(_command_payload(tmp_path)))
    assert jobs_module.main([str(good)]) == 0
    bad = job_dir / "bad.json"
    bad.write_text(json.dumps(_command_payload(tmp_path, command="exit 1")))
    assert jobs_module.main([str(bad)]) == 1
    assert jobs_module.main([]) == 2


def test_dkm_spec_plans_the_dm_first_and_points_every_sm_at_its_seed(tmp_path):
    from pathlib import Path

    from nnunet_ext.benchmark.spec import load_spec

    spec_file = Path(__file__).resolve().parents[2] / "benchmarks" / "specs" / "dkm.yaml"
    spec = load_spec(spec_file)
    jobs = {j.id: j for j in plan_jobs(spec, tmp_path / "wd", fake_datasets(tmp_path), "cpu", CODE)}
    assert len(jobs) == 3 * 8                      # 8 rows, fold all, 3 seeds; no ensemble
    for job in jobs.values():
        if job.label.startswith(("DKM f", "DM enhancement")):
            (dm_id,) = job.requires
            dm = jobs[dm_id]
            assert dm.label == "DM" and dm.seed == job.seed and dm.payload["predict"] is False
            assert list(jobs).index(dm_id) < list(jobs).index(job.id)
        if job.label.startswith("DKM f"):
            assert job.payload["env"]["nnUNet_ext_dkm_dm_checkpoint"].startswith(str(dm.dir))
        if job.kind == "train" and job.label != "DM":  # the study's default schedule reaches every model
            row = next(r for r in spec.rows if r.label == job.label)
            assert row.schedule == yaml.safe_load(spec_file.read_text())["schedule"]
            assert job.payload["env"]["nnUNet_ext_epochs"] == str(row.schedule["epochs"])
            assert job.payload["predict"] is True
    analysis = next(j for j in jobs.values() if j.label == "DM enhancement analysis" and j.seed == 2)
    assert "-i " + str(tmp_path / "raw" / "Dataset601_Fake" / "imagesTs") in analysis.payload["command"]
    assert analysis.payload["json"] == str(analysis.dir / "analysis.json")


def test_validation_row_scores_the_folds_validation_predictions_with_the_hc18_figures(tmp_path, monkeypatch):
    """evaluate: validation reads nnU-Net's fold_N/validation against the raw labels of exactly those cases;
    hc18_csv adds per-case HC_abs_diff_mm (prediction's own spacing) and HD95_px (in pixels of the evaluated grid)."""
    import numpy as np
    from scipy.special import ellipe

    from nnunet_ext import pipeline
    from nnunet_ext.imageio import write_image

    yy, xx = np.mgrid[:40, :50]
    ellipse = (((xx - 25) / 10) ** 2 + ((yy - 20) / 8) ** 2 <= 1).astype(np.uint8)
    raw = tmp_path / "raw" / "Dataset420_HC18"
    (raw / "labelsTr").mkdir(parents=True)
    for case in ("hc18_001", "hc18_002", "hc18_003"):  # hc18_003 is a training case of the fold
        write_image(raw / "labelsTr" / f"{case}.nii.gz", ellipse, (0.4, 0.4))
    csv_path = tmp_path / "hc.csv"
    csv_path.write_text("filename,pixel size(mm),head circumference (mm)\n001_HC.png,0.2,20\n002_HC.png,0.2,25\n"
                        "003_HC.png,0.2,25\n")
    results = tmp_path / "results"
    validation = results / "Dataset420_HC18" / "FFPNTrainer__nnUNetPlansWholeImage__2d" / "fold_0" / "validation"

    def fake_train(*args, **kwargs):
        validation.mkdir(parents=True)
        write_image(validation / "hc18_001.nii.gz", ellipse, (0.4, 0.4))
        write_image(validation / "hc18_002.nii.gz", np.roll(ellipse, 2, axis=1), (0.4, 0.4))  # 2 px = 0.8 mm off
        (validation / "summary.json").write_text("{}")  # nnU-Net's own summary sits beside the predictions

    monkeypatch.setattr(pipeline, "train", fake_train)
    payload = {"dataset_id": 420, "dataset_name": raw.name, "configuration": "2d", "fold": 0,
               "trainer": "FFPNTrainer", "plans": "nnUNetPlansWholeImage", "device": "cpu", "predict": True,
               "evaluate": "validation", "hc18_csv": str(csv_path), "raw_labels": str(raw / "labelsTr")}
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    metrics, per_case = jobs_module._run_train(payload, job_dir, {"nnUNet_results": str(results)})
    assert "train_seconds" in metrics and set(per_case) == {"hc18_001", "hc18_002"}
    perimeter_mm = 4 * 10 * ellipe(1 - (8 / 10) ** 2) * 0.4
    # with the CSV pixel size (0.2) instead of the image spacing (0.4) the difference would be ~8.7 mm
    assert per_case["hc18_001"]["HC_abs_diff_mm"] == pytest.approx(abs(perimeter_mm - 20), abs=0.4)
    assert per_case["hc18_001"]["HD95_px"] == 0.0
    assert per_case["hc18_002"]["HD95_px"] == pytest.approx(2.0)  # 0.8 mm at 0.4 mm per (downsampled) pixel
    summary = json.loads((job_dir / "summary.json").read_text().replace("NaN", "null"))
    assert len(summary["metric_per_case"]) == 2 and summary["foreground_mean"]["Dice"] < 1


def test_validation_prediction_without_a_raw_label_fails_the_job(tmp_path):
    predictions = tmp_path / "validation"
    predictions.mkdir()
    (predictions / "case_9.nii.gz").write_bytes(b"x")
    (tmp_path / "labelsTr").mkdir()
    with pytest.raises(RuntimeError, match=r"case_9\.nii\.gz has no reference in .*labelsTr"):
        jobs_module._validation_references({"raw_labels": str(tmp_path / "labelsTr")}, tmp_path, predictions)
