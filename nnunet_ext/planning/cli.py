"""``nnunet-ext plan_and_preprocess``: nnU-Net's fingerprint -> plan -> preprocess, with planners from ``planners/``.

nnU-Net's own entry point looks planners up by name inside the nnunetv2 package only; its Python API accepts a
class object, so this command resolves the name itself (nnU-Net's planners first, then ``planners/``) and calls
the API. Flags mirror ``nnUNetv2_plan_and_preprocess``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from nnunet_ext.env import environ_set
from nnunet_ext.errors import UserInputError


def find_planner_class(name: str):
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from nnunet_ext.env import planners_folder

    cls = recursive_find_python_class(os.path.join(nnunetv2.__path__[0], "experiment_planning"), name,
                                      current_module="nnunetv2.experiment_planning")
    if cls is None and planners_folder().is_dir():
        folder = str(planners_folder())
        cls = recursive_find_python_class(folder, name, None, base_folder=folder,
                                          cleanup_imports_from_base_folder=True)
    if cls is None:
        raise UserInputError(f"planner '{name}' not found in nnunetv2.experiment_planning nor in {planners_folder()}")
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    if not (isinstance(cls, type) and issubclass(cls, ExperimentPlanner)):
        raise UserInputError(f"-pl {name} is not an experiment planner (no subclass of nnU-Net's ExperimentPlanner)")
    return cls


#: Configurations nnU-Net's planners write (``3d_lowres`` only when the images are large; skipped otherwise).
KNOWN_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")
_PLANS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _root(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        raise UserInputError(f"{var} is not set: run eval \"$(nnunet-ext env)\" first")
    return Path(value)


def _dataset_folder_name(dataset_id: int, raw: Path) -> str:
    """The raw dataset's folder name, with the checks nnU-Net would otherwise fail on with a traceback."""
    prefix = f"Dataset{dataset_id:03d}_"
    matches = sorted(p for p in raw.iterdir() if p.is_dir() and p.name.startswith(prefix))
    if not matches:
        raise UserInputError(f"no dataset with id {dataset_id} in {raw}")
    if len(matches) > 1:
        raise UserInputError(f"dataset id {dataset_id} is ambiguous in {raw}: {', '.join(p.name for p in matches)}")
    name = matches[0].name
    if not (matches[0] / "dataset.json").is_file():
        raise UserInputError(f"{matches[0]} has no dataset.json")
    # nnU-Net resolves an id across raw, preprocessed and results; another name there makes it refuse the id
    for var in ("nnUNet_preprocessed", "nnUNet_results"):
        root = Path(os.environ[var]) if os.environ.get(var) else None
        if root is not None and root.is_dir():
            others = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix)
                            and p.name != name)
            if others:
                raise UserInputError(f"dataset id {dataset_id} is {name} in {raw} but {', '.join(others)} in "
                                     f"{root}; remove or rename the stale folder")
    return name


def _check_arguments(dataset_ids: list[int], configurations: tuple[str, ...], num_processes: int,
                     num_processes_fingerprint: int, gpu_memory_target: float | None,
                     overwrite_plans_name: str | None) -> None:
    if not dataset_ids:
        raise UserInputError("-d needs at least one dataset id")
    for dataset_id in dataset_ids:
        if not 1 <= dataset_id <= 999:
            raise UserInputError(f"-d: dataset id must be in 1..999, got {dataset_id}")
    if len(set(dataset_ids)) != len(dataset_ids):
        raise UserInputError(f"-d lists a dataset id twice: {' '.join(map(str, dataset_ids))}")
    unknown = [c for c in configurations if c not in KNOWN_CONFIGURATIONS]
    if unknown:
        raise UserInputError(f"-c: unknown configuration {', '.join(unknown)} (choose from "
                             f"{', '.join(KNOWN_CONFIGURATIONS)})")
    for flag, value in (("-np", num_processes), ("-npfp", num_processes_fingerprint)):
        if value < 1:
            raise UserInputError(f"{flag} must be >= 1, got {value}")
    if gpu_memory_target is not None and not gpu_memory_target > 0:
        raise UserInputError(f"-gpu_memory_target must be > 0 (GB), got {gpu_memory_target}")
    if overwrite_plans_name is not None and not _PLANS_NAME.match(overwrite_plans_name):
        raise UserInputError(f"-overwrite_plans_name '{overwrite_plans_name}' must be a plain file name (letters, "
                             f"digits, '_', '-', '.')")


@dataclass
class _Snapshot:
    """What a dataset's preprocessed folder held before this run, kept so a failed run can be undone.

    ``backup`` is a replica of the folder: files nnU-Net rewrites in place (the top-level JSON files, and
    ``gt_segmentations/``) are copied; files in the configuration data folders, which nnU-Net deletes before
    writing anew, are hard links (no data copied).
    """

    folder: Path
    backup: Path | None  # None: the folder did not exist


def _take_snapshot(folder: Path) -> _Snapshot:
    if not folder.exists():
        return _Snapshot(folder, None)
    backup = Path(tempfile.mkdtemp(prefix=f".{folder.name}.before-", dir=folder.parent))
    try:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            target = backup / relative
            if path.is_dir() and not path.is_symlink():
                target.mkdir()
            elif len(relative.parts) == 1 or relative.parts[0] == "gt_segmentations" or path.is_symlink():
                shutil.copy2(path, target, follow_symlinks=False)
            else:
                try:
                    os.link(path, target)
                except OSError:  # file systems without hard links
                    shutil.copy2(path, target)
        shutil.copystat(folder, backup)
    except BaseException:
        shutil.rmtree(backup, ignore_errors=True)
        raise
    return _Snapshot(folder, backup)


