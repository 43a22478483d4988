"""Jobs of a study: one per row x fold x seed (plus a fold-ensemble job per seed for rows with ``ensemble``), their
keys, the resume rule and the code that runs one job.

**Key.** SHA-256 of the row's definition as written (with the study defaults it inherits: env, schedule, folds,
seeds), the job's kind, fold and seed, the fingerprints of the datasets it reads (see
:mod:`nnunet_ext.benchmark.datasets`), the resolved plans identifier, the device, the deterministic flag, the
commit and -- for a working tree with uncommitted changes to tracked files -- the SHA-256 of ``git diff HEAD``,
and the keys of the jobs it requires. Executor, ``--jobs`` and thread counts are not part of it.

**Resume rule.** A job folder holds ``job.json`` (key, definition, status, provenance, metrics). A job whose
``job.json`` says ``finished`` with the same key is skipped. Any other folder at the job's place (another key, a
failed or interrupted run) is renamed aside and deleted before the job runs again: those folders are ours. So a
table never mixes outputs of different code, data or settings.

**Layout.** ``WORKDIR/jobs/<row slug>/<fold_F_>seed_S/``: ``job.json``, ``payload.json`` (what the worker ran),
``job.log`` (the worker's output), ``train.log``/``predict.log`` or ``command.log``, ``nnUNet_results/`` (this job's
nnU-Net results folder: seeds of one row must not share one), ``predictions/``, ``summary.json`` and
``per_case.csv`` (``nnunet-ext evaluate``).

A worker runs ``python -m nnunet_ext.benchmark.jobs WORKDIR/jobs/.../payload.json`` (local executor) or
:func:`run_job_file` through submitit (SLURM).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_ext.benchmark.spec import ENSEMBLE_SUFFIX, RowSpec, Spec
from nnunet_ext.errors import UserInputError
from nnunet_ext.provenance import REPOSITORY

FINISHED, FAILED, RUNNING = "finished", "failed", "running"
JOB_FILE, PAYLOAD_FILE = "job.json", "payload.json"


@dataclass
class Job:
    id: str                       # relative folder under WORKDIR/jobs, unique
    label: str                    # table row (ensemble jobs: "<row label> (ensemble)")
    row: RowSpec
    kind: str                     # train | ensemble | command
    fold: object                  # 0..4, "all", "ensemble" or None (command rows)
    seed: int
    key: str
    dir: Path
    requires: list[str] = field(default_factory=list)   # job ids
    payload: dict = field(default_factory=dict)


def slug(label: str) -> str:
    """Folder name of a row: readable part plus a short hash of the label (distinct labels never collide)."""
    text = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:40] or "row"
    return f"{text}-{hashlib.sha256(label.encode()).hexdigest()[:6]}"


def code_state(repo: str | os.PathLike = REPOSITORY) -> dict:
    """``{"commit", "dirty", "diff_sha256"}`` of the repository: the code part of every job key."""
    from nnunet_ext.provenance import git_output, git_state

    state = git_state(repo)
    diff = git_output(repo, "diff", "HEAD", "--binary") if state["dirty"] else None
    return {**state, "diff_sha256": None if diff is None else hashlib.sha256(diff).hexdigest()}


def _key(material: dict) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


# --- placeholders ----------------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(seed|fold|job_dir|workdir|repo|python|bin|device|dataset|results|checkpoint|model)"
                          r"(?::([^{}]+))?\}")


def _dataset_refs(row: RowSpec) -> set[int]:
    """Dataset ids named by ``{dataset:ID}`` placeholders in a row."""
    text = json.dumps(row.definition, default=str)
    refs = set()
    for name, arg in _PLACEHOLDER.findall(text):
        if name == "dataset" and arg:
            if not arg.isdigit():
                raise UserInputError(f"{row.path}: placeholder {{dataset:{arg}}} needs a dataset id")
            refs.add(int(arg))
    return refs


def substitute(text: str, values: dict, required: dict, datasets: dict, row: RowSpec) -> str:
    """Replace the placeholders documented in ``benchmarks/README.md``; ``{name:LABEL}`` refer to required rows."""
    def replace(match: re.Match) -> str:
        name, arg = match.group(1), match.group(2)
        if name == "dataset":
            if arg is None or not arg.isdigit() or int(arg) not in datasets:
                raise UserInputError(f"{row.path}: placeholder {match.group(0)} names no dataset of the spec")
            return str(datasets[int(arg)].folder)
        if name in ("results", "checkpoint", "model", "job_dir") and arg is not None:
            if arg not in required:
                raise UserInputError(f"{row.path}: placeholder {match.group(0)} names a row that is not in "
                                     f"requires")
            other: Job = required[arg]
            results = other.dir / "nnUNet_results"
            if name == "job_dir":
                return str(other.dir)
            if name == "results":
                return str(results)
            if other.kind not in ("train", "ensemble"):
                raise UserInputError(f"{row.path}: placeholder {match.group(0)}: '{arg}' is not a training row")
            model = model_folder(results, other.payload)
            if name == "model":
                return str(model)
            return str(model / f"fold_{other.fold}" / "checkpoint_final.pth")
        if arg is not None:
            raise UserInputError(f"{row.path}: placeholder {match.group(0)} takes no argument")
        return str(values[name])

    return _PLACEHOLDER.sub(replace, text)


# --- planning jobs ---------------------------------------------------------------------------------------------------

def _required_job(jobs_by_row: dict, label: str, seed: int, fold) -> Job:
    candidates = [j for j in jobs_by_row[label] if j.seed == seed]
    if len(candidates) == 1:
        return candidates[0]
    return next(j for j in candidates if j.fold == fold)


def plan_jobs(spec: Spec, workdir: Path, datasets: dict, device: str, code: dict) -> list[Job]:
    """Expand ``spec`` into jobs in dependency order, with keys and payloads (placeholders resolved)."""
    from nnunet_ext.benchmark.datasets import study_environment

    workdir = Path(workdir).resolve()
    base_env = study_environment(workdir)
    base_env.pop("nnUNet_results")
    base_env["nnUNet_ext_deterministic"] = "1" if spec.deterministic else "0"
    common_key = {"commit": code.get("commit"), "diff": code.get("diff_sha256"), "device": device,
                  "deterministic": spec.deterministic}
    by_label = {r.label: r for r in spec.rows}
    order, seen = [], set()

    def visit(row: RowSpec) -> None:
        if row.label in seen:
            return
        for required in row.requires:
            visit(by_label[required])
        seen.add(row.label)
        order.append(row)

    for row in spec.rows:
        visit(row)

    jobs: list[Job] = []
    jobs_by_row: dict[str, list[Job]] = {}
    for row in order:
        row_jobs = []
        refs = _dataset_refs(row)
        for i in refs:
            if i not in datasets:
                raise UserInputError(f"{row.path}: placeholder {{dataset:{i}}} names no dataset of the spec")
        for seed in row.seeds:
            for fold in row.folds:
                required = {label: _required_job(jobs_by_row, label, seed, fold) for label in row.requires}
                fold_part = "" if fold is None else f"fold_{fold}_"
                job_dir = workdir / "jobs" / slug(row.label) / f"{fold_part}seed_{seed}"
                values = {"seed": seed, "fold": "" if fold is None else fold, "job_dir": job_dir,
                          "workdir": workdir, "repo": REPOSITORY, "python": sys.executable,
                          "bin": Path(sys.executable).parent, "device": device}

                def sub(text):
                    return None if text is None else substitute(text, values, required, datasets, row)

                env = {**base_env, **{k: sub(v) for k, v in row.env.items()}, "nnUNet_ext_seed": str(seed)}
                material = {**common_key, "row": row.definition, "kind": row.kind, "fold": fold, "seed": seed,
                            "requires": sorted(j.key for j in required.values()),
                            "datasets": {str(i): datasets[i].fingerprint for i in sorted(refs)}}
                payload = {"kind": row.kind, "label": row.label, "fold": fold, "seed": seed, "job_dir": str(job_dir),
                           "device": device, "env": env}
                if row.kind == "train":
                    info = datasets[row.dataset]
                    plans = row.plans or info.plans
                    material["datasets"][str(row.dataset)] = info.fingerprint
                    material["plans"] = plans
                    schedule = {"epochs": "nnUNet_ext_epochs", "iterations": "nnUNet_ext_iters",
                                "val_iterations": "nnUNet_ext_val_iters"}
                    env.update({schedule[k]: str(v) for k, v in row.schedule.items()})
                    env["nnUNet_results"] = str(job_dir / "nnUNet_results")
                    payload.update(predict=row.predict, dataset_id=row.dataset, dataset_name=info.folder.name,
                                   trainer=row.trainer, evaluate=row.evaluate, hc18_csv=sub(row.hc18_csv),
                                   predict_args=list(row.predict_args), raw_labels=str(info.folder / "labelsTr"),
                                   regions=row.regions,
                                   plans=plans, configuration=row.configuration,
                                   test_images=str(sub(row.test_images) or info.test_images),
                                   test_labels=str(sub(row.test_labels) or info.test_labels))
                else:
                    payload.update({k: sub(getattr(row, k)) for k in ("command", "setup", "teardown", "json")})
                    payload.update(cwd=sub(row.cwd) or str(REPOSITORY), extract=row.extract,
                                   timeout_min=row.timeout_min)
                    env.setdefault("nnUNet_results", str(job_dir / "nnUNet_results"))
                key = _key(material)
                job = Job(id=str(job_dir.relative_to(workdir / "jobs")), label=row.label, row=row, kind=row.kind,
                          fold=fold, seed=seed, key=key, dir=job_dir, requires=[j.id for j in required.values()],
                          payload={**payload, "key": key})
                row_jobs.append(job)
        jobs_by_row[row.label] = row_jobs
        jobs.extend(row_jobs)
        if row.kind == "train" and row.ensemble:
            ensemble_label = row.label + ENSEMBLE_SUFFIX
            ensemble_jobs = []
            for seed in row.seeds:
                members = [j for j in row_jobs if j.seed == seed and j.fold != "all"]
                job_dir = workdir / "jobs" / slug(ensemble_label) / f"seed_{seed}"
                key = _key({**common_key, "kind": "ensemble", "seed": seed, "members": [j.key for j in members]})
                first = members[0].payload
                env = {**first["env"], "nnUNet_results": str(job_dir / "nnUNet_results")}
                payload = {**{k: first[k] for k in ("dataset_id", "dataset_name", "trainer", "plans",
                                                     "configuration", "test_images", "test_labels", "device")},
                           "kind": "ensemble", "label": ensemble_label, "fold": "ensemble", "seed": seed,
                           "job_dir": str(job_dir), "env": env, "key": key,
                           "members": {str(j.fold): str(j.dir) for j in members}}
                ensemble_jobs.append(Job(id=str(job_dir.relative_to(workdir / "jobs")), label=ensemble_label,
                                         row=row, kind="ensemble", fold="ensemble", seed=seed, key=key, dir=job_dir,
                                         requires=[j.id for j in members], payload=payload))
            jobs_by_row[ensemble_label] = ensemble_jobs
            jobs.extend(ensemble_jobs)
    return jobs


# --- state on disk ---------------------------------------------------------------------------------------------------

def read_job_record(job_dir: str | os.PathLike) -> dict | None:
    path = Path(job_dir) / JOB_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def job_state(job: Job) -> str:
    """``finished`` (same key, done: skip), ``absent`` or ``stale`` (anything else at the job's place: rerun)."""
    record = read_job_record(job.dir)
    if record is None and not job.dir.exists():
        return "absent"
    if record and record.get("key") == job.key and record.get("status") == FINISHED:
        return FINISHED
    return "stale"


def retire(folder: Path) -> None:
    """Rename a stale job folder aside, then delete it (it is the harness's own output)."""
    if folder.exists() or folder.is_symlink():
        aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.stale-", dir=folder.parent))
        os.rename(folder, aside / folder.name)
        shutil.rmtree(aside, ignore_errors=True)


def _write_json(path: Path, data: dict) -> None:
    from nnunet_ext.atomic import atomic_output_file

    with atomic_output_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_payload(job: Job, extra_env: dict | None = None) -> Path:
    """Write what the worker runs (the payload with executor-specific thread settings) into the job folder."""
    job.dir.mkdir(parents=True, exist_ok=True)
    payload = {**job.payload, "env": {**job.payload["env"], **(extra_env or {})}}
    path = job.dir / PAYLOAD_FILE
    _write_json(path, payload)
    return path


# --- running one job (in the worker) ---------------------------------------------------------------------------------

def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_job_file(payload_path: str) -> str:
    """Entry point of a worker (local subprocess or submitit job): run the payload, return its status. Never
    raises for a failing job: the failure (message, log path) goes into ``job.json``."""
    payload = json.loads(Path(payload_path).read_text())
    return run_job(payload)


def job_provenance(command: str | None, device: str) -> dict:
    """:func:`nnunet_ext.provenance.collect` of this worker; for ``cpu`` without importing torch (4 s per job)."""
    from nnunet_ext import provenance

    if device != "cpu":
        return provenance.collect(command=command, device=device)
    import platform

    return {**provenance.git_state(), "command": command, "date": _now(),
            "machine": {"platform": platform.platform(), "processor": platform.machine(),
                        "cpu_count": os.cpu_count()},
            "versions": provenance.software_versions(), "device": f"cpu ({os.cpu_count()} cores)"}


def run_job(payload: dict) -> str:
    job_dir = Path(payload["job_dir"])
    job_dir.mkdir(parents=True, exist_ok=True)
    record = {"key": payload["key"], "label": payload["label"], "kind": payload["kind"], "fold": payload["fold"],
              "seed": payload["seed"], "status": RUNNING, "started": _now(), "host": os.uname().nodename,
              "provenance": {**job_provenance(payload.get("invocation"), payload["device"]),
                             "key_commit": payload.get("key_commit")}}
    _write_json(job_dir / JOB_FILE, record)
    env = {**os.environ, **payload["env"]}
    start = time.time()
    try:
        runner = {"train": _run_train, "ensemble": _run_ensemble, "command": _run_command}[payload["kind"]]
        metrics, per_case = runner(payload, job_dir, env)
        record.update(status=FINISHED, metrics=metrics)
        if per_case:
            record["per_case"] = per_case
    except Exception as exc:  # reported, never raised: one failing job must not stop the others
        log = getattr(exc, "log", None) or _log_from_message(str(exc)) or str(job_dir / "job.log")
        record.update(status=FAILED, error=str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc),
                      log=log)
        print(traceback.format_exc(), file=sys.stderr, flush=True)
    record.update(finished=_now(), wall_seconds=round(time.time() - start, 2))
    _write_json(job_dir / JOB_FILE, record)
    return record["status"]


