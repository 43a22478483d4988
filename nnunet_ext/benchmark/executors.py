"""Where jobs run: ``local`` (this machine, sequential or ``--jobs N`` at once) or ``slurm`` (submitit job arrays).

One scheduler serves both: a job is submitted once every job it requires has finished (a job whose requirement
failed is not run and is reported); jobs that become ready together are submitted together (on SLURM: one job
array). A progress bar counts finished jobs and estimates the time left from the mean job time (tqdm).

**Sharing the cores (local).** With ``--jobs N`` each job gets ``cores // N`` of the CPUs this process may use:
``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS``, ``nnUNet_n_proc_DA`` and ``nnUNet_def_n_proc``
are set to that number, and the job's processes are pinned to their own cores (``sched_setaffinity``), because
``nnUNetv2_train``/``nnUNetv2_predict -device cpu`` call ``torch.set_num_threads(cpu_count())`` whatever the
environment says. On SLURM the same variables follow ``cpus_per_task`` and SLURM confines the job.

``submitit-local`` runs the SLURM code path with submitit's own local executor (every ready job at once, no cluster
needed): it is how the tests exercise submitit.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from nnunet_ext.benchmark.jobs import FAILED, FINISHED, Job, read_job_record, write_payload
from nnunet_ext.errors import UserInputError

EXECUTORS = ("local", "slurm", "submitit-local")


def thread_env(threads: int) -> dict[str, str]:
    threads = str(max(1, threads))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
            "nnUNet_n_proc_DA": threads, "nnUNet_def_n_proc": threads}


def core_slots(n_jobs: int, cores: list[int] | None = None) -> list[list[int]]:
    """Split the usable cores into ``n_jobs`` disjoint sets of ``len(cores) // n_jobs`` (at least one core each;
    with more jobs than cores, jobs share cores round-robin)."""
    cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
    per = max(1, len(cores) // n_jobs)
    return [[cores[(i * per + k) % len(cores)] for k in range(per)] for i in range(n_jobs)]


class LocalBackend:
    """Each job is ``python -m nnunet_ext.benchmark.jobs payload.json`` in its own process, pinned to its cores."""

    def __init__(self, n_jobs: int = 1, cores: list[int] | None = None):
        if n_jobs < 1:
            raise UserInputError(f"--jobs must be >= 1, got {n_jobs}")
        self.capacity = n_jobs
        self.free = core_slots(n_jobs, cores)

    def submit(self, jobs: list[Job]) -> list:
        handles = []
        for job in jobs:
            slot = self.free.pop()
            path = write_payload(job, thread_env(len(slot)))
            log = open(job.dir / "job.log", "w")
            proc = subprocess.Popen([sys.executable, "-m", "nnunet_ext.benchmark.jobs", str(path)],
                                    stdout=log, stderr=subprocess.STDOUT)
            # pin at once (no preexec_fn: this process has threads); the worker starts nnU-Net's commands only
            # after its imports, and they inherit the affinity
            try:
                os.sched_setaffinity(proc.pid, slot)
            except ProcessLookupError:  # already finished
                pass
            handles.append({"proc": proc, "slot": slot, "log": log, "path": job.dir / "job.log"})
        return handles

    def done(self, handle) -> bool:
        if handle["proc"].poll() is None:
            return False
        if handle["slot"] is not None:
            handle["log"].close()
            self.free.append(handle["slot"])
            handle["slot"] = None
        return True

    def log_path(self, handle) -> str:
        return str(handle["path"])

    def cancel(self, handle) -> None:
        if handle["proc"].poll() is None:
            handle["proc"].terminate()


def _no_sacct_noise(record) -> bool:
    return "Bypassing sacct error" not in record.getMessage()


class SubmititBackend:
    """submitit's AutoExecutor: ``cluster="slurm"`` (job arrays via sbatch) or ``"local"`` (tests)."""

    def __init__(self, folder: Path, cluster: str, name: str, resources: dict):
        import logging

        import submitit

        # without SLURM accounting (a one-node test cluster) every status poll logs a sacct error twice; submitit
        # then reads the job's result file, which is what counts here
        if _no_sacct_noise not in logging.getLogger("submitit").filters:
            logging.getLogger("submitit").addFilter(_no_sacct_noise)
        self.capacity = float("inf")
        self.executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
        params = {"name": name, "timeout_min": int(resources.get("time_min") or 240),
                  "cpus_per_task": int(resources.get("cpus_per_task") or 1), "tasks_per_node": 1, "nodes": 1}
        if resources.get("gpus_per_node"):
            params["gpus_per_node"] = int(resources["gpus_per_node"])
        if resources.get("mem_gb"):
            params["mem_gb"] = float(resources["mem_gb"])
        if cluster == "slurm":
            if resources.get("partition"):
                params["slurm_partition"] = resources["partition"]
            params["slurm_array_parallelism"] = int(resources.get("array_parallelism") or 256)
            if resources.get("additional"):
                params["slurm_additional_parameters"] = dict(resources["additional"])
        self.executor.update_parameters(**params)
        self.threads = params["cpus_per_task"]

    def submit(self, jobs: list[Job]) -> list:
        from nnunet_ext.benchmark.jobs import run_job_file

        paths = [str(write_payload(job, thread_env(self.threads))) for job in jobs]
        return self.executor.map_array(run_job_file, paths)

    def done(self, handle) -> bool:
        return handle.done()

    def log_path(self, handle) -> str:
        return str(handle.paths.stdout)

    def cancel(self, handle) -> None:
        handle.cancel(check=False)