def _restore(snapshot: _Snapshot) -> None:
    """Put the folder back as it was: remove what this run created, bring back what it changed or deleted."""
    folder = snapshot.folder
    if folder.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.failed-", dir=folder.parent))
        os.rename(folder, aside / folder.name)
        shutil.rmtree(aside, ignore_errors=True)
    if snapshot.backup is not None:
        os.rename(snapshot.backup, folder)


@contextlib.contextmanager
def _undo_on_failure(preprocessed: Path, dataset_names: list[str]) -> Iterator[None]:
    """Run the block; if it raises (anything, KeyboardInterrupt included), leave ``preprocessed`` as it was."""
    root_existed = preprocessed.exists()
    preprocessed.mkdir(parents=True, exist_ok=True)
    snapshots = []
    try:
        for name in dataset_names:
            snapshots.append(_take_snapshot(preprocessed / name))
        yield
    except BaseException:
        for snapshot in snapshots:
            _restore(snapshot)
        if not root_existed and not any(preprocessed.iterdir()):
            preprocessed.rmdir()
        raise
    for snapshot in snapshots:
        if snapshot.backup is not None:
            shutil.rmtree(snapshot.backup, ignore_errors=True)


def _verify_raw_dataset(raw: Path, name: str, num_processes: int) -> None:
    """nnU-Net's integrity check, with its failure (an assertion or RuntimeError) as a one-line UserInputError."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    try:
        verify_dataset_integrity(str(raw / name), num_processes)
    except (AssertionError, RuntimeError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserInputError(f"{name} fails nnU-Net's dataset integrity check: {first}") from None


def plan_and_preprocess(dataset_ids: list[int], planner: str = "ExperimentPlanner",
                        configurations: tuple[str, ...] = ("2d", "3d_fullres"), num_processes: int = 1,
                        num_processes_fingerprint: int = 1, verify_dataset_integrity: bool = False,
                        gpu_memory_target: float | None = None, overwrite_plans_name: str | None = None,
                        no_pp: bool = False, clean: bool = False, verbose: bool = False) -> str:
    """Run fingerprint extraction, planning with ``planner`` and preprocessing; return the plans identifier.

    Every argument is checked before any work. If anything fails, each dataset's folder in nnUNet_preprocessed is
    put back as it was (new files and folders removed, overwritten plans/fingerprint restored).
    """
    configurations = tuple(configurations)
    _check_arguments(list(dataset_ids), configurations, num_processes, num_processes_fingerprint,
                     gpu_memory_target, overwrite_plans_name)
    raw = _root("nnUNet_raw")
    preprocessed = _root("nnUNet_preprocessed")
    if not raw.is_dir():
        raise UserInputError(f"nnUNet_raw folder {raw} does not exist")
    if preprocessed.exists() and not preprocessed.is_dir():
        raise UserInputError(f"nnUNet_preprocessed {preprocessed} is not a folder")
    names = [_dataset_folder_name(d, raw) for d in dataset_ids]
    planner_class = find_planner_class(planner)
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA); 0 (deterministic training setting) crashes it.
    workers = {"nnUNet_n_proc_DA": "1"} if os.environ.get("nnUNet_n_proc_DA") == "0" else {}

    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints,
                                                                       plan_experiment_dataset, preprocess)
    with environ_set(workers), _undo_on_failure(preprocessed, names):
        if verify_dataset_integrity:
            for name in names:
                _verify_raw_dataset(raw, name, num_processes_fingerprint)
        extract_fingerprints(list(dataset_ids), num_processes=num_processes_fingerprint,
                             check_dataset_integrity=False, clean=clean, verbose=verbose)
        plans_identifier = None
        for d in dataset_ids:
            _, plans_identifier = plan_experiment_dataset(d, planner_class, gpu_memory_target,
                                                          overwrite_plans_name=overwrite_plans_name)
        if not no_pp:
            preprocess(list(dataset_ids), plans_identifier, configurations=list(configurations),
                       num_processes=[num_processes] * len(configurations), verbose=verbose)
    return plans_identifier


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", nargs="+", type=int, required=True, help="dataset id(s)")
    p.add_argument("-pl", default="ExperimentPlanner",
                   help="planner class name: nnU-Net's (ExperimentPlanner, nnUNetPlannerResEncM, ...) or one in "
                        "nnunet-ext's planners/ (CPUPlanner)")
    p.add_argument("-c", nargs="+", default=["2d", "3d_fullres"],
                   help=f"configurations to preprocess ({', '.join(KNOWN_CONFIGURATIONS)})")
    p.add_argument("-np", type=int, default=1, help="processes for preprocessing")
    p.add_argument("-npfp", type=int, default=1, help="processes for fingerprint extraction")
    p.add_argument("-gpu_memory_target", type=float, default=None)
    p.add_argument("-overwrite_plans_name", default=None)
    p.add_argument("--verify_dataset_integrity", action="store_true")
    p.add_argument("--no_pp", action="store_true", help="plan only, do not preprocess")
    p.add_argument("--clean", action="store_true", help="recompute the fingerprint even if it exists")
    p.add_argument("--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    plans = plan_and_preprocess(args.d, args.pl, tuple(args.c), args.np, args.npfp, args.verify_dataset_integrity,
                                args.gpu_memory_target, args.overwrite_plans_name, args.no_pp, args.clean,
                                args.verbose)
    print(f"plans identifier: {plans}")
    return 0