def _log_from_message(message: str) -> str | None:
    match = re.search(r"^log: (.+)$", message, re.MULTILINE)
    return match.group(1).strip() if match else None


def model_folder(results: str | Path, payload: dict) -> Path:
    """``results/<dataset>/<trainer>__<plans>__<configuration>`` of a training job (nnU-Net's naming)."""
    from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

    return Path(results) / payload["dataset_name"] / convert_trainer_plans_config_to_identifier(
        payload["trainer"], payload["plans"], payload["configuration"])


def _evaluate(payload: dict, job_dir: Path, predictions: Path, references: str | Path | None = None) -> dict | None:
    """Evaluate ``predictions`` (summary.json, per_case.csv in the job folder; the report reads per-label metrics and
    negative-scan false positives from summary.json); with ``hc18_csv``, return the per-case HC18 figures
    ``{case: {"HC_abs_diff_mm", "HD95_px"}}``; HD95_px is in pixels of the evaluated images (a dataset converted with
    ``--downsample F`` has pixels F times the original HC18 pixel)."""
    from nnunet_ext.metrics.evaluate import case_name, evaluate_folders

    summary = evaluate_folders(references or payload["test_labels"], predictions, output_json=job_dir / "summary.json",
                               output_csv=job_dir / "per_case.csv", hc18_csv=payload.get("hc18_csv"),
                               regions=payload.get("regions"))
    if not payload.get("hc18_csv"):
        return None
    per_case = {}
    for case in summary["metric_per_case"]:
        name = case_name(case["prediction_file"])
        hc = summary["head_circumference"]["per_case"][name]
        hd95 = [m["HD95"] for label, m in case["metrics"].items() if str(label) != "0"]
        per_case[name] = {"HC_abs_diff_mm": hc["abs_diff_mm"],
                          "HD95_px": hd95[0] / hc["pixel_size_mm"] if len(hd95) == 1 else math.nan}
    return per_case


