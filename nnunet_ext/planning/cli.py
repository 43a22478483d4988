"""``nnunet-ext plan_and_preprocess``: nnU-Net's fingerprint -> plan -> preprocess, with planners from ``planners/``.

nnU-Net's own entry point looks planners up by name inside the nnunetv2 package only; its Python API accepts a
class object, so this command resolves the name itself (nnU-Net's planners first, then ``planners/``) and calls
the API. Flags mirror ``nnUNetv2_plan_and_preprocess``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

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
    return cls


def _require_paths() -> None:
    for var in ("nnUNet_raw", "nnUNet_preprocessed"):
        if not os.environ.get(var):
            raise UserInputError(f"{var} is not set: run eval \"$(nnunet-ext env)\" first")


def plan_and_preprocess(dataset_ids: list[int], planner: str = "ExperimentPlanner",
                        configurations: tuple[str, ...] = ("2d", "3d_fullres"), num_processes: int = 1,
                        num_processes_fingerprint: int = 1, verify_dataset_integrity: bool = False,
                        gpu_memory_target: float | None = None, overwrite_plans_name: str | None = None,
                        no_pp: bool = False, clean: bool = False, verbose: bool = False) -> str:
    """Run fingerprint extraction, planning with ``planner`` and preprocessing; return the plans identifier."""
    _require_paths()
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA); 0 (deterministic training setting) crashes it.
    if os.environ.get("nnUNet_n_proc_DA") == "0":
        os.environ["nnUNet_n_proc_DA"] = "1"
    raw = Path(os.environ["nnUNet_raw"])
    for d in dataset_ids:
        if not any(raw.glob(f"Dataset{d:03d}_*")):
            raise UserInputError(f"no dataset with id {d} in {raw}")
    planner_class = find_planner_class(planner)

    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints,
                                                                       plan_experiment_dataset, preprocess)
    extract_fingerprints(dataset_ids, num_processes=num_processes_fingerprint,
                         check_dataset_integrity=verify_dataset_integrity, clean=clean, verbose=verbose)
    plans_identifier = None
    for d in dataset_ids:
        _, plans_identifier = plan_experiment_dataset(d, planner_class, gpu_memory_target,
                                                      overwrite_plans_name=overwrite_plans_name)
    if not no_pp:
        preprocess(dataset_ids, plans_identifier, configurations=list(configurations),
                   num_processes=[num_processes] * len(configurations), verbose=verbose)
    return plans_identifier


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", nargs="+", type=int, required=True, help="dataset id(s)")
    p.add_argument("-pl", default="ExperimentPlanner",
                   help="planner class name: nnU-Net's (ExperimentPlanner, nnUNetPlannerResEncM, ...) or one in "
                        "nnunet-ext's planners/ (CPUPlanner)")
    p.add_argument("-c", nargs="+", default=["2d", "3d_fullres"], help="configurations to preprocess")
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
