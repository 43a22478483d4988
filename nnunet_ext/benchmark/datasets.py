"""Datasets of a study: written (synth), converted (``nnunet-ext convert``), derived from earlier ones by a command
(derive) or linked (existing), then planned and preprocessed, once per study, inside the study's workspace.

The workspace (``--workdir``) has its own ``nnUNet_raw`` and ``nnUNet_preprocessed``; an ``existing`` dataset is
symlinked into it from the user's raw folder and planned there, so the user's nnU-Net folders are only read.

Each dataset id gets a *fingerprint* that enters the key of every job using it:

- synth: SHA-256 of ``synthesize``'s arguments and of the phantom code (``nnunet_ext/synth/*.py``,
  ``nnunet_ext/imageio.py``): phantoms are deterministic per (seed, split, case index), so equal parameters and code
  give equal files;
- convert / derive / existing: SHA-256 of the raw folder's ``dataset.json`` and files (relative path + content; files
  whose size and modification time did not change since the last hash are not read again);

plus the planner and configurations. The state of the workspace is kept in ``datasets.json``; a dataset whose
fingerprint or planning changed is written and planned again (its old raw and preprocessed folders are ours and are
replaced), and the jobs using it get new keys, so they rerun.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from nnunet_ext.errors import UserInputError

PACKAGE = Path(__file__).resolve().parents[1]
STATE_FILE = "datasets.json"


@dataclass(frozen=True)
class DatasetInfo:
    """A prepared dataset id: its raw folder, fingerprint (data + planning), plans identifier and test set."""

    id: int
    folder: Path
    fingerprint: str
    plans: str
    test_images: Path
    test_labels: Path


def sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def code_hash(files) -> str:
    """SHA-256 over (relative name, content) of source files."""
    digest = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        digest.update(str(path.relative_to(PACKAGE.parent)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def synth_code_files() -> list[Path]:
    return sorted((PACKAGE / "synth").glob("*.py")) + [PACKAGE / "imageio.py"]


def synth_fingerprint(synth: dict) -> str:
    """Fingerprint of a phantom dataset before it is written: its parameters and the phantom code."""
    return sha256_json({"synth": synth, "code": code_hash(synth_code_files())})


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                           p.relative_to(folder).parts))


def folder_fingerprint(folder: Path, cache: dict | None = None) -> tuple[str, list]:
    """SHA-256 of a raw dataset folder's files (relative path + content); hidden files (ownership markers) are left
    out. ``cache`` is an earlier ``{"stat": ..., "sha256": ...}``: when no file's size or mtime changed, its hash is
    reused. Returns (hash, stat list)."""
    folder = Path(folder).resolve()
    files = _files(folder)
    stat = [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    if cache and cache.get("stat") == stat and cache.get("sha256"):
        return cache["sha256"], stat
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(folder)).encode() + b"\0")
        with open(p, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest(), stat


def study_environment(workdir: Path) -> dict[str, str]:
    """nnU-Net variables of a study: raw/preprocessed/results inside ``workdir``, our trainers, fast CPU settings."""
    from nnunet_ext.env import environment

    return environment(workdir, keep_existing=False)


def dataset_folder(raw: Path, dataset_id: int) -> Path | None:
    matches = sorted(p for p in raw.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir())
    return matches[0] if matches else None


def _remove_ours(root: Path, dataset_id: int) -> None:
    """Remove a dataset id's folders (or links) from a workspace root: everything there was made by the harness."""
    for path in root.glob(f"Dataset{dataset_id:03d}_*"):
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path)


def _run(cmd: list[str], env: Mapping[str, str], log: Path, what: str) -> str:
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, env=dict(env), capture_output=True, text=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise UserInputError(f"{what} failed (exit {proc.returncode}): {tail[0]} (log: {log})")
    return proc.stdout


def prepare_datasets(spec, workdir: Path, log: Callable[[str], None] = print) -> dict[int, DatasetInfo]:
    """Write/convert/link and plan every dataset of ``spec`` in ``workdir`` unless ``datasets.json`` shows it is
    already there with the same fingerprint and planning. Returns the prepared datasets by id."""
    from nnunet_ext.pipeline import nnunet_command

    workdir = Path(workdir).resolve()
    env = {**os.environ, **study_environment(workdir)}
    raw, preprocessed = Path(env["nnUNet_raw"]), Path(env["nnUNet_preprocessed"])
    for folder in (raw, preprocessed, Path(env["nnUNet_results"])):
        folder.mkdir(parents=True, exist_ok=True)
    state_path = workdir / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    infos: dict[int, DatasetInfo] = {}
    for dataset in spec.datasets:
        key = str(dataset.id)
        old = state.get(key, {})
        present = all(dataset_folder(raw, i) is not None for i in dataset.ids)
        try:
            source_fp = _acquire(dataset, raw, env, workdir, old, present, log, state)
        except UserInputError as exc:
            raise UserInputError(f"{dataset.path}: {exc}") from None
        planning = {"planner": dataset.planner, "configurations": list(dataset.configurations)}
        fingerprint = sha256_json({"data": source_fp["sha256"], "planning": planning})
        planned = old.get("fingerprint") == fingerprint and old.get("plans") and all(
            (preprocessed / dataset_folder(raw, i).name / f"{old['plans']}.json").is_file() for i in dataset.ids)
        if planned:
            plans = old["plans"]
        else:
            for i in dataset.ids:
                _remove_ours(preprocessed, i)
            log(f"planning and preprocessing dataset(s) {', '.join(map(str, dataset.ids))} with {dataset.planner} "
                f"({', '.join(dataset.configurations)})")
            out = _run([nnunet_command("nnunet-ext"), "plan_and_preprocess", "-d", *map(str, dataset.ids), "-pl",
                        dataset.planner, "-c", *dataset.configurations, "--clean"],
                       env, workdir / "logs" / f"plan_{dataset.id}.log", f"{dataset.path}: planning")
            plans = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                          if line.startswith("plans identifier:")), None)
            if not plans:
                raise UserInputError(f"{dataset.path}: planning printed no plans identifier "
                                     f"(log: {workdir / 'logs' / f'plan_{dataset.id}.log'})")
        state[key] = {**source_fp, "fingerprint": fingerprint, "plans": plans, "planning": planning}
        state_path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        for i in dataset.ids:
            folder = dataset_folder(raw, i)
            infos[i] = DatasetInfo(i, folder, sha256_json({"dataset": fingerprint, "id": i}), plans,
                                   Path(dataset.test_images) if dataset.test_images else folder / "imagesTs",
                                   Path(dataset.test_labels) if dataset.test_labels else folder / "labelsTs")
    return infos