def _validation_references(payload: dict, job_dir: Path, predictions: Path) -> Path:
    """A folder of links to the raw labels of the fold's validation cases (the predictions' names)."""
    from nnunet_ext.metrics.evaluate import IMAGE_ENDINGS

    references = job_dir / "validation_references"
    if references.exists():
        shutil.rmtree(references)
    references.mkdir()
    for prediction in sorted(predictions.iterdir()):
        if any(prediction.name.endswith(e) for e in IMAGE_ENDINGS):
            label = Path(payload["raw_labels"]) / prediction.name
            if not label.is_file():
                raise RuntimeError(f"validation prediction {prediction.name} has no reference in {label.parent}")
            (references / prediction.name).symlink_to(label.resolve())
    return references


def _run_train(payload: dict, job_dir: Path, env: dict) -> tuple[dict, None]:
    from nnunet_ext import pipeline

    t = time.time()
    pipeline.train(payload["dataset_id"], payload["configuration"], payload["fold"], payload["trainer"],
                   payload["plans"], env, job_dir / "train.log", device=payload["device"])
    train_s = time.time() - t
    if not payload.get("predict", True):
        return {"train_seconds": round(train_s, 2)}, None
    if payload.get("evaluate") == "validation":
        predictions = model_folder(env["nnUNet_results"], payload) / f"fold_{payload['fold']}" / "validation"
        if not predictions.is_dir():
            raise RuntimeError(f"no validation predictions in {predictions} (was nnU-Net's final validation "
                               f"skipped?)")
        per_case = _evaluate(payload, job_dir, predictions, _validation_references(payload, job_dir, predictions))
        return {"train_seconds": round(train_s, 2)}, per_case
    t = time.time()
    predictions = job_dir / "predictions"
    pipeline.predict(payload["test_images"], predictions, payload["dataset_id"], payload["configuration"],
                     [payload["fold"]], payload["trainer"], payload["plans"], env, job_dir / "predict.log",
                     extra=payload.get("predict_args", ()), device=payload["device"])
    predict_s = time.time() - t
    per_case = _evaluate(payload, job_dir, predictions) if payload.get("evaluate") != "none" else None
    return {"train_seconds": round(train_s, 2), "predict_seconds": round(predict_s, 2)}, per_case


