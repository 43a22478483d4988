"""``nnunet-ext ffpn predict-hc18``: predict a folder of HC18 images (PNG + pixel-size CSV) with a trained model and
write the HC18 challenge answer.

The PNGs are converted on the fly exactly as ``nnunet-ext convert hc18`` converts training images (spacing = pixel
size, the model's ``--downsample`` read from its dataset.json), predicted with ``nnUNetv2_predict`` (any trainer:
FFPNTrainer, FFPNRTrainer, a U-Net), and the output folder gets, per image, the label map ``hc18_NNN[_k].nii.gz``
and one row of ``head_circumference.csv``: filename, pixel size (mm), predicted head circumference (mm) from the
ellipse fitted to the predicted head (:mod:`nnunet_ext.metrics.head_circumference`) and, when the CSV has a third
column (the training CSV), the reference and the absolute difference.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
from pathlib import Path

from nnunet_ext.errors import UserInputError


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("predict-hc18", help="predict HC18 PNG images and write their head circumferences")
    s.add_argument("-i", required=True, help="folder with HC18 images NNN_HC.png / NNN_kHC.png (annotations ignored)")
    s.add_argument("--csv", required=True, help="HC18 CSV: filename, pixel size (mm)[, head circumference (mm)]")
    s.add_argument("-o", required=True, help="output folder (label maps + head_circumference.csv)")
    s.add_argument("-d", required=True, help="dataset (id or name) the model was trained on")
    s.add_argument("-c", default="2d", help="configuration (default 2d)")
    s.add_argument("-f", nargs="+", default=["all"], help="fold(s) (default all; several folds are ensembled)")
    s.add_argument("-tr", default="FFPNRTrainer", help="trainer (default FFPNRTrainer)")
    s.add_argument("-p", default="nnUNetPlansWholeImage", help="plans identifier (default nnUNetPlansWholeImage)")
    s.add_argument("-device", default="cpu", help="cpu, cuda or mps")
    s.add_argument("--overwrite", action="store_true",
                   help="replace -o if it is an earlier output of this command (never any other folder)")


def _model_folder(dataset: str, trainer: str, plans: str, configuration: str) -> Path:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

    results = os.environ.get("nnUNet_results")
    if not results:
        raise UserInputError("nnUNet_results is not set: run eval \"$(nnunet-ext env)\" first")
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError):  # nnU-Net raises either for an unknown name or id
        raise UserInputError(f"-d {dataset}: no such dataset in nnUNet_raw, nnUNet_preprocessed or "
                             f"nnUNet_results") from None
    folder = Path(results) / name / convert_trainer_plans_config_to_identifier(trainer, plans, configuration)
    if not (folder / "dataset.json").is_file():
        raise UserInputError(f"no trained model at {folder} (train it first, or check -tr/-p/-c)")
    return folder


def _images(folder: Path, csv_path: Path) -> list[tuple[Path, str, float, float | None]]:
    """(png, case id, pixel size, reference HC or None) per image of ``folder``, checked against the CSV."""
    from nnunet_ext.datasets_conversion.hc18 import case_id, read_csv

    if not folder.is_dir():
        raise UserInputError(f"-i {folder} does not exist or is not a folder")
    if not csv_path.is_file():
        raise UserInputError(f"--csv {csv_path} does not exist")
    try:
        with open(csv_path, newline="") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read {csv_path}: {exc}") from None
    # a test-set CSV has (filename, pixel size); a training CSV adds the reference circumference
    rows = read_csv(csv_path, columns=3 if len(header) >= 3 else 2)
    images = []
    for png in sorted(p for p in folder.glob("*HC.png")):
        identifier, _ = case_id(png.name)
        if png.name not in rows:
            raise UserInputError(f"no pixel size for {png} in {csv_path}")
        values = rows[png.name]
        images.append((png, identifier, values[0], values[1] if len(values) > 1 else None))
    if not images:
        raise UserInputError(f"no HC18 images (NNN_HC.png) in {folder}")
    return images


def predict_hc18(input_folder, csv_path, output_folder, dataset, configuration="2d", folds=("all",),
                 trainer="FFPNRTrainer", plans="nnUNetPlansWholeImage", device="cpu", overwrite=False) -> dict:
    """Python API of the command; returns ``{case: row}`` as written to ``head_circumference.csv``."""
    from nnunet_ext import pipeline
    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.datasets_conversion.hc18 import FILE_ENDING, check_downsample, write_image
    from nnunet_ext.imageio import read_image
    from nnunet_ext.metrics.head_circumference import head_circumference_mm

    input_folder, csv_path, output_folder = Path(input_folder), Path(csv_path), Path(output_folder)
    device = pipeline.check_device(device)
    images = _images(input_folder, csv_path)
    model = _model_folder(dataset, trainer, plans, configuration)
    factor = check_downsample(json.loads((model / "dataset.json").read_text()).get("conversion", {})
                              .get("downsample", 1))
    rows = {}
    with atomic_output_dir(output_folder, overwrite=overwrite, inputs=[input_folder, csv_path],
                           written_by="nnunet-ext ffpn predict-hc18") as out, \
            tempfile.TemporaryDirectory(prefix="hc18_images_") as staging:
        for png, identifier, pixel, _ in images:
            write_image(png, pixel, Path(staging) / f"{identifier}_0000{FILE_ENDING}", factor)
        pipeline.predict(staging, out, dataset, configuration, folds, trainer, plans, os.environ,
                         out / "predict.log", device=device)
        for png, identifier, pixel, reference in images:
            mask, spacing = read_image(out / f"{identifier}{FILE_ENDING}")
            try:
                measured = head_circumference_mm(mask.squeeze() > 0, float(spacing[-1]))
            except ValueError:  # nothing predicted, or no ellipse fits it
                measured = math.nan
            rows[identifier] = {"filename": png.name, "pixel size(mm)": pixel, "head circumference (mm)": measured}
            if reference is not None:
                rows[identifier].update({"reference (mm)": reference, "abs diff (mm)": abs(measured - reference)})
        columns = list(next(iter(rows.values())))
        with open(out / "head_circumference.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows.values())
    return rows


def run(args: argparse.Namespace) -> int:
    rows = predict_hc18(args.i, args.csv, args.o, args.d, args.c, args.f, args.tr, args.p, args.device,
                        args.overwrite)
    differences = [r["abs diff (mm)"] for r in rows.values() if "abs diff (mm)" in r]
    if differences:
        finite = [d for d in differences if math.isfinite(d)]
        mean = sum(finite) / len(finite) if finite else math.nan
        print(f"head circumference: mean absolute difference {mean:.2f} mm over {len(finite)} images "
              f"({len(differences) - len(finite)} without a head)")
    print(f"wrote {args.o} ({len(rows)} images, head_circumference.csv)")
    return 0
