"""``nnunet-ext demo``: the main job, end to end on CPU in a fresh workspace.

synthesize a small ``breast_dce`` phantom -> plan and preprocess with nnU-Net (CPUPlanner) -> ``nnUNetv2_train``
with ``DemoTrainer`` -> ``nnUNetv2_predict`` on the test cases -> evaluate -> print a Dice table and write a report
folder (markdown + PNG overlays). ``--method`` selects the method (later issues add more).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from nnunet_ext.errors import UserInputError

DEMO_DATASET_ID = 501


def _nanmean(values):
    vals = [v for v in values if v is not None and v == v]
    return sum(vals) / len(vals) if vals else float("nan")


def run_nnunet_demo(workspace: Path, cases: int, test_cases: int, seed: int, epochs: int | None,
                    shape: tuple[int, ...] | None) -> dict:
    from nnunet_ext import pipeline
    from nnunet_ext.env import environment
    from nnunet_ext.metrics.evaluate import evaluate_folders
    from nnunet_ext.planning.cli import plan_and_preprocess
    from nnunet_ext.report import write_report
    from nnunet_ext.synth.cli import synthesize
    from nnunet_ext.training.demo import DemoTrainer

    timings = {}
    env = environment(workspace, keep_existing=False)
    if epochs:
        env["nnUNet_ext_epochs"] = str(epochs)
    env["nnUNet_ext_seed"] = str(seed)
    os.environ.update(env)
    run_env = dict(os.environ)

    t = time.time()
    print(f"[1/5] synthesizing breast_dce phantom: {cases} training + {test_cases} test cases")
    options = {"shape": shape} if shape else None
    (raw_folder,) = synthesize("breast_dce", DEMO_DATASET_ID, cases, seed, test_cases, raw=env["nnUNet_raw"],
                               overwrite=True, options=options)
    timings["synth"] = time.time() - t

    t = time.time()
    print("[2/5] nnU-Net fingerprint, planning (CPUPlanner) and preprocessing (3d_fullres)")
    plans = plan_and_preprocess([DEMO_DATASET_ID], "CPUPlanner", ("3d_fullres",), num_processes=1,
                                num_processes_fingerprint=1, verify_dataset_integrity=True)
    timings["plan_and_preprocess"] = time.time() - t

    logs = workspace / "logs"
    t = time.time()
    total = epochs or DemoTrainer.num_epochs_default
    print(f"[3/5] nnUNetv2_train {DEMO_DATASET_ID} 3d_fullres 0 -tr DemoTrainer -p {plans} -device cpu")
    pipeline.train(DEMO_DATASET_ID, "3d_fullres", 0, "DemoTrainer", plans, run_env, logs / "train.log", total)
    timings["train"] = time.time() - t

    t = time.time()
    pred_dir = workspace / "predictions"
    print("[4/5] nnUNetv2_predict on imagesTs")
    pipeline.predict(raw_folder / "imagesTs", pred_dir, DEMO_DATASET_ID, "3d_fullres", [0], "DemoTrainer", plans,
                     run_env, logs / "predict.log")
    timings["predict"] = time.time() - t

    t = time.time()
    print("[5/5] evaluating and writing the report")
    summary = evaluate_folders(raw_folder / "labelsTs", pred_dir)
    dataset_json = json.loads((raw_folder / "dataset.json").read_text())
    label_names = {str(v): k for k, v in dataset_json["labels"].items()}
    report = workspace / "report"
    table = write_report(report, "nnunet-ext demo: nnU-Net (DemoTrainer) on the breast_dce phantom", summary,
                         raw_folder / "imagesTs", raw_folder / "labelsTs", pred_dir, display_channel=1,
                         facts=[("dataset", raw_folder.name), ("command", "nnUNetv2_train "
                                f"{DEMO_DATASET_ID} 3d_fullres 0 -tr DemoTrainer -p {plans} -device cpu"),
                                ("timings (s)", ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))],
                         label_names=label_names)
    timings["evaluate_report"] = time.time() - t
    dice = _nanmean(m["Dice"] for m in summary["mean"].values())
    print("\n" + table + "\n")
    print(f"mean foreground Dice: {dice:.3f}    report: {report}/README.md")
    result = {"demo_dice": dice, "timings": timings, "report": str(report)}
    (workspace / "demo_result.json").write_text(json.dumps(result, indent=2))
    return result


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="nnunet", choices=["nnunet"],
                   help="which pipeline to demonstrate (nnunet: plain nnU-Net with DemoTrainer)")
    p.add_argument("--workspace", default="workspace/demo",
                   help="fresh folder for raw/preprocessed/results/report (deleted first if it exists)")
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--test_cases", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="override DemoTrainer's epochs")
    p.add_argument("--shape", type=int, nargs=3, default=None, help="phantom shape z y x")


def run(args: argparse.Namespace) -> int:
    workspace = Path(args.workspace).resolve()
    if workspace.exists():
        if not (workspace / "demo_result.json").exists() and any(workspace.iterdir()) and \
                not (workspace / "nnUNet_raw").exists():
            raise UserInputError(f"--workspace {workspace} exists and is not a demo workspace; choose another folder")
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    start = time.time()
    result = run_nnunet_demo(workspace, args.cases, args.test_cases, args.seed, args.epochs,
                             tuple(args.shape) if args.shape else None)
    print(f"demo finished in {time.time() - start:.0f} s")
    return 0 if result["demo_dice"] == result["demo_dice"] else 1