def _run_ensemble(payload: dict, job_dir: Path, env: dict) -> tuple[dict, None]:
    """``nnUNetv2_predict -f 0 1 ...`` over the fold jobs' models, gathered in this job's results folder by links."""
    from nnunet_ext import pipeline

    model = model_folder(env["nnUNet_results"], payload)
    model.mkdir(parents=True, exist_ok=True)
    folds = sorted(payload["members"], key=int)
    for fold in folds:
        source = model_folder(Path(payload["members"][fold]) / "nnUNet_results", payload)
        if not (source / f"fold_{fold}" / "checkpoint_final.pth").is_file():
            raise RuntimeError(f"fold {fold} has no checkpoint_final.pth in {source}")
        (model / f"fold_{fold}").symlink_to(source / f"fold_{fold}", target_is_directory=True)
        for name in ("dataset.json", "plans.json", "dataset_fingerprint.json"):
            if not (model / name).exists() and (source / name).exists():
                (model / name).symlink_to(source / name)
    (job_dir / "ensemble.json").write_text(json.dumps({"folds": folds, "model": str(model)}, indent=2) + "\n")
    t = time.time()
    predictions = job_dir / "predictions"
    pipeline.predict(payload["test_images"], predictions, payload["dataset_id"], payload["configuration"], folds,
                     payload["trainer"], payload["plans"], env, job_dir / "predict.log",
                     extra=payload.get("predict_args", ()), device=payload["device"])
    predict_s = time.time() - t
    return {"predict_seconds": round(predict_s, 2)}, _evaluate(payload, job_dir, predictions)