def _acquire(dataset, raw: Path, env: Mapping[str, str], workdir: Path, old: dict, present: bool,
             log: Callable[[str], None], inputs: Mapping[str, dict] | None = None) -> dict:
    """Make the raw dataset(s) exist in the workspace; return ``{"source": ..., "sha256": ..., "stat": ...}``."""
    from nnunet_ext.pipeline import nnunet_command

    inputs = inputs or {}
    if dataset.source == "synth":
        fp = synth_fingerprint(dataset.synth)
        if not (present and old.get("sha256") == fp):
            from nnunet_ext.synth.cli import synthesize

            s = dataset.synth
            log(f"writing synth {s['kind']} dataset {dataset.id}" +
                (f" (+ pre-only {dataset.pre_only_id})" if dataset.pre_only_id else ""))
            for i in dataset.ids:
                _remove_ours(raw, i)
            synthesize(s["kind"], dataset.id, s["cases"], seed=s["seed"], test_cases=s["test_cases"], raw=str(raw),
                       overwrite=True, name=s["name"], pre_only_id=s["pre_only_id"],
                       labeled_cases=s["labeled_cases"], options=s["options"])
        return {"source": "synth", "sha256": fp}
    if dataset.source in ("convert", "derive"):
        if dataset.source == "convert":
            source_key = sha256_json({"convert": dataset.convert, "args": dataset.args, "ids": dataset.ids})
        else:  # the command, what it reads (the inputs' content) and the package code that runs it
            source_key = sha256_json({"derive": dataset.command, "ids": dataset.ids, "code": code_hash(
                PACKAGE.rglob("*.py")), "inputs": [inputs.get(str(i), {}).get("sha256") for i in dataset.inputs]})
        if not (present and old.get("source_key") == source_key):
            for i in dataset.ids:
                _remove_ours(raw, i)
            from nnunet_ext.provenance import REPOSITORY

            if dataset.source == "convert":
                # {repo}: the repository root, so specs can name data beside it (../shared/data)
                args = [a.replace("{repo}", str(REPOSITORY)) for a in dataset.args]
                cmd = [nnunet_command("nnunet-ext"), "convert", dataset.convert, *args, "-d", str(dataset.id)]
                if dataset.pre_only_id is not None:
                    cmd += ["--pre_only_id", str(dataset.pre_only_id)]
                what = f"nnunet-ext convert {dataset.convert}"
            else:
                values = {"id": str(dataset.id), "bin": str(Path(sys.executable).parent), "python": sys.executable,
                          "repo": str(REPOSITORY)}
                cmd = [re.sub(r"\{(id|bin|python|repo)\}", lambda m: values[m.group(1)], part)
                       for part in shlex.split(dataset.command)]
                what = f"derive dataset {dataset.id}"
            log(f"{dataset.source} dataset {dataset.id}: {' '.join(cmd[1:])}")
            _run(cmd, env, workdir / "logs" / f"{dataset.source}_{dataset.id}.log", what)
        digests, stats = [], []
        for i in dataset.ids:
            folder = dataset_folder(raw, i)
            if folder is None:
                raise UserInputError(f"the converter wrote no dataset {i} into {raw}")
            digest, stat = folder_fingerprint(folder, old.get("folders", {}).get(str(i)))
            digests.append(digest)
            stats.append((str(i), {"stat": stat, "sha256": digest}))
        return {"source": "convert", "source_key": source_key, "sha256": sha256_json(digests),
                "folders": dict(stats)}
    # existing: link the user's raw dataset into the workspace (read only)
    user_raw = Path(dataset.raw or os.environ.get("nnUNet_raw") or "")
    if not str(user_raw) or not user_raw.is_dir():
        raise UserInputError(f"existing dataset {dataset.id}: raw folder not found (set raw: DIR or nnUNet_raw), "
                             f"got '{user_raw}'")
    source = dataset_folder(user_raw, dataset.id)
    if source is None:
        raise UserInputError(f"existing dataset {dataset.id}: no Dataset{dataset.id:03d}_* in {user_raw}")
    link = raw / source.name
    if link.resolve() != source.resolve():
        _remove_ours(raw, dataset.id)
        link.symlink_to(source.resolve(), target_is_directory=True)
    digest, stat = folder_fingerprint(source, old.get("folders", {}).get(str(dataset.id)))
    return {"source": "existing", "sha256": digest, "folders": {str(dataset.id): {"stat": stat, "sha256": digest}}}
