"""The report from hand-made job outputs: statistics, summary keys, failed jobs, provenance, files."""
from __future__ import annotations

import copy
import csv
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from nnunet_ext.benchmark.jobs import FAILED, FINISHED, plan_jobs
from nnunet_ext.benchmark.report import STUDY_FILE, build_report
from nnunet_ext.benchmark.spec import parse_spec
from nnunet_ext.errors import UserInputError

from .conftest import CODE, fake_datasets

CASES = ["test_0000", "test_0001", "test_0002", "test_0003", "test_0004", "test_0005"]
BASE_DICE = [0.50, 0.60, 0.40, 0.70, 0.0, 0.55]   # test_0004: a missed lesion (Dice 0)
SPEC = {
    "name": "rep", "datasets": [{"synth": "breast_dce", "id": 601, "cases": 5}],
    "folds": [0, 1], "seeds": [0, 1], "metrics": ["Dice", "HD95"], "baseline": "base",
    "bootstrap": {"n_resamples": 2000, "seed": 3},
    "rows": [{"label": "base", "trainer": "DemoTrainer", "dataset": 601},
             {"label": "better", "trainer": "DemoTrainer", "dataset": 601, "env": {"X": "1"}},
             {"label": "broken", "trainer": "DemoTrainer", "dataset": 601, "env": {"X": "2"}},
             {"label": "timing", "kind": "command", "command": "true"}],
    "summary": {"base_dice": {"row": "base", "metric": "Dice"},
                "better_minus_base_ci": {"row": "better", "metric": "Dice", "stat": "paired_ci"},
                "better_minus_base_p": {"row": "better", "metric": "Dice", "stat": "wilcoxon_p"},
                "base_hd95_undefined": {"row": "base", "metric": "HD95", "stat": "n_undefined"},
                "base_seed_std": {"row": "base", "metric": "Dice", "stat": "seed_std"},
                "broken_dice": {"row": "broken", "metric": "Dice"},
                "timing_seconds": {"row": "timing", "metric": "seconds"},
                "base_train_seconds": {"row": "base", "metric": "train_seconds"},
                "n_seeds": {"stat": "n_seeds"}, "n_failed": {"stat": "n_failed"},
                "n_cases": {"spec": "datasets[0].cases"}},
}


def _value(row, case_index, seed, fold):
    """Hand-made per-case Dice: 'better' is the baseline + 0.1 (+ a case-dependent wiggle), seeds differ by 0.02."""
    base = BASE_DICE[case_index] + 0.02 * seed + 0.01 * (1 if fold == 0 else -1)
    return base if row == "base" else base + 0.1 + 0.01 * case_index


def _write_study(tmp_path, commit_for=lambda job: CODE["commit"], spec_data=SPEC):
    spec = parse_spec(copy.deepcopy(spec_data))
    workdir = tmp_path / "wd"
    ids = tuple(sorted({d["id"] for d in spec_data["datasets"]}))
    jobs = plan_jobs(spec, workdir, fake_datasets(tmp_path, ids), "cpu", CODE)
    for job in jobs:
        job.dir.mkdir(parents=True)
        status = FAILED if job.label == "broken" and job.seed == 1 and job.fold == 0 else FINISHED
        record = {"key": job.key, "status": status, "label": job.label, "seed": job.seed, "fold": job.fold,
                  "host": "h", "provenance": {"commit": commit_for(job), "dirty": False, "command": "bench run",
                                              "date": "2026-01-01T00:00:00+00:00", "device": "cpu (2 cores)",
                                              "machine": {"platform": "Linux", "cpu_count": 2},
                                              "versions": {"torch": "2.14.1"}}}
        if status == FAILED:
            record.update(error="command failed (exit 1): nnUNetv2_train", log=str(job.dir / "train.log"))
        elif job.kind == "command":
            record["metrics"] = {"seconds": 10.0 + job.seed}
        else:
            record["metrics"] = {"train_seconds": 100.0, "predict_seconds": 20.0}
            cases = []
            for i, case in enumerate(CASES):
                dice = _value(job.label, i, job.seed, job.fold)
                hd95 = math.nan if dice == 0.0 or (job.label == "base" and i == 4) else 5.0 + i
                cases.append({"reference_file": f"/ref/{case}.nii.gz", "prediction_file": f"/p/{case}.nii.gz",
                              "metrics": {"1": {"Dice": dice, "IoU": dice / (2 - dice), "PPV": 1.0, "SEN": 1.0,
                                                "HD95": hd95, "ASD": 1.0}}})
            (job.dir / "summary.json").write_text(json.dumps({"metric_per_case": cases}))
        (job.dir / "job.json").write_text(json.dumps(record))
    study = {"name": "rep", "spec_file": "rep.yaml", "spec": spec_data, "workdir": str(workdir),
             "results": str(tmp_path / "results"), "device": "cpu", "executor": "local", "invocation": "bench run",
             "jobs": [{"id": j.id, "label": j.label, "kind": j.kind, "fold": j.fold, "seed": j.seed, "key": j.key,
                       "requires": j.requires} for j in jobs]}
    (workdir / STUDY_FILE).write_text(json.dumps(study, default=str))
    return workdir, jobs