class CommandFailed(RuntimeError):
    def __init__(self, message: str, log: Path):
        super().__init__(message)
        self.log = str(log)


def _shell(command: str, cwd: str, env: dict, log, timeout_s: float | None, what: str, log_path: Path) -> str:
    log.write(f"$ {command}    # {what}, cwd {cwd}\n")
    log.flush()
    try:
        proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        log.write(output)
        raise CommandFailed(f"{what} timed out after {timeout_s:.0f} s: {command}", log_path) from None
    except FileNotFoundError:
        raise CommandFailed(f"{what}: working directory {cwd} does not exist", log_path) from None
    log.write(proc.stdout)
    log.flush()
    if proc.returncode != 0:
        raise CommandFailed(f"{what} failed (exit {proc.returncode}): {command}", log_path)
    return proc.stdout


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise RuntimeError(f"{what}: '{text}' is not a number") from None


def _run_command(payload: dict, job_dir: Path, env: dict) -> tuple[dict, dict | None]:
    """setup (not timed) -> command (timed: metric ``seconds``) -> teardown (always); metrics from regexes over
    the command's output and from a JSON file it writes."""
    log_path = job_dir / "command.log"
    timeout = payload["timeout_min"] * 60 if payload.get("timeout_min") else None
    cwd = payload["cwd"]
    with open(log_path, "w") as log:
        try:
            if payload.get("setup"):
                _shell(payload["setup"], cwd if Path(cwd).is_dir() else str(job_dir), env, log, timeout, "setup",
                       log_path)
            t = time.time()
            output = _shell(payload["command"], cwd, env, log, timeout, "command", log_path)
            metrics = {"seconds": round(time.time() - t, 2)}
        finally:
            if payload.get("teardown"):
                try:
                    _shell(payload["teardown"], str(job_dir), env, log, timeout, "teardown", log_path)
                except CommandFailed as exc:
                    log.write(f"{exc}\n")
    for name, pattern in payload.get("extract", {}).items():
        matches = re.findall(pattern, output, re.MULTILINE)
        if not matches:
            raise CommandFailed(f"extract.{name}: pattern {pattern!r} not found in the command's output", log_path)
        last = matches[-1]
        metrics[name] = _number(last[0] if isinstance(last, tuple) else last, f"extract.{name}")
    per_case = None
    if payload.get("json"):
        path = Path(payload["json"])
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandFailed(f"json: cannot read {path} ({exc.__class__.__name__})", log_path) from None
        for key, value in data.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[key] = float(value)
        if isinstance(data.get("per_case"), dict):
            per_case = {str(case): {m: float("nan") if v is None else float(v) for m, v in values.items()
                                    if v is None or isinstance(v, (int, float)) and not isinstance(v, bool)}
                        for case, values in data["per_case"].items() if isinstance(values, dict)}
    return metrics, per_case


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m nnunet_ext.benchmark.jobs PAYLOAD_JSON", file=sys.stderr)
        return 2
    return 0 if run_job_file(argv[0]) == FINISHED else 1


if __name__ == "__main__":
    sys.exit(main())
