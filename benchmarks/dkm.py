"""DKM benchmark on the breast_dce phantom in the label-scarce regime (issue: DKM).

Datasets written from one set of phantom cases:
- DCE (pre + post1 + post2), ``--dm_cases`` training cases: trains the diffusion module (labels unused);
- PreOnly (pre), the first ``--labeled`` of those cases: trains every pre-contrast segmentation row;
- PrePost (pre + post1 + post2), the same labelled cases: the nnU-Net reference with complete sequences;
all with the same ``--test`` held-out cases. Every segmentation model gets the same schedule (epochs x iterations,
fold ``all`` = all labelled cases). nnU-Net rows use ``DemoTrainer`` (nnU-Net's default trainer with Adam 1e-3,
the optimizer of the DKM ``_small`` trainers) and ``DemoTrainerSGD`` (nnU-Net's SGD, unchanged).

Runs the real commands (nnUNetv2_train / nnUNetv2_predict) and resumes: finished trainings/predictions are reused.
Writes benchmarks/results/dkm.md and dkm.json.

    python benchmarks/dkm.py --workdir /tmp/bench_dkm
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nnunet_ext import pipeline  # noqa: E402
from nnunet_ext.env import environment  # noqa: E402

DCE_ID, PRE_ID, PREPOST_ID = 601, 602, 603
CONFIG, PLANS = "3d_fullres", "nnUNetPlansCPU"
# row name -> (dataset id, trainer)
ROWS = {
    "nnU-Net baseline (pre only)": (PRE_ID, "DemoTrainer"),
    "nnU-Net (pre + post, reference)": (PREPOST_ID, "DemoTrainer"),
    "nnU-Net, default SGD (pre only)": (PRE_ID, "DemoTrainerSGD"),
    "nnU-Net, default SGD (pre + post)": (PREPOST_ID, "DemoTrainerSGD"),
    "DKM f3+f4 (pre only)": (PRE_ID, "DKMTrainer_small"),
    "DKM without kinetic code (pre only)": (PRE_ID, "DKMTrainerNoCode_small"),
    "DKM f1 (pre only)": (PRE_ID, "DKMTrainer_small_f1"),
    "DKM f4 (pre only)": (PRE_ID, "DKMTrainer_small_f4"),
    "DKM f2+f4 (pre only)": (PRE_ID, "DKMTrainer_small_f2f4"),
}
ABLATION_KEYS = {"DKM f3+f4 (pre only)": "f3f4", "DKM f1 (pre only)": "f1", "DKM f4 (pre only)": "f4",
                 "DKM f2+f4 (pre only)": "f2f4",
                 "DKM without kinetic code (pre only)": "none"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_datasets(raw: Path, args) -> dict[int, Path]:
    from nnunet_ext.synth.base import TEST, TRAIN, generate_cases, write_raw_dataset
    from nnunet_ext.synth.cli import get_kind

    kind = get_kind("breast_dce")
    options = {"shape": tuple(args.shape)}
    train = generate_cases(kind, args.dm_cases, TRAIN, args.seed, options)
    test = generate_cases(kind, args.test, TEST, args.seed, options)
    labeled = train[:args.labeled]
    folders = {
        DCE_ID: write_raw_dataset(raw, DCE_ID, "BenchBreastDCE", kind.channel_names, kind.labels, train, test,
                                  overwrite=True),
    }
    folders[PRE_ID] = write_raw_dataset(raw, PRE_ID, "BenchBreastPreOnly", kind.channel_names, kind.labels, labeled,
                                        test, overwrite=True, channels=[0],
                                        extra_json={"paired_dce_dataset": folders[DCE_ID].name})
    folders[PREPOST_ID] = write_raw_dataset(raw, PREPOST_ID, "BenchBreastPrePost", kind.channel_names, kind.labels,
                                            labeled, test, overwrite=True)
    return folders


def case_metrics(summary: dict) -> tuple[list[float], list[float]]:
    dice = [c["metrics"]["1"]["Dice"] for c in summary["metric_per_case"]]
    iou = [c["metrics"]["1"]["IoU"] for c in summary["metric_per_case"]]
    return dice, iou


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/nnunet_ext_bench_dkm")
    p.add_argument("--dm_cases", type=int, default=40)
    p.add_argument("--labeled", type=int, default=10)
    p.add_argument("--test", type=int, default=20)
    p.add_argument("--shape", type=int, nargs=3, default=[24, 64, 64])
    p.add_argument("--epochs", type=int, default=16, help="epochs of every segmentation model")
    p.add_argument("--iters", type=int, default=12, help="iterations per epoch of every segmentation model")
    p.add_argument("--dm_epochs", type=int, default=30)
    p.add_argument("--dm_iters", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", nargs="*", default=None, help="subset of row names (default all)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args()

    work = Path(args.workdir).resolve()
    env = {**os.environ, **environment(work, keep_existing=False), "nnUNet_ext_seed": str(args.seed)}
    os.environ.update(env)
    raw = Path(env["nnUNet_raw"])
    t_start = time.time()

    if not (raw / f"Dataset{PREPOST_ID}_BenchBreastPrePost").exists():
        log("writing phantom datasets")
        write_datasets(raw, args)
        from nnunet_ext.planning.cli import plan_and_preprocess
        log("planning and preprocessing (CPUPlanner, 3d_fullres)")
        plan_and_preprocess([DCE_ID, PRE_ID, PREPOST_ID], "CPUPlanner", (CONFIG,))
    folders = {i: next(raw.glob(f"Dataset{i:03d}_*")) for i in (DCE_ID, PRE_ID, PREPOST_ID)}
    results_root = Path(env["nnUNet_results"])

    def trained(dataset_id: int, trainer: str, fold: str) -> bool:
        return (results_root / folders[dataset_id].name / f"{trainer}__{PLANS}__{CONFIG}" / f"fold_{fold}" /
                "checkpoint_final.pth").is_file()

    dm_env = {**env, "nnUNet_ext_epochs": str(args.dm_epochs), "nnUNet_ext_iters": str(args.dm_iters),
              "nnUNet_ext_val_iters": "4"}
    if not trained(DCE_ID, "DKMDiffusionTrainer_small", "all"):
        log(f"training the diffusion module on {args.dm_cases} DCE cases ({args.dm_epochs}x{args.dm_iters})")
        pipeline.train(DCE_ID, CONFIG, "all", "DKMDiffusionTrainer_small", PLANS, dm_env, work / "logs" / "dm.log")

    log("post-contrast synthesis of the test cases")
    from nnunet_ext.methods.dkm.inference import synthesize_post_folder
    synthesis = synthesize_post_folder(folders[DCE_ID] / "imagesTs", work / "post_synthesis", str(DCE_ID), CONFIG,
                                       "all", "DKMDiffusionTrainer_small", PLANS,
                                       reference_folder=folders[DCE_ID] / "imagesTs")
    psnr = statistics.fmean(m["PSNR"] for m in synthesis.values())
    ssim = statistics.fmean(m["SSIM"] for m in synthesis.values())
    identity = identity_synthesis(folders[DCE_ID] / "imagesTs")

    seg_env = {**env, "nnUNet_ext_epochs": str(args.epochs), "nnUNet_ext_iters": str(args.iters),
               "nnUNet_ext_val_iters": "4"}
    from nnunet_ext.metrics.evaluate import evaluate_folders
    rows = {}
    for name, (dataset_id, trainer) in ROWS.items():
        if args.rows and name not in args.rows:
            continue
        slug = f"{trainer}_{dataset_id}"
        if not trained(dataset_id, trainer, "all"):
            log(f"training {name}: {trainer} on dataset {dataset_id}")
            pipeline.train(dataset_id, CONFIG, "all", trainer, PLANS, seg_env, work / "logs" / f"{slug}.log")
        train_s = training_loop_seconds(results_root / folders[dataset_id].name / f"{trainer}__{PLANS}__{CONFIG}")
        pred = work / "predictions" / slug
        t = time.time()
        if not (pred / "summary.json").exists():
            log(f"predicting {name}")
            pipeline.predict(folders[dataset_id] / "imagesTs", pred, dataset_id, CONFIG, ["all"], trainer, PLANS,
                             env, work / "logs" / f"{slug}_predict.log")
        predict_s = time.time() - t
        summary = evaluate_folders(folders[dataset_id] / "labelsTs", pred)
        dice, iou = case_metrics(summary)
        rows[name] = {"trainer": trainer, "dataset": folders[dataset_id].name, "dice": mean_std(dice),
                      "jaccard": mean_std(iou), "train_s": train_s, "predict_s": predict_s}
        log(f"{name}: Dice {rows[name]['dice'][0]:.3f} +- {rows[name]['dice'][1]:.3f}")

    dm_train_s = training_loop_seconds(results_root / folders[DCE_ID].name / f"DKMDiffusionTrainer_small__{PLANS}__{CONFIG}")
    write_results(Path(args.out), args, rows, psnr, ssim, identity, dm_train_s, time.time() - t_start)
    return 0


def training_loop_seconds(trainer_folder: Path) -> float:
    """Wall time of the training loop (first epoch start to last epoch end) from nnU-Net's checkpoint log; it
    excludes start-up and the final validation, and survives resuming this script."""
    import torch

    logging = torch.load(trainer_folder / "fold_all" / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["logging"]
    return logging["epoch_end_timestamps"][-1] - logging["epoch_start_timestamps"][0]


def identity_synthesis(images: Path) -> tuple[float, float]:
    """PSNR/SSIM of the trivial estimate "post = pre" (both z-scored): what the DM must beat."""
    from nnunet_ext.methods.dkm.inference import zscore
    from nnunet_ext.imageio import read_image
    from nnunet_ext.methods.dkm.inference import image_similarity

    scores = []
    for pre_file in sorted(images.glob("*_0000.nii.gz")):
        post_file = pre_file.with_name(pre_file.name.replace("_0000.nii.gz", "_0002.nii.gz"))
        pre, post = (zscore(read_image(f)[0].astype("float32")) for f in (pre_file, post_file))
        scores.append(image_similarity(pre, post))
    return statistics.fmean(s["PSNR"] for s in scores), statistics.fmean(s["SSIM"] for s in scores)


def write_results(out: Path, args, rows: dict, psnr: float, ssim: float, identity: tuple[float, float],
                  dm_train_s: float, total_s: float) -> None:
    import hashlib
    import shlex

    out.mkdir(parents=True, exist_ok=True)
    base = rows.get("nnU-Net baseline (pre only)", {}).get("dice", (float("nan"),))[0]
    dkm = rows.get("DKM f3+f4 (pre only)", {}).get("dice", (float("nan"),))[0]
    met = dkm >= base + 0.05
    data = {
        "baseline_pre_dice": base,
        "prepost_dice": rows.get("nnU-Net (pre + post, reference)", {}).get("dice", (float("nan"),))[0],
        "dkm_f34_dice": dkm,
        "ablation": {ABLATION_KEYS[n]: r["dice"][0] for n, r in rows.items() if n in ABLATION_KEYS},
        "post_synthesis_psnr": psnr, "post_synthesis_ssim": ssim,
        "identity_post_equals_pre_psnr": identity[0], "identity_post_equals_pre_ssim": identity[1],
        "rows": {n: {"trainer": r["trainer"], "dice_mean": r["dice"][0], "dice_std": r["dice"][1],
                     "jaccard_mean": r["jaccard"][0], "jaccard_std": r["jaccard"][1], "train_s": r["train_s"],
                     "predict_s": r["predict_s"]} for n, r in rows.items()},
        "dm_train_s": dm_train_s,
        "n_dm_cases": args.dm_cases, "n_labeled_cases": args.labeled, "n_test_cases": args.test,
        "target_dkm_minus_baseline_0.05_met": met,
    }
    (out / "dkm.json").write_text(json.dumps(data, indent=2) + "\n")
    command = shlex.join(["python", "benchmarks/dkm.py", *sys.argv[1:]])
    phantom_sha = hashlib.sha256((REPO / "nnunet_ext/synth/breast_dce.py").read_bytes()).hexdigest()[:12]
    lines = [
        "# DKM benchmark: breast_dce phantom, label-scarce regime", "",
        f"- command: `{command}` (from the repository root, in the project's .venv)",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch threads default; "
        f"{platform.python_version()}",
        f"- date: {date.today().isoformat()}; total wall time {total_s / 60:.1f} min",
        f"- data: {args.dm_cases} unlabeled DCE cases for the diffusion module, {args.labeled} labelled cases for "
        f"every segmentation model, {args.test} held-out test cases; phantom shape {tuple(args.shape)}, seed "
        f"{args.seed} (nnunet_ext/synth/breast_dce.py sha256 {phantom_sha})",
        f"- budget: every segmentation model {args.epochs} epochs x {args.iters} iterations (batch from the "
        f"CPUPlanner plans), fold all; diffusion module {args.dm_epochs} x {args.dm_iters} "
        f"(training loop {dm_train_s:.0f} s)",
        "- train s = nnU-Net's training loop (first epoch start to last epoch end, from the checkpoint log); "
        "predict s = nnUNetv2_predict on the test cases (incl. start-up); wall times of this resumable script "
        "may span several invocations",
        "", "| method | input | Dice (mean +- std) | Jaccard (mean +- std) | train s | predict s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        method, _, inp = name.partition(" (")
        lines.append(f"| {method} | {inp.rstrip(')')} | {r['dice'][0]:.3f} +- {r['dice'][1]:.3f} | "
                     f"{r['jaccard'][0]:.3f} +- {r['jaccard'][1]:.3f} | {r['train_s']:.0f} | {r['predict_s']:.0f} |")
    lines += ["", f"Diffusion module post-contrast synthesis on the test cases (z-scored intensities): "
              f"PSNR {psnr:.2f} dB, SSIM {ssim:.3f}; the trivial estimate post = pre scores PSNR {identity[0]:.2f} dB, "
              f"SSIM {identity[1]:.3f}.", "",
              f"Target DKM f3+f4 >= nnU-Net baseline + 0.05 Dice: **{'met' if met else 'missed'}** "
              f"({dkm:.3f} vs {base:.3f})."]
    (out / "dkm.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
