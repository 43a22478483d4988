"""Executors: core sharing, the scheduler (dependencies, failures), submitit's local executor and a real SLURM
check when ``sbatch`` is on PATH."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nnunet_ext.benchmark.executors import LocalBackend, SubmititBackend, core_slots, execute, thread_env
from nnunet_ext.benchmark.jobs import FINISHED, plan_jobs, read_job_record
from nnunet_ext.benchmark.spec import parse_spec

from .conftest import CODE, command_spec, write_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("n_jobs, cores, expected", [
    (1, [0, 1], [[0, 1]]),
    (2, [0, 1], [[0], [1]]),
    (2, [0, 1, 2, 3, 4], [[0, 1], [2, 3]]),
    (3, [4, 5], [[4], [5], [4]]),      # more jobs than cores: they share round-robin
])
def test_core_slots(n_jobs, cores, expected):
    assert core_slots(n_jobs, cores) == expected


@pytest.mark.parametrize("threads, expected", [(1, "1"), (4, "4"), (0, "1")])
def test_thread_env(threads, expected):
    env = thread_env(threads)
    assert {env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "nnUNet_n_proc_DA", "nnUNet_def_n_proc")} == \
        {expected}


def _jobs(tmp_path, rows):
    spec = parse_spec({"name": "x", "seeds": [0], "rows": rows})
    return plan_jobs(spec, tmp_path / "wd", {}, "cpu", CODE)


def test_local_jobs_share_the_cores_explicitly(tmp_path):
    cores = sorted(os.sched_getaffinity(0))
    probe = ("python3 -c \"import os; print('cores=' + str(len(os.sched_getaffinity(0))))\"; "
             "echo threads=$OMP_NUM_THREADS da=$nnUNet_n_proc_DA")
    rows = [{"label": label, "kind": "command", "command": probe,
             "extract": {"cores": r"cores=(\d+)", "threads": r"threads=(\d+)", "da": r"da=(\d+)"}}
            for label in ("a", "b")]
    jobs = _jobs(tmp_path, rows)
    status = execute(jobs, LocalBackend(2, cores), poll_s=0.05, progress=False, log=lambda m: None)
    assert set(status.values()) == {FINISHED}
    per_job = max(1, len(cores) // 2)
    for job in jobs:
        metrics = read_job_record(job.dir)["metrics"]
        assert metrics["cores"] == per_job and metrics["threads"] == per_job and metrics["da"] == per_job


def test_a_failed_job_does_not_stop_the_others(tmp_path):
    rows = [{"label": "bad", "kind": "command", "command": "exit 3"},
            {"label": "good", "kind": "command", "command": "echo ok=1", "extract": {"ok": r"ok=(\d)"}},
            {"label": "after bad", "kind": "command", "command": "echo never", "requires": ["bad"]},
            {"label": "after good", "kind": "command", "command": "echo fine", "requires": ["good"]}]
    jobs = _jobs(tmp_path, rows)
    messages = []
    status = execute(jobs, LocalBackend(1), poll_s=0.05, progress=False, log=messages.append)
    by_label = {j.label: status[j.id] for j in jobs}
    assert by_label == {"bad": "failed", "good": FINISHED, "after bad": "not run", "after good": FINISHED}
    bad = next(j for j in jobs if j.label == "bad")
    assert any(str(bad.dir / "command.log") in m for m in messages)
    assert not next(j for j in jobs if j.label == "after bad").dir.exists()


def test_a_crashed_worker_is_reported_with_the_executor_log(tmp_path):
    rows = [{"label": "killed", "kind": "command", "command": "kill -9 $PPID; sleep 5"}]
    jobs = _jobs(tmp_path, rows)
    status = execute(jobs, LocalBackend(1), poll_s=0.05, progress=False, log=lambda m: None)
    assert status[jobs[0].id] == "failed"
    record = read_job_record(jobs[0].dir)
    assert record["status"] == "failed" and record["log"] == str(jobs[0].dir / "job.log")


def test_submitit_local_executor_runs_jobs(tmp_path):
    """submitit's own LocalExecutor (AutoExecutor(cluster="local")): the code path of --executor slurm."""
    rows = [{"label": label, "kind": "command", "command": f"echo v={i}", "extract": {"v": r"v=(\d)"}}
            for i, label in enumerate(("a", "b"))]
    jobs = _jobs(tmp_path, rows)
    backend = SubmititBackend(tmp_path / "submitit", "local", "test", {"cpus_per_task": 1, "time_min": 5})
    status = execute(jobs, backend, poll_s=0.2, progress=False, log=lambda m: None)
    assert set(status.values()) == {FINISHED}
    assert [read_job_record(j.dir)["metrics"]["v"] for j in jobs] == [0.0, 1.0]
    assert len(list((tmp_path / "submitit").iterdir())) >= 1    # submitit's own job folders


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sbatch") is None, reason="no SLURM here: sbatch is not on PATH")
@pytest.mark.skipif(os.geteuid() != 0, reason="benchmarks/slurm/local_slurm.sh needs root")
def test_local_slurm_script(tmp_path):
    spec = write_spec(tmp_path, command_spec(
        "slurm_check", summary={"jobs_submitted": {"stat": "n_jobs"}, "jobs_succeeded": {"stat": "n_finished"},
                                "sbatch_version": {"command": "sbatch --version"}}))
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "slurm" / "local_slurm.sh"), str(spec),
                           str(tmp_path / "results"), str(tmp_path / "wd")], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "results" / "slurm_check.json").read_text())
    assert result["jobs_submitted"] == 2 and result["jobs_succeeded"] == 2
    assert result["sbatch_version"].startswith("slurm") and result["commit"]