def _row_case_means(row):
    return np.array([np.mean([_value(row, i, s, f) for s in (0, 1) for f in (0, 1)]) for i in range(len(CASES))])


def test_report_statistics_match_numpy_and_scipy(tmp_path):
    workdir, _ = _write_study(tmp_path)
    data = build_report(workdir, command="nnunet-ext benchmark report wd")
    base, better = _row_case_means("base"), _row_case_means("better")
    assert data["base_dice"] == pytest.approx(base.mean())
    described = data["rows"]["base"]["metrics"]["1"]["Dice"]
    assert described["std"] == pytest.approx(base.std(ddof=1))
    reference = sps.bootstrap((base,), np.mean, n_resamples=2000, method="percentile",
                              rng=np.random.default_rng(3)).confidence_interval
    assert described["ci"] == pytest.approx([reference.low, reference.high])
    diffs = better - base
    assert data["rows"]["better"]["paired"]["1"]["Dice"]["diff_mean"] == pytest.approx(diffs.mean())
    assert data["better_minus_base_p"] == pytest.approx(sps.wilcoxon(diffs).pvalue)
    low, high = data["better_minus_base_ci"]
    assert low <= diffs.mean() <= high and low > 0.1
    seed_means = [np.mean([np.mean([_value("base", i, s, f) for f in (0, 1)]) for i in range(len(CASES))])
                  for s in (0, 1)]
    assert data["base_seed_std"] == pytest.approx(np.std(seed_means, ddof=1))
    assert data["base_hd95_undefined"] == 1          # the missed lesion has no HD95
    assert data["n_seeds"] == 2 and data["n_cases"] == 5 and data["timing_seconds"] == pytest.approx(10.5)
    assert data["commit"] == CODE["commit"] and data["base_train_seconds"] == 100.0


def test_command_rows_with_a_summary_and_negative_scans_get_case_metrics(tmp_path):
    """A command row that evaluates into {job_dir}/summary.json (e.g. merged predictions) is read like a training
    row; negative scans of any summary add per-case FP_any / FP_ml / FP_components (label "-")."""
    workdir, jobs = _write_study(tmp_path)
    fp = {"test_0000": {"fp_any": 1.0, "fp_ml": 2.0, "fp_components": 3.0, "fp_voxels": 9.0},
          "test_0001": {"fp_any": 0.0, "fp_ml": 0.0, "fp_components": 0.0, "fp_voxels": 0.0}}
    for job in jobs:
        if job.label == "timing":
            cases = [{"reference_file": f"/ref/{c}.nii.gz", "prediction_file": f"/p/{c}.nii.gz",
                      "metrics": {"1": {"Dice": 0.25 * (1 + job.seed)}}} for c in CASES]
            (job.dir / "summary.json").write_text(json.dumps({"metric_per_case": cases,
                                                              "negative_scans": {"per_case": fp}}))
    data = build_report(workdir, command="nnunet-ext benchmark report wd")
    metrics = data["rows"]["timing"]["metrics"]
    assert metrics["1"]["Dice"]["mean"] == pytest.approx(0.375)  # seeds 0 and 1 averaged per case
    assert metrics["-"]["FP_any"]["mean"] == pytest.approx(0.5) and metrics["-"]["FP_ml"]["mean"] == 1.0
    assert metrics["-"]["FP_components"]["n_cases"] == 2


