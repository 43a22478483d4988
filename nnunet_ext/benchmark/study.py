"""A study end to end: datasets -> jobs (skip finished ones with the same key, retire stale ones) -> executor ->
report. The Python API behind ``nnunet-ext benchmark run``."""
from __future__ import annotations

import contextlib
import fcntl
import json
import shlex
import sys
from pathlib import Path
from typing import Callable

from nnunet_ext.benchmark.jobs import FINISHED, code_state, job_state, plan_jobs, retire
from nnunet_ext.benchmark.report import STUDY_FILE, build_report
from nnunet_ext.benchmark.spec import Spec
from nnunet_ext.errors import UserInputError
from nnunet_ext.provenance import REPOSITORY


def default_workdir(spec: Spec) -> Path:
    return Path("workspace") / "benchmarks" / spec.name


def default_results() -> Path:
    return REPOSITORY / "benchmarks" / "results"


@contextlib.contextmanager
def workdir_lock(workdir: Path):
    """One ``benchmark run`` per workdir at a time (two would retire each other's jobs)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserInputError(f"another 'nnunet-ext benchmark run' is using {workdir}") from None
        yield


def run_study(spec: Spec, workdir: str | Path | None = None, results: str | Path | None = None,
              executor: str = "local", n_jobs: int = 1, device: str | None = None, slurm: dict | None = None,
              code: dict | None = None, invocation: str | None = None, progress: bool = True,
              dry_run: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run every job of ``spec`` that is not finished with the same key, then write the report.

    Args:
        workdir: the study's workspace (datasets, jobs); default ``workspace/benchmarks/<name>``.
        results: report folder; default the repository's ``benchmarks/results``.
        executor: ``local``, ``slurm`` or ``submitit-local`` (:mod:`nnunet_ext.benchmark.executors`).
        n_jobs: concurrent jobs of the local executor.
        device: ``-device`` of nnU-Net's commands; default the spec's, else ``pipeline.default_device()``.
        slurm: SLURM resources overriding the spec's ``slurm`` mapping.
        code: the code state for job keys (default :func:`~nnunet_ext.benchmark.jobs.code_state`).
        dry_run: print the jobs and whether each would run or be skipped; change nothing.

    Returns:
        The results JSON (``{}`` for a dry run); ``["failed"]`` lists the jobs that did not finish.
    """
    from nnunet_ext.benchmark.datasets import prepare_datasets
    from nnunet_ext.benchmark.executors import EXECUTORS, LocalBackend, SubmititBackend, execute
    from nnunet_ext.pipeline import check_device, default_device
    from nnunet_ext.provenance import committed_file

    if executor not in EXECUTORS:
        raise UserInputError(f"--executor must be one of {', '.join(EXECUTORS)}, got '{executor}'")
    device = device or spec.device or default_device()
    if executor == "slurm":  # the compute nodes may have devices this machine lacks: check the name only
        if device not in ("cpu", "cuda", "mps"):
            raise UserInputError(f"-device must be cpu, cuda or mps, got '{device}'")
    else:
        check_device(device)
    resources = {**spec.slurm, **{k: v for k, v in (slurm or {}).items() if v is not None}}
    if executor == "slurm":
        import shutil

        if shutil.which("sbatch") is None:
            raise UserInputError("--executor slurm: sbatch is not on PATH (no SLURM client on this machine)")
    workdir = Path(workdir or default_workdir(spec)).resolve()
    results = Path(results or default_results()).resolve()
    if workdir == results:
        raise UserInputError(f"--results {results} must differ from --workdir")
    invocation = invocation or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    code = code or code_state()

    with workdir_lock(workdir):
        datasets = prepare_datasets(spec, workdir, log)
        jobs = plan_jobs(spec, workdir, datasets, device, code)
        for job in jobs:
            job.payload.update(invocation=invocation, key_commit=code.get("commit"))
        states = {job.id: job_state(job) for job in jobs}
        to_run = [job for job in jobs if states[job.id] != FINISHED]
        log(f"{len(jobs)} jobs: {len(jobs) - len(to_run)} finished with the same key (skipped), "
            f"{sum(states[j.id] == 'stale' for j in to_run)} stale (rerun), "
            f"{sum(states[j.id] == 'absent' for j in to_run)} new")
        if dry_run:
            for job in jobs:
                log(f"  {'skip' if states[job.id] == FINISHED else 'run '}  {job.id}  key {job.key[:12]}")
            return {}
        spec_state = committed_file(spec.file) if spec.file else {"committed": None, "why": "parsed, not read"}
        if spec_state["committed"] is False:
            log(f"warning: the spec is not the committed one ({spec_state['why']}); the report will say so")
        study = {"name": spec.name, "spec_file": spec.file, "spec_state": spec_state, "spec": spec.source,
                 "workdir": str(workdir), "results": str(results), "device": device, "executor": executor,
                 "invocation": invocation, "code": code,
                 "jobs": [{"id": j.id, "label": j.label, "kind": j.kind, "fold": j.fold, "seed": j.seed, "key": j.key,
                           "requires": j.requires} for j in jobs]}
        (workdir / STUDY_FILE).write_text(json.dumps(study, indent=2, default=str) + "\n")
        for job in to_run:
            retire(job.dir)
        if executor == "local":
            backend = LocalBackend(n_jobs)
        else:
            backend = SubmititBackend(workdir / "submitit", "slurm" if executor == "slurm" else "local",
                                      f"nnunet-ext-{spec.name}", resources)
        status = execute(to_run, backend, poll_s=0.5 if executor == "local" else 2.0, progress=progress, log=log)
        report = build_report(workdir, results, command=invocation)
    failed = [job_id for job_id, s in status.items() if s != FINISHED]
    report["failed"] = failed
    log(f"report: {results / (spec.name + '.md')}" + (f"; {len(failed)} job(s) did not finish" if failed else ""))
    return report
