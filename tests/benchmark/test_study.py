"""A study end to end: resume rules with command rows (seconds), and the local executor on a tiny phantom through
nnU-Net's real commands (slow)."""
from __future__ import annotations

import copy
import json

import pytest

from nnunet_ext.benchmark.jobs import read_job_record
from nnunet_ext.benchmark.spec import load_spec, parse_spec
from nnunet_ext.benchmark.study import run_study, workdir_lock
from nnunet_ext.errors import UserInputError

from .conftest import CODE, command_spec, write_spec

COUNTING = command_spec("resume", seeds=[0, 1], rows=[
    {"label": "count", "kind": "command", "command": "echo {seed} >> {workdir}/runs.txt; echo value={seed}",
     "extract": {"value": r"value=(\d+)"}},
    {"label": "flaky", "kind": "command", "command": "test -e {workdir}/fixed && echo ok=1",
     "extract": {"ok": r"ok=(\d)"}}],
    summary={"mean_value": {"row": "count", "metric": "value"}})


def _run(tmp_path, data=COUNTING, code=CODE, **kw):
    kw.setdefault("device", "cpu")
    return run_study(parse_spec(copy.deepcopy(data)), tmp_path / "wd", tmp_path / "results", code=code,
                     progress=False, log=lambda m: None, **kw)


def _runs(tmp_path):
    return (tmp_path / "wd" / "runs.txt").read_text().split()


def test_finished_jobs_are_skipped_failed_and_changed_ones_rerun(tmp_path):
    first = _run(tmp_path)
    assert _runs(tmp_path) == ["0", "1"] and first["mean_value"] == 0.5
    assert sorted(first["failed"]) == sorted(j["id"] for j in first["jobs"] if j["label"] == "flaky")
    # same key: nothing of 'count' reruns; the failed 'flaky' jobs run again (and now succeed)
    (tmp_path / "wd" / "fixed").touch()
    second = _run(tmp_path)
    assert _runs(tmp_path) == ["0", "1"] and second["failed"] == []
    # a new commit changes every key: everything reruns, and the records say which commit
    third = _run(tmp_path, code={**CODE, "commit": "b" * 40})
    assert _runs(tmp_path) == ["0", "1", "0", "1"] and third["failed"] == []
    record = read_job_record(tmp_path / "wd" / "jobs" / third["jobs"][0]["id"])
    assert record["provenance"]["key_commit"] == "b" * 40
    # one changed row reruns only that row
    data = copy.deepcopy(COUNTING)
    data["rows"][1]["env"] = {"SOMETHING": "new"}
    _run(tmp_path, data, code={**CODE, "commit": "b" * 40})
    assert _runs(tmp_path) == ["0", "1", "0", "1"]


def test_stale_outputs_are_removed_not_mixed(tmp_path):
    _run(tmp_path)
    job_dir = tmp_path / "wd" / "jobs" / json.loads((tmp_path / "wd" / "study.json").read_text())["jobs"][0]["id"]
    (job_dir / "leftover.txt").write_text("from the old code")
    _run(tmp_path, code={**CODE, "commit": "c" * 40})
    assert not (job_dir / "leftover.txt").exists() and read_job_record(job_dir)["status"] == "finished"


def test_a_spec_outside_the_checkout_is_reported_as_not_committed(tmp_path):
    spec = load_spec(write_spec(tmp_path, COUNTING))
    messages = []
    result = run_study(spec, tmp_path / "wd", tmp_path / "results", code=CODE, device="cpu", progress=False,
                       log=messages.append)
    state = result["provenance"]["spec_state"]
    assert state["committed"] is False and "outside the repository" in state["why"]
    assert any(m.startswith("warning: the spec is not the committed one") for m in messages)
    assert "**spec state: not the committed spec** (outside the repository" in \
        (tmp_path / "results" / "resume.md").read_text()


def test_dry_run_changes_no_job(tmp_path):
    messages = []
    run_study(parse_spec(copy.deepcopy(COUNTING)), tmp_path / "wd", tmp_path / "results", code=CODE,
              progress=False, log=messages.append, device="cpu", dry_run=True)
    assert not (tmp_path / "wd" / "jobs").exists() and not (tmp_path / "results").exists()
    assert messages[0].startswith("4 jobs: 0 finished") and sum(m.strip().startswith("run") for m in messages) == 4