def test_rows_on_another_dataset_are_not_paired_with_the_baseline(tmp_path):
    spec = copy.deepcopy(SPEC)
    spec["datasets"].append({"synth": "breast_dce", "id": 603, "cases": 5})
    spec["rows"][1]["dataset"] = 603  # "better": same case names, other cases
    workdir, _ = _write_study(tmp_path, spec_data=spec)
    data = build_report(workdir, command="nnunet-ext benchmark report wd")
    assert "better" not in {row for row, entry in data["rows"].items() if entry.get("paired")}
    assert data["rows"]["broken"]["paired"]["1"]["Dice"]["n_pairs"] > 0  # same dataset: still paired


def test_failed_jobs_are_marked_with_their_logs_and_left_out(tmp_path):
    workdir, jobs = _write_study(tmp_path)
    data = build_report(workdir)
    failed = [j for j in data["jobs"] if j["status"] == FAILED]
    assert len(failed) == 1 and failed[0]["log"].endswith("train.log") and data["n_failed"] == 1
    # the broken row's figure uses its three finished jobs only
    expected = np.mean([np.mean([_value("broken", i, s, f) for s, f in ((0, 0), (0, 1), (1, 1))])
                        for i in range(len(CASES))])
    assert data["broken_dice"] == pytest.approx(expected)
    md = (tmp_path / "results" / "rep.md").read_text()
    assert "**incomplete**" in md and failed[0]["log"] in md and "command failed (exit 1)" in md


def test_report_files_and_provenance(tmp_path):
    workdir, _ = _write_study(tmp_path)
    build_report(workdir, command="nnunet-ext benchmark report wd")
    results = tmp_path / "results"
    names = sorted(p.name for p in results.iterdir() if not p.name.startswith("."))
    assert names == ["rep.csv", "rep.json", "rep.md", "rep.per_case.csv", "rep_dice.png", "rep_dice_paired.png",
                     "rep_hd95.png", "rep_hd95_paired.png"]
    md = (results / "rep.md").read_text()
    for text in ("## Provenance", CODE["commit"], "bench run", "nnunet-ext benchmark report wd", "cpu (2 cores)",
                 "## Paired differences against the baseline (base)", "## Seeds", "(1 undef.)", "rep.findings.md"):
        assert text in md, text
    rows = list(csv.DictReader(open(results / "rep.csv")))
    dice = next(r for r in rows if r["row"] == "base" and r["label"] == "1" and r["metric"] == "Dice")
    assert float(dice["mean"]) == pytest.approx(_row_case_means("base").mean())
    per_case = list(csv.DictReader(open(results / "rep.per_case.csv")))
    assert len([r for r in per_case if r["row"] == "base" and r["metric"] == "Dice" and r["label"] == "1"]) == \
        len(CASES) * 4
    from PIL import Image

    meta = Image.open(results / "rep_dice.png").info
    assert CODE["commit"] in meta["Description"]


def test_rows_from_different_commits_are_flagged(tmp_path):
    workdir, _ = _write_study(tmp_path, commit_for=lambda job: "c" * 40 if job.label == "better" else "a" * 40)
    data = build_report(workdir)
    md = (tmp_path / "results" / "rep.md").read_text()
    assert "come from 2 different code states" in md
    assert sorted(data["commit"]) == ["a" * 40, "c" * 40]


def test_stale_job_is_not_counted(tmp_path):
    workdir, jobs = _write_study(tmp_path)
    job = next(j for j in jobs if j.label == "base" and j.seed == 0 and j.fold == 0)
    record = json.loads((job.dir / "job.json").read_text())
    (job.dir / "job.json").write_text(json.dumps({**record, "key": "older"}))
    data = build_report(workdir)
    assert next(j for j in data["jobs"] if j["id"] == job.id)["status"] == "stale (older key)"
    expected = np.mean([np.mean([_value("base", i, s, f) for s, f in ((0, 1), (1, 0), (1, 1))])
                        for i in range(len(CASES))])
    assert data["base_dice"] == pytest.approx(expected)


