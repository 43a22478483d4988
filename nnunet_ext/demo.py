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
DKM_PRE_ONLY_ID = 502
DKM_DM_EPOCHS, DKM_SM_EPOCHS = 15, 12  # x 12 iterations, sized for < 10 min on 2 CPU cores


def _nanmean(values):
    vals = [v for v in values if v is not None and v == v]
    return sum(vals) / len(vals) if vals else float("nan")


def run_demo(workspace: Path, method: str, cases: int, test_cases: int, seed: int, epochs: int | None,
             shape: tuple[int, ...] | None) -> dict:
    """Run one demo pipeline in ``workspace``; return ``{"demo_dice", "timings", "report"}``.

    nnunet: breast_dce (pre + 2 post) -> ``DemoTrainer``.
    dkm: breast_dce DCE dataset -> ``DKMDiffusionTrainer_small`` (fold all); its pre-contrast-only copy ->
    ``DKMTrainer_small`` (fold 0); prediction from pre-contrast images only; post-contrast synthesis PSNR/SSIM.
    """
    from nnunet_ext import pipeline
    from nnunet_ext.env import environment
    from nnunet_ext.metrics.evaluate import evaluate_folders
    from nnunet_ext.planning.cli import plan_and_preprocess
    from nnunet_ext.report import write_report
    from nnunet_ext.synth.cli import synthesize
    from nnunet_ext.training.demo import DemoTrainer

    timings: dict[str, float] = {}
    env = environment(workspace, keep_existing=False)
    env["nnUNet_ext_seed"] = str(seed)
    if method == "dkm":  # the DKM trainers keep nnU-Net's 250 iterations per epoch; the demo uses DemoTrainer's
        env.update(nnUNet_ext_iters=str(DemoTrainer.iterations_per_epoch_default),
                   nnUNet_ext_val_iters=str(DemoTrainer.val_iterations_default))
    if epochs:
        env["nnUNet_ext_epochs"] = str(epochs)
    os.environ.update(env)
    run_env = dict(os.environ)
    logs = workspace / "logs"
    dkm = method == "dkm"
    seg_id = DKM_PRE_ONLY_ID if dkm else DEMO_DATASET_ID
    trainer = "DKMTrainer_small" if dkm else "DemoTrainer"
    steps = 6 if dkm else 5

    t = time.time()
    print(f"[1/{steps}] synthesizing breast_dce phantom: {cases} training + {test_cases} test cases"
          + (" (+ pre-contrast-only copy)" if dkm else ""))
    folders = synthesize("breast_dce", DEMO_DATASET_ID, cases, seed, test_cases, raw=env["nnUNet_raw"],
                         overwrite=True, pre_only_id=DKM_PRE_ONLY_ID if dkm else None,
                         options={"shape": shape} if shape else None)
    seg_raw = folders[-1]
    timings["synth"] = time.time() - t

    t = time.time()
    ids = [DEMO_DATASET_ID, DKM_PRE_ONLY_ID] if dkm else [DEMO_DATASET_ID]
    print(f"[2/{steps}] nnU-Net fingerprint, planning (CPUPlanner) and preprocessing (3d_fullres)")
    plans = plan_and_preprocess(ids, "CPUPlanner", ("3d_fullres",), verify_dataset_integrity=True)
    timings["plan_and_preprocess"] = time.time() - t

    if dkm:
        t = time.time()
        dm_epochs = DKM_DM_EPOCHS if not epochs else epochs
        print(f"[3/{steps}] nnUNetv2_train {DEMO_DATASET_ID} 3d_fullres all -tr DKMDiffusionTrainer_small "
              f"(diffusion module, pre -> post)")
        pipeline.train(DEMO_DATASET_ID, "3d_fullres", "all", "DKMDiffusionTrainer_small", plans,
                       {**run_env, "nnUNet_ext_epochs": str(dm_epochs)}, logs / "train_dm.log", dm_epochs)
        timings["train_diffusion_module"] = time.time() - t

    t = time.time()
    step = 4 if dkm else 3
    total = epochs or (DKM_SM_EPOCHS if dkm else DemoTrainer.num_epochs_default)
    print(f"[{step}/{steps}] nnUNetv2_train {seg_id} 3d_fullres 0 -tr {trainer} -p {plans} -device cpu")
    pipeline.train(seg_id, "3d_fullres", 0, trainer, plans, {**run_env, "nnUNet_ext_epochs": str(total)},
                   logs / "train.log", total)
    timings["train"] = time.time() - t

    t = time.time()
    pred_dir = workspace / "predictions"
    print(f"[{step + 1}/{steps}] nnUNetv2_predict on imagesTs" + (" (pre-contrast only)" if dkm else ""))
    pipeline.predict(seg_raw / "imagesTs", pred_dir, seg_id, "3d_fullres", [0], trainer, plans, run_env,
                     logs / "predict.log")
    timings["predict"] = time.time() - t

    t = time.time()
    print(f"[{steps}/{steps}] evaluating and writing the report")
    summary = evaluate_folders(seg_raw / "labelsTs", pred_dir)
    facts = [("dataset", seg_raw.name),
             ("command", f"nnUNetv2_train {seg_id} 3d_fullres 0 -tr {trainer} -p {plans} -device cpu")]
    if dkm:
        from nnunet_ext.methods.dkm.inference import synthesize_post_folder
        synthesis = synthesize_post_folder(folders[0] / "imagesTs", workspace / "post_synthesis",
                                           str(DEMO_DATASET_ID), "3d_fullres", "all", "DKMDiffusionTrainer_small",
                                           plans, reference_folder=folders[0] / "imagesTs")
        psnr = sum(m["PSNR"] for m in synthesis.values()) / len(synthesis)
        ssim = sum(m["SSIM"] for m in synthesis.values()) / len(synthesis)
        facts.append(("post-contrast synthesis by the diffusion module", f"PSNR {psnr:.2f} dB, SSIM {ssim:.3f}"))
        print(f"post-contrast synthesis (diffusion module): PSNR {psnr:.2f} dB, SSIM {ssim:.3f}")
    dataset_json = json.loads((seg_raw / "dataset.json").read_text())
    label_names = {str(v): k for k, v in dataset_json["labels"].items()}
    report = workspace / "report"
    timings["evaluate_report"] = time.time() - t
    facts.append(("timings (s)", ", ".join(f"{k} {v:.0f}" for k, v in timings.items())))
    title = (f"nnunet-ext demo: DKM (DKMTrainer_small, pre-contrast input only)" if dkm else
             "nnunet-ext demo: nnU-Net (DemoTrainer) on the breast_dce phantom")
    table = write_report(report, title, summary, seg_raw / "imagesTs", seg_raw / "labelsTs", pred_dir,
                         display_channel=0 if dkm else 1, facts=facts, label_names=label_names)
    dice = _nanmean(m["Dice"] for m in summary["mean"].values())
    print("\n" + table + "\n")
    print(f"mean foreground Dice: {dice:.3f}    report: {report}/README.md")
    result = {"method": method, "demo_dice": dice, "timings": timings, "report": str(report)}
    (workspace / "demo_result.json").write_text(json.dumps(result, indent=2))
    return result


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="nnunet", choices=["nnunet", "dkm"],
                   help="nnunet: plain nnU-Net (DemoTrainer) on pre + post phases; dkm: DKM diffusion module + "
                        "segmentation module, predicting from pre-contrast images only")
    p.add_argument("--workspace", default="workspace/demo",
                   help="fresh folder for raw/preprocessed/results/report (deleted first if it exists)")
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--test_cases", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="override DemoTrainer's epochs")
    p.add_argument("--shape", type=int, nargs=3, default=[24, 64, 64], help="phantom shape z y x")


def run(args: argparse.Namespace) -> int:
    workspace = Path(args.workspace).resolve()
    if workspace.exists():
        if not (workspace / "demo_result.json").exists() and any(workspace.iterdir()) and \
                not (workspace / "nnUNet_raw").exists():
            raise UserInputError(f"--workspace {workspace} exists and is not a demo workspace; choose another folder")
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    start = time.time()
    result = run_demo(workspace, args.method, args.cases, args.test_cases, args.seed, args.epochs,
                      tuple(args.shape) if args.shape else None)
    print(f"demo finished in {time.time() - start:.0f} s")
    return 0 if result["demo_dice"] == result["demo_dice"] else 1