def test_one_run_per_workdir(tmp_path):
    with workdir_lock(tmp_path / "wd"):
        with pytest.raises(UserInputError, match="another 'nnunet-ext benchmark run' is using"):
            with workdir_lock(tmp_path / "wd"):
                pass


@pytest.mark.parametrize("kw, message", [
    ({"executor": "cloud"}, r"--executor must be one of local, slurm, submitit-local"),
    ({"device": "tpu"}, r"-device must be cpu, cuda or mps"),
    ({"n_jobs": 0}, r"--jobs must be >= 1"),
])
def test_bad_run_arguments(tmp_path, kw, message):
    with pytest.raises(UserInputError, match=message):
        _run(tmp_path, **kw)


TINY = {
    "name": "tiny",
    "datasets": [{"synth": "breast_dce", "id": 911, "cases": 5, "test_cases": 1, "seed": 0, "shape": [8, 32, 32],
                  "configurations": ["2d"]}],
    "folds": [0, 1], "seeds": [0], "ensemble": True, "metrics": ["Dice", "HD95"], "baseline": "tiny",
    "env": {"nnUNet_ext_skip_final_validation": "1"},  # the jobs predict the test case; nnU-Net's validation is moot
    "rows": [{"label": "tiny", "trainer": "TinyTrainer", "dataset": 911, "configuration": "2d"},
             {"label": "tiny 1x1", "trainer": "TinyTrainer", "dataset": 911, "configuration": "2d", "folds": [0],
              "schedule": {"epochs": 1, "iterations": 1}}],  # one fold: no ensemble of its own (saves 3 jobs)
    "summary": {"tiny_dice": {"row": "tiny", "metric": "Dice"},
                "ensemble_dice": {"row": "tiny (ensemble)", "metric": "Dice"},
                "diff_ci": {"row": "tiny 1x1", "metric": "Dice", "stat": "paired_ci"}},
}


@pytest.mark.slow
def test_local_executor_end_to_end_with_fold_ensemble(tmp_path):
    """A row of 2 folds + its fold-ensemble row and a one-fold row, through nnUNetv2_train/predict, 2 jobs at a time;
    a second run skips everything and writes the same figures."""
    result = _run(tmp_path, TINY, n_jobs=2)
    assert result["failed"] == [], result["jobs"]
    labels = sorted({j["label"] for j in result["jobs"]})
    assert labels == ["tiny", "tiny (ensemble)", "tiny 1x1"] and len(result["jobs"]) == 4
    for key in ("tiny_dice", "ensemble_dice"):
        assert 0.0 <= result[key] <= 1.0
    assert len(result["diff_ci"]) == 2 and result["commit"]        # the checkout's commit(s) while the jobs ran
    assert read_job_record(tmp_path / "wd" / "jobs" / result["jobs"][0]["id"])["provenance"]["key_commit"] == \
        CODE["commit"]
    ensemble = next(j for j in result["jobs"] if j["label"] == "tiny (ensemble)")
    job_dir = tmp_path / "wd" / "jobs" / ensemble["id"]
    assert json.loads((job_dir / "ensemble.json").read_text())["folds"] == ["0", "1"]   # nnUNetv2_predict -f 0 1
    model = job_dir / "nnUNet_results" / "Dataset911_BreastDCE" / "TinyTrainer__nnUNetPlansCPU__2d"
    assert sorted(p.name for p in model.glob("fold_*")) == ["fold_0", "fold_1"]
    assert (model / "fold_1" / "checkpoint_final.pth").is_file()
    per_case = (tmp_path / "results" / "tiny.per_case.csv").read_text().splitlines()
    assert sum(",test_0000,1,Dice," in line for line in per_case) == 4      # every job evaluated the same case
    assert (tmp_path / "results" / "tiny_dice.png").is_file() and (tmp_path / "results" / "tiny.md").is_file()
    def finished_times():
        return {j["id"]: read_job_record(tmp_path / "wd" / "jobs" / j["id"])["finished"] for j in result["jobs"]}

    before = finished_times()
    again = _run(tmp_path, TINY, n_jobs=2)
    assert finished_times() == before                                      # nothing ran again
    assert again["tiny_dice"] == result["tiny_dice"] and again["diff_ci"] == result["diff_ci"]