def test_report_of_a_folder_that_is_no_study(tmp_path):
    with pytest.raises(UserInputError, match="is not a benchmark workdir"):
        build_report(tmp_path)


def test_three_part_summary_keys_are_also_shown_as_tables():
    from nnunet_ext.benchmark.report import _summary_tables

    summary = {"t1.nnunet.EDH": 0.5, "t1.nnunet.mean": 0.25, "t1.unetr.EDH": None, "t1.unetr.mean": 0.125,
               "ci.t1_diff": [0.1, 0.2], "other.flat": 3.0, "t2.0.fp": 1.0}
    text = "\n".join(_summary_tables(summary))
    assert "## Summary table `t1`" in text and "## Summary table `t2`" in text and "ci" not in text
    assert "| nnunet | 0.5000 | 0.2500 |" in text and "| unetr | n/a | 0.1250 |" in text
    assert "| 0 | 1.0000 |" in text


def test_dotted_summary_keys_become_nested_objects():
    from nnunet_ext.benchmark.report import nested

    flat = {"hc18_dice.unet": 0.9, "hc18_dice.ffpn": 0.8, "camus.unet.LV": 0.7, "n_jobs": 3}
    assert nested(flat) == {"hc18_dice": {"unet": 0.9, "ffpn": 0.8}, "camus": {"unet": {"LV": 0.7}}, "n_jobs": 3}


def test_quoted_summary_key_parts_keep_their_dots():
    from nnunet_ext.benchmark.report import nested

    flat = {'low_label."0.15".unet': 0.5, 'low_label."1.0".unet': 0.7, "a.b": 1}
    assert nested(flat) == {"low_label": {"0.15": {"unet": 0.5}, "1.0": {"unet": 0.7}}, "a": {"b": 1}}


@pytest.mark.parametrize("figures, met", [
    ({"d": 0.07, "ci": [0.01, 0.1]}, True),
    ({"d": 0.04, "ci": [0.01, 0.1]}, False),     # the difference misses
    ({"d": 0.07, "ci": [-0.01, 0.1]}, False),    # the interval reaches 0
    ({"d": None, "ci": [0.01, 0.1]}, None),      # a row without finished jobs: undecided
    ({"d": 0.07, "ci": None}, None),
])
def test_target_met(figures, met):
    from nnunet_ext.benchmark.report import target_met

    assert target_met([["d", ">=", 0.05], ["ci[0]", ">", 0]], figures) is met


def test_region_rows_report_their_regions_as_labels(tmp_path):
    """A row with ``regions:`` is read from the ``regions`` part of summary.json: one label per region, the label mean
    over the regions, and summary entries that name a region."""
    spec = copy.deepcopy(SPEC)
    spec["rows"][1]["regions"] = "lesion=1,2;enhancing=2"
    spec["summary"] = {"better_lesion": {"row": "better", "metric": "Dice", "label": "lesion"},
                       "better_mean": {"row": "better", "metric": "Dice", "label": "mean"}}
    workdir, jobs = _write_study(tmp_path, spec_data=spec)
    for job in jobs:
        if job.label == "better":
            cases = [{"reference_file": f"/ref/{c}.nii.gz", "prediction_file": f"/p/{c}.nii.gz",
                      "metrics": {"lesion": {"Dice": 0.8, "HD95": 2.0}, "enhancing": {"Dice": 0.4, "HD95": 4.0},
                                  "mean": {"Dice": 0.6, "HD95": 3.0}}} for c in CASES]
            (job.dir / "summary.json").write_text(json.dumps({"metric_per_case": [], "regions": {
                "metric_per_case": cases}}))
    data = build_report(workdir, command="nnunet-ext benchmark report wd")
    metrics = data["rows"]["better"]["metrics"]
    assert set(metrics) >= {"lesion", "enhancing", "mean"} and "1" not in metrics
    assert data["better_lesion"] == pytest.approx(0.8) and data["better_mean"] == pytest.approx(0.6)
    assert "1" in data["rows"]["base"]["metrics"] and "lesion" not in data["rows"]["base"]["metrics"]
