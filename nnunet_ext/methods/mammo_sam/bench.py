"""Evaluate a trained nnU-Net model on the Mammo-SAM benchmark's test sets and write a benchmark JSON.

``python -m nnunet_ext.methods.mammo_sam.bench --model MODEL_FOLDER [--fold all] --set NAME RAW_DATASET_FOLDER
[--set ...] [--device cpu] -o OUT.json``

For every ``--set NAME FOLDER`` (an nnU-Net raw dataset written by ``nnunet-ext synth mammo_2d``; its
``imagesTs``/``labelsTs`` are predicted with ``nnUNetv2_predict`` and scored, its ``extrasTs/<case>_camouflaged``
masks select the camouflaged cases), the JSON gets top-level means ``<NAME>_<metric>`` for Dice, IoU, precision and
recall of the mass label (the paper's Table 1 metrics, one value per image, averaged over images; the precision of
an empty prediction on an image with a mass counts as 0, not as undefined) and
``<NAME>_camouflaged_Dice`` (images holding a mass that :mod:`nnunet_ext.synth.mammo_2d` records as camouflaged),
``trainable_params`` (the network as its trainer builds it) and ``per_case``: ``case -> {"<NAME>_Dice": ...}`` for
the harness's paired confidence intervals.
Any model works (a U-Net baseline as well as Mammo-SAM); the model folder is what ``{model:LABEL}`` names in a spec.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from nnunet_ext.errors import UserInputError

PROG = "python -m nnunet_ext.methods.mammo_sam.bench"
METRIC_KEYS = {"Dice": "Dice", "IoU": "IoU", "precision": "PPV", "recall": "SEN"}


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="trained model folder: .../DatasetX/Trainer__Plans__2d")
    p.add_argument("--fold", default="all", help="fold to predict with (default all)")
    p.add_argument("--set", nargs=2, action="append", required=True, metavar=("NAME", "RAW_DATASET"),
                   help="test set name and nnU-Net raw dataset folder (imagesTs, labelsTs, extrasTs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", required=True, help="output JSON")


def _model_identity(model: Path) -> tuple[Path, str, str, str, str]:
    """(results root, dataset folder name, trainer, plans, configuration) of a model folder."""
    from nnunetv2.utilities.file_path_utilities import convert_identifier_to_trainer_plans_config

    parts = convert_identifier_to_trainer_plans_config(model.name)
    if len(parts) != 3 or not (model / "plans.json").is_file():
        raise UserInputError(f"--model {model}: not an nnU-Net model folder (Trainer__Plans__configuration with "
                             f"plans.json)")
    return model.parent.parent, model.parent.name, *parts


def camouflaged_cases(raw: Path) -> set[str]:
    """Test cases of a mammo_2d dataset whose ``extrasTs/<case>_camouflaged`` mask is not empty."""
    from nnunet_ext.imageio import read_image

    suffix = "_camouflaged.nii.gz"
    return {path.name[:-len(suffix)] for path in sorted((raw / "extrasTs").glob(f"*{suffix}"))
            if np.any(read_image(path)[0])}


def score_set(name: str, raw: Path, predictions: Path) -> dict[str, dict[str, float]]:
    """``case -> {"<name>_Dice": ..., ..., "<name>_camouflaged_Dice": ... (camouflaged cases only)}``."""
    from nnunet_ext.metrics.evaluate import evaluate_case

    camouflaged = camouflaged_cases(raw)
    per_case = {}
    for reference in sorted((raw / "labelsTs").glob("*.nii.gz")):
        case = reference.name[:-len(".nii.gz")]
        evaluated = evaluate_case(str(reference), str(predictions / reference.name), [1])
        metrics = evaluated["metrics"][1]
        values = {f"{name}_{key}": float(metrics[source]) for key, source in METRIC_KEYS.items()}
        if math.isnan(values[f"{name}_precision"]) and evaluated["reference_labels"]:
            values[f"{name}_precision"] = 0.0  # nothing predicted on an image with a mass: no correct positive
        if case in camouflaged:
            values[f"{name}_camouflaged_Dice"] = values[f"{name}_Dice"]
        per_case[case] = values
    return per_case


def trainable_parameters(model: Path, fold: str) -> int:
    """Parameters with ``requires_grad`` of the model's network as its trainer builds it (frozen encoder excluded)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=(fold if fold == "all" else int(fold),))
    return sum(p.numel() for p in predictor.network.parameters() if p.requires_grad)


def _mean(per_case: dict, metric: str) -> float | None:
    values = [v[metric] for v in per_case.values() if metric in v and not math.isnan(v[metric])]
    return float(np.mean(values)) if values else None


def run(args: argparse.Namespace) -> int:
    from nnunet_ext import pipeline

    model = Path(args.model)
    results, dataset, trainer, plans, configuration = _model_identity(model)
    sets = [(name, Path(folder)) for name, folder in args.set]
    for name, raw in sets:
        if not (raw / "imagesTs").is_dir() or not (raw / "labelsTs").is_dir():
            raise UserInputError(f"--set {name} {raw}: no imagesTs/labelsTs")
    env = {**os.environ, "nnUNet_results": str(results)}
    output = {"model": str(model), "fold": args.fold, "trainable_params": trainable_parameters(model, args.fold),
              "sets": {}, "per_case": {}}
    for name, raw in sets:
        with tempfile.TemporaryDirectory(prefix=f"mammo_bench_{name}_") as scratch:
            predictions = Path(scratch) / "predictions"
            pipeline.predict(raw / "imagesTs", predictions, dataset, configuration, [args.fold], trainer, plans,
                             env, Path(scratch) / "predict.log", device=args.device)
            per_case = score_set(name, raw, predictions)
        for case, values in per_case.items():
            output["per_case"].setdefault(case, {}).update(values)
        metrics = sorted({m for values in per_case.values() for m in values})
        output.update({metric: _mean(per_case, metric) for metric in metrics})
        output["sets"][name] = {"folder": str(raw), "cases": len(per_case),
                                "camouflaged_cases": sum(f"{name}_camouflaged_Dice" in v for v in per_case.values())}
    Path(args.o).parent.mkdir(parents=True, exist_ok=True)
    Path(args.o).write_text(json.dumps(output, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.cli import run_module_cli

    return run_module_cli(PROG, __doc__, configure_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