def _record_crash(job: Job, record: dict | None, log_path: str) -> None:
    """A worker that died (killed, out of memory, cancelled) left no final ``job.json``: write one saying so."""
    from nnunet_ext.benchmark.jobs import JOB_FILE, _write_json

    record = dict(record or {}) if (record or {}).get("key") == job.key else {"key": job.key, "label": job.label}
    record.update(status=FAILED, error="the job's process ended without recording a result", log=log_path)
    job.dir.mkdir(parents=True, exist_ok=True)
    _write_json(job.dir / JOB_FILE, record)


def execute(jobs: list[Job], backend, poll_s: float = 0.5, progress: bool = True,
            log: Callable[[str], None] = print) -> dict[str, str]:
    """Run ``jobs`` (in dependency order) on ``backend``; return ``{job id: status}``. Statuses come from each job's
    ``job.json``: finished, failed (a crash without ``job.json`` is reported with the executor's log), or
    ``not run`` when a required job did not finish. Jobs outside ``jobs`` that they require count as finished."""
    from tqdm import tqdm

    status: dict[str, str] = {}
    pending = list(jobs)
    running: list[tuple[Job, object]] = []
    bar = tqdm(total=len(jobs), unit="job", desc="benchmark jobs", disable=not progress or not jobs,
               dynamic_ncols=True)
    ids = {j.id for j in jobs}
    try:
        while pending or running:
            still = []
            for job in pending:
                states = [status.get(r, FINISHED if r not in ids else None) for r in job.requires]
                if any(s not in (FINISHED, None) for s in states):
                    status[job.id] = "not run"
                    log(f"not running {job.id}: a required job did not finish")
                    bar.update(1)
                else:
                    still.append(job)
            pending = still
            ready = [j for j in pending if all(status.get(r, FINISHED if r not in ids else None) == FINISHED
                                               for r in j.requires)]
            free = backend.capacity - len(running)
            if ready and free > 0:
                batch = ready[:int(min(free, len(ready)))]
                for job, handle in zip(batch, backend.submit(batch)):
                    running.append((job, handle))
                    pending.remove(job)
            finished_now = [(j, h) for j, h in running if backend.done(h)]
            for job, handle in finished_now:
                running.remove((job, handle))
                record = read_job_record(job.dir)
                if record and record.get("key") == job.key and record.get("status") in (FINISHED, FAILED):
                    status[job.id] = record["status"]
                    if record["status"] == FAILED:
                        log(f"job {job.id} failed: {record.get('error')} (log: {record.get('log')})")
                else:
                    status[job.id] = FAILED
                    _record_crash(job, record, backend.log_path(handle))
                    log(f"job {job.id} crashed before recording a result (log: {backend.log_path(handle)})")
                bar.update(1)
                bar.set_postfix(failed=sum(s != FINISHED for s in status.values()))
            if not finished_now and running:
                time.sleep(poll_s)
    except BaseException:
        for _, handle in running:
            backend.cancel(handle)
        raise
    finally:
        bar.close()
    return status
