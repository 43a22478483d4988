"""``nnunet-ext evaluate -ref DIR -pred DIR``: per-label metrics of a prediction folder against reference labels.

Like ``nnUNetv2_evaluate_simple`` (same ``summary.json`` layout: ``metric_per_case``, ``mean``,
``foreground_mean``), with PPV, SEN, HD95 and ASD (mm) added to every label and a per-case CSV. Files are paired by
name; every reference needs a prediction, extra predictions are ignored. Metric conventions (surfaces, HD95, empty
masks) are documented in :mod:`nnunet_ext.metrics.segmentation`.

Means follow nnU-Net: ``mean[label][metric]`` is the NaN-ignoring mean over cases; ``foreground_mean[metric]`` is
the plain mean of ``mean`` over the labels other than 0, so it is NaN when one label's mean is undefined.

HD95/ASD are undefined (NaN) for a case whose reference or prediction, not both, is empty, and a NaN-ignoring mean
skips it, so a missed lesion would improve the mean distance. Therefore ``mean[label]["n_distance_undefined"]``
counts those cases (``foreground_mean`` sums the counts), and ``--distance_penalty diagonal`` replaces the undefined
distances with the image diagonal in mm (:func:`nnunet_ext.metrics.segmentation.image_diagonal_mm`); the summary
records the choice under ``distance_penalty``.

Negative scans (a reference without any nonzero label) get false-positive figures under ``negative_scans``: per
case and averaged, the share with any predicted foreground, its volume in ml and its connected components
(:mod:`nnunet_ext.metrics.false_positives`, the FP column of BHSD Table 2).

``--hc18_csv CSV`` (an HC18 ``pixel_size_and_HC`` CSV: filename, pixel size (mm), head circumference (mm)) adds the
HC18 challenge metric under ``head_circumference``: per case the circumference of the ellipse fitted to the
prediction's foreground (:mod:`nnunet_ext.metrics.head_circumference`), in mm with the prediction's own pixel spacing
(nnU-Net exports carry the converter's spacing, also for ``--downsample``d datasets; a PNG prediction has none, so the
CSV's pixel size is used), and its absolute difference from the CSV value. Cases are matched to CSV rows by the
converter's names (``hc18_010_2`` <-> ``010_2HC.png``); an empty prediction has no circumference and is counted in ``n_undefined``.

``--regions SPEC`` adds region metrics under ``regions`` (:func:`parse_regions`: ``brats`` = WT {1, 2, 3}, TC {1, 3},
ET {3}, or ``NAME=1,2;NAME2=2``): per case and region Dice and HD95 in mm with the BraTS rule for empty masks
(:func:`nnunet_ext.metrics.segmentation.region_metrics`; this HD95 is medpy's percentile of the pooled surface
distances, the per-label HD95 is MONAI's maximum of the two directed percentiles). ``regions`` holds ``labels``
(the definition), ``empty_hd95_mm``, ``metric_per_case`` (each case's ``metrics[region]``, plus ``metrics["mean"]``
over its regions) and ``mean`` (per region over cases, and ``mean["mean"]``, the mean over regions). The CSV gets one
row per (case, region), the case's ``mean`` row, and rows with case ``mean`` for the means over cases; the columns
other than Dice and HD95 are empty there.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nnunet_ext.atomic import atomic_output_file
from nnunet_ext.errors import UserInputError
from nnunet_ext.geometry import DIRECTION_TOLERANCE
from nnunet_ext.metrics.false_positives import negative_scan_false_positives, summarize_false_positives
from nnunet_ext.metrics.segmentation import (BRATS_EMPTY_HD95_MM, BRATS_REGIONS, METRIC_NAMES,
                                             REGION_METRIC_NAMES, compute_case_metrics, distance_undefined,
                                             empty_label_metrics, image_diagonal_mm, region_metrics)

#: ``--distance_penalty`` choices: keep undefined HD95/ASD as NaN, or use the image diagonal in mm.
DISTANCE_PENALTIES = ("none", "diagonal")
#: File endings read as label maps (SimpleITK picks the reader from the ending).
IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".png")
#: Largest relative difference per axis at which reference and prediction spacings count as equal.
SPACING_RELATIVE_TOLERANCE = 1e-3
#: Largest origin difference per axis, as a fraction of the reference voxel size along that axis (headers store
#: float32, and other writers round differently; a real shift is at least a fraction of a voxel).
ORIGIN_VOXEL_TOLERANCE = 1e-3
#: A region name: a letter, then letters, digits, ``_``, ``-`` or ``+`` (JSON keys and CSV cells beside the label
#: numbers; ``mean`` is taken by the mean over regions).
REGION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-ref", required=True, help="folder of reference label maps")
    parser.add_argument("-pred", required=True, help="folder of predicted label maps (same file names)")
    parser.add_argument("-l", nargs="+", type=int, default=None, metavar="LABEL",
                        help="labels to evaluate (default: every nonzero value found in the references)")
    parser.add_argument("-o", default=None, metavar="JSON", help="summary file (default: PRED/summary.json)")
    parser.add_argument("--csv", default=None, metavar="CSV",
                        help="per-case table, one row per (case, label) (default: PRED/per_case.csv)")
    parser.add_argument("-np", type=int, default=1, help="number of worker processes (default: 1)")
    parser.add_argument("--distance_penalty", choices=DISTANCE_PENALTIES, default="none",
                        help="HD95/ASD of a case where exactly one of reference and prediction is empty: none = NaN "
                             "(skipped by the mean; the count is reported), diagonal = the image diagonal in mm")
    parser.add_argument("--hc18_csv", default=None, metavar="CSV",
                        help="HC18 CSV (filename, pixel size (mm), head circumference (mm)): also report the absolute "
                             "head-circumference difference in mm (HC18 challenge metric)")
    parser.add_argument("--regions", default=None, metavar="SPEC",
                        help="also report Dice and HD95 per region: 'brats' (WT = 1,2,3; TC = 1,3; ET = 3) or "
                             "'NAME=1,2;NAME2=2'; BraTS rule for empty masks (both: 1 / 0 mm, one: 0 / 373.13 mm)")


def run(args: argparse.Namespace) -> int:
    summary = evaluate_folders(args.ref, args.pred, labels=args.l, output_json=args.o, output_csv=args.csv,
                               num_processes=args.np, distance_penalty=args.distance_penalty,
                               hc18_csv=args.hc18_csv, regions=args.regions)
    output_json = args.o or str(Path(args.pred) / "summary.json")
    print(f"evaluated {len(summary['metric_per_case'])} cases -> {output_json}")
    undefined = summary["foreground_mean"]["n_distance_undefined"]
    for metric in ("Dice", "HD95", "ASD"):
        note = f" ({undefined} case-labels undefined, penalty: {args.distance_penalty})" if metric != "Dice" else ""
        print(f"  foreground mean {metric}: {summary['foreground_mean'][metric]:.4f}{note}")
    negatives = summary["negative_scans"]
    if negatives["n_cases"]:
        print(f"  {negatives['n_cases']} negative scans (no reference foreground): "
              f"{negatives['mean_fp_any']:.1%} with a false positive, mean {negatives['mean_fp_ml']:.3f} ml, "
              f"{negatives['mean_fp_components']:.2f} components")
    if "head_circumference" in summary:
        hc = summary["head_circumference"]
        print(f"  head circumference: mean absolute difference {hc['mean_abs_diff_mm']:.2f} mm over "
              f"{hc['n_cases'] - hc['n_undefined']} cases ({hc['n_undefined']} empty predictions)")
    if "regions" in summary:
        means = summary["regions"]["mean"]
        print("  region means (Dice / HD95 mm): " + ", ".join(f"{name} {m['Dice']:.4f} / {m['HD95']:.2f}"
                                                             for name, m in means.items()))
    return 0


def parse_regions(spec: str) -> dict[str, tuple[int, ...]]:
    """Regions of a ``--regions`` spec: ``brats`` (WT, TC, ET on labels 1 NCR, 2 ED, 3 ET) or ``NAME=1,2;NAME2=2``.

    Returns:
        ``{name: sorted label values}`` in the spec's order, for
        :func:`nnunet_ext.metrics.segmentation.region_metrics`. A malformed entry, an empty, bad or repeated name and
        a value that is not a non-negative integer are one-line UserInputErrors.
    """
    if spec.strip().lower() == "brats":
        return dict(BRATS_REGIONS)
    regions: dict[str, tuple[int, ...]] = {}
    for entry in spec.split(";"):
        name, equals, values = (part.strip() for part in entry.partition("="))
        if not equals or not values:
            raise UserInputError(f"--regions: expected 'brats' or NAME=LABEL,LABEL;NAME=LABEL, but entry "
                                 f"{entry.strip()!r} of {spec!r} is not NAME=LABEL,...")
        if not name:
            raise UserInputError(f"--regions: a region has no name in {spec!r}")
        if not REGION_NAME.fullmatch(name) or name == "mean":
            raise UserInputError(f"--regions: bad region name {name!r} (a letter, then letters, digits, _, - or +; "
                                 f"'mean' is reserved)")
        if name in regions:
            raise UserInputError(f"--regions: region {name} is given twice in {spec!r}")
        labels = set()
        for value in (v.strip() for v in values.split(",")):
            if not re.fullmatch(r"[+-]?\d+", value):
                raise UserInputError(f"--regions: region {name}: label value {value!r} is not an integer")
            if int(value) < 0:
                raise UserInputError(f"--regions: region {name}: label values must be non-negative, got {value}")
            labels.add(int(value))
        regions[name] = tuple(sorted(labels))
    return regions


def case_name(path: str | Path) -> str:
    """A file's case id: its name without the image ending (``hc18_001.nii.gz`` -> ``hc18_001``)."""
    name = Path(path).name
    return next((name[: -len(e)] for e in IMAGE_ENDINGS if name.endswith(e)), name)


def _image_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_ENDINGS))


def _read_world_geometry(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Origin (x, y, z order, mm) and direction cosines (row-major) from the header, as SimpleITK reports them."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise UserInputError(f"cannot read image {path}: {first}") from None
    return tuple(reader.GetOrigin()), tuple(reader.GetDirection())


def _read_label_map(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """Read a label map and check it holds non-negative integers; returns (array, spacing, its unique values)."""
    from nnunet_ext.imageio import read_image

    array, spacing = read_image(path)
    if array.ndim != len(spacing):
        raise UserInputError(f"{path}: has {array.shape[-1]} components per voxel; expected a single-channel "
                             f"label map")
    values = np.unique(array)
    if np.issubdtype(values.dtype, np.floating):
        bad = values[~np.isfinite(values) | (values != np.round(values))]
        if bad.size:
            raise UserInputError(f"{path}: label values must be integers, found {bad[0].item()!r}")
    elif not np.issubdtype(values.dtype, np.integer) and values.dtype != bool:
        raise UserInputError(f"{path}: label map has pixel type {values.dtype}; expected integers")
    if values.size and values[0] < 0:
        raise UserInputError(f"{path}: label values must be non-negative, found {values[0].item()!r}")
    return array, spacing, values.astype(np.int64)


def _rounded(spacing: Sequence[float]) -> tuple[float, ...]:
    """Spacing for messages: NIfTI stores float32, so 0.7 reads back as 0.699999988."""
    return tuple(float(f"{s:.6g}") for s in spacing)


def _spacings_match(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(abs(x - y) <= SPACING_RELATIVE_TOLERANCE * max(abs(x), abs(y)) for x, y in zip(a, b))


def _check_world_geometry(name: str, reference_file: Path, prediction_file: Path,
                          reference_spacing: Sequence[float]) -> None:
    """Same origin (within a thousandth of a voxel) and direction (within DIRECTION_TOLERANCE), or a one-line
    UserInputError naming the file; images that agree voxel by voxel but not in space give meaningless metrics."""
    reference_origin, reference_direction = _read_world_geometry(reference_file)
    prediction_origin, prediction_direction = _read_world_geometry(prediction_file)
    voxel_xyz = tuple(reversed(reference_spacing))  # SimpleITK's axis order, like the origin
    if any(abs(a - b) > ORIGIN_VOXEL_TOLERANCE * v
           for a, b, v in zip(reference_origin, prediction_origin, voxel_xyz)):
        raise UserInputError(f"{name}: origin mismatch (x y z, mm), reference {_rounded(reference_origin)} vs "
                             f"prediction {_rounded(prediction_origin)}")
    if any(abs(a - b) > DIRECTION_TOLERANCE for a, b in zip(reference_direction, prediction_direction)):
        raise UserInputError(f"{name}: direction mismatch, reference {_rounded(reference_direction)} vs "
                             f"prediction {_rounded(prediction_direction)}")


def evaluate_case(reference_file: str, prediction_file: str, labels: Sequence[int] | None,
                  distance_penalty: str = "none", regions: Mapping[str, Sequence[int]] | None = None) -> dict:
    """Metrics of one (reference, prediction) pair; spacing of the reference is used for distances.

    With ``labels=None`` every nonzero label of the reference or the prediction is evaluated, and the nonzero
    reference labels are returned under ``"reference_labels"`` so the caller can pick the dataset's label set.
    ``regions`` (:func:`parse_regions`) adds :func:`~nnunet_ext.metrics.segmentation.region_metrics` under
    ``"region_metrics"``.
    """
    reference, reference_spacing, reference_values = _read_label_map(Path(reference_file))
    prediction, prediction_spacing, prediction_values = _read_label_map(Path(prediction_file))
    name = Path(prediction_file).name
    if reference.shape != prediction.shape:
        raise UserInputError(f"{name}: shape mismatch, reference {reference.shape} vs prediction "
                             f"{prediction.shape}")
    if not _spacings_match(reference_spacing, prediction_spacing):
        raise UserInputError(f"{name}: spacing mismatch, reference {_rounded(reference_spacing)} vs prediction "
                             f"{_rounded(prediction_spacing)}")
    _check_world_geometry(name, Path(reference_file), Path(prediction_file), reference_spacing)
    reference_labels = [int(v) for v in reference_values if v != 0]
    if labels is None:
        labels = sorted(set(reference_labels) | {int(v) for v in prediction_values if v != 0})
    case = {"reference_file": str(reference_file), "prediction_file": str(prediction_file),
            "metrics": compute_case_metrics(reference, prediction, labels, reference_spacing,
                                            undefined_distance=image_diagonal_mm(reference.shape, reference_spacing)
                                            if distance_penalty == "diagonal" else None),
            "n_voxels": int(reference.size), "reference_labels": reference_labels}
    if not reference_labels:  # a negative scan: any predicted foreground is a false alarm
        case["false_positives"] = negative_scan_false_positives(prediction, reference_spacing)
    if regions:
        case["region_metrics"] = region_metrics(reference, prediction, regions, reference_spacing)
    return case


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _summarize(cases: list[dict], labels: list[int], distance_penalty: str = "none") -> dict:
    """nnU-Net's summary layout with string label keys (as ``save_summary_json`` writes them)."""
    metric_per_case = []
    for case in cases:
        # a label absent from both images of a case was skipped when labels were discovered per case
        metrics = {str(label): case["metrics"][label] if label in case["metrics"]
                   else empty_label_metrics(case["n_voxels"]) for label in labels}
        metric_per_case.append({"reference_file": case["reference_file"],
                                "prediction_file": case["prediction_file"], "metrics": metrics})
    mean = {str(label): {m: _nanmean([float(c["metrics"][str(label)][m]) for c in metric_per_case])
                         for m in METRIC_NAMES} for label in labels}
    for label in labels:
        mean[str(label)]["n_distance_undefined"] = sum(distance_undefined(c["metrics"][str(label)])
                                                       for c in metric_per_case)
    foreground = [mean[str(label)] for label in labels if label != 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of no foreground label is NaN, on purpose
        foreground_mean = {m: float(np.mean([per_label[m] for per_label in foreground])) for m in METRIC_NAMES}
    foreground_mean["n_distance_undefined"] = sum(per_label["n_distance_undefined"] for per_label in foreground)
    negatives = {case_name(c["reference_file"]): c["false_positives"] for c in cases if "false_positives" in c}
    return {"metric_per_case": metric_per_case, "mean": mean, "foreground_mean": foreground_mean,
            "distance_penalty": distance_penalty, "negative_scans": summarize_false_positives(negatives)}


def _summarize_regions(cases: list[dict], regions: Mapping[str, Sequence[int]]) -> dict:
    """The ``regions`` section (module docstring); the BraTS empty rule leaves no NaN, so means are plain means."""
    metric_per_case = []
    for case in cases:
        metrics = {name: case["region_metrics"][name] for name in regions}
        metrics["mean"] = {m: float(np.mean([metrics[name][m] for name in regions])) for m in REGION_METRIC_NAMES}
        metric_per_case.append({"reference_file": case["reference_file"],
                                "prediction_file": case["prediction_file"], "metrics": metrics})
    mean = {name: {m: float(np.mean([c["metrics"][name][m] for c in metric_per_case])) for m in REGION_METRIC_NAMES}
            for name in [*regions, "mean"]}
    return {"labels": {name: list(labels) for name, labels in regions.items()}, "empty_hd95_mm": BRATS_EMPTY_HD95_MM,
            "metric_per_case": metric_per_case, "mean": mean}


def head_circumference_summary(names: Sequence[str], pred_dir: Path, hc18_csv: Path) -> dict:
    """The HC18 metric of the predictions ``pred_dir/names`` against the CSV's circumferences (module docstring)."""
    from nnunet_ext.datasets_conversion.hc18 import image_name, read_csv
    from nnunet_ext.metrics.head_circumference import head_circumference_mm

    rows = read_csv(hc18_csv, columns=3)
    per_case = {}
    for name in names:
        case = case_name(name)
        png = image_name(case)
        if png not in rows:
            raise UserInputError(f"{hc18_csv} has no row for {png} (case {case})")
        pixel_size, reference = rows[png]
        prediction, spacing, _ = _read_label_map(pred_dir / name)
        if not name.endswith(".png"):
            if not np.isclose(spacing[0], spacing[-1], rtol=1e-4):
                raise UserInputError(f"{pred_dir / name}: anisotropic pixels {_rounded(spacing)}; the HC18 metric "
                                     f"needs square pixels")
            pixel_size = float(spacing[0])
        try:
            measured = head_circumference_mm(np.squeeze(prediction) > 0, pixel_size)
        except ValueError:  # empty prediction, or no ellipse fits it
            measured = math.nan
        per_case[case] = {"image": png, "pixel_size_mm": pixel_size, "reference_mm": reference,
                          "predicted_mm": measured, "abs_diff_mm": abs(measured - reference)}
    differences = [c["abs_diff_mm"] for c in per_case.values()]
    return {"csv": str(hc18_csv), "per_case": per_case, "mean_abs_diff_mm": _nanmean(differences),
            "n_cases": len(per_case), "n_undefined": sum(math.isnan(d) for d in differences)}


def _write_json(summary: dict, path: Path) -> None:
    with atomic_output_file(path) as tmp:
        # NaN is written as the NaN token, as nnU-Net's save_json does
        tmp.write_text(json.dumps(summary, sort_keys=True, indent=4) + "\n")


def _write_csv(summary: dict, path: Path) -> None:
    with atomic_output_file(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case", "label", *METRIC_NAMES])
            for case in summary["metric_per_case"]:
                for label, metrics in case["metrics"].items():
                    writer.writerow([Path(case["prediction_file"]).name, label,
                                     *(metrics[m] for m in METRIC_NAMES)])
            if "regions" in summary:  # Dice and HD95 only; the other columns stay empty
                section = summary["regions"]
                rows = [(Path(case["prediction_file"]).name, region, metrics)
                        for case in section["metric_per_case"] for region, metrics in case["metrics"].items()]
                rows += [("mean", region, metrics) for region, metrics in section["mean"].items()]
                for case, region, metrics in rows:
                    writer.writerow([case, region, *(metrics.get(m, "") for m in METRIC_NAMES)])


def _check_outputs(outputs: Sequence[tuple[str, Path]], ref_dir: Path, pred_dir: Path) -> None:
    """Refuse an output that is a folder, replaces a reference or prediction image, or lands in the reference folder
    (which holds ground truth only)."""
    images = {(folder / name).resolve(): role for role, folder in (("reference", ref_dir), ("prediction", pred_dir))
              for name in _image_files(folder)}
    for flag, path in outputs:
        resolved = path.resolve()
        if path.is_dir():
            raise UserInputError(f"{flag} {path} is a folder; give a file path")
        if resolved in images:
            raise UserInputError(f"{flag} {path} would overwrite the {images[resolved]} image {path.name}")
        if resolved.is_relative_to(ref_dir.resolve()):
            raise UserInputError(f"{flag} {path} lies inside the reference folder {ref_dir}; write it elsewhere")


def evaluate_folders(ref_dir: str | Path, pred_dir: str | Path, labels: Sequence[int] | None = None,
                     output_json: str | Path | None = None, output_csv: str | Path | None = None,
                     num_processes: int = 1, distance_penalty: str = "none",
                     hc18_csv: str | Path | None = None, regions: str | None = None) -> dict:
    """Evaluate every reference in ``ref_dir`` against the same-named file in ``pred_dir``.

    Args:
        ref_dir: folder of reference label maps (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ``.png``).
        pred_dir: folder of predictions with the same file names.
        labels: labels to evaluate; default every nonzero value present in any reference.
        output_json: summary path, default ``pred_dir/summary.json``.
        output_csv: per-(case, label) table, default ``pred_dir/per_case.csv``.
        num_processes: worker processes; 1 evaluates in this process.
        distance_penalty: ``"none"`` (undefined HD95/ASD stay NaN) or ``"diagonal"`` (the image diagonal in mm).
        hc18_csv: HC18 CSV; adds ``head_circumference`` to the summary (module docstring).
        regions: ``--regions`` spec (:func:`parse_regions`); adds ``regions`` to the summary (module docstring).

    Returns:
        The summary as written to ``output_json``. Everything is computed and checked before anything is written,
        so bad input (UserInputError) leaves no output behind.
    """
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    for role, folder in (("reference", ref_dir), ("prediction", pred_dir)):
        if not folder.is_dir():
            raise UserInputError(f"{role} folder not found: {folder}")
    if num_processes < 1:
        raise UserInputError(f"-np must be >= 1, got {num_processes}")
    if distance_penalty not in DISTANCE_PENALTIES:
        raise UserInputError(f"--distance_penalty must be one of {', '.join(DISTANCE_PENALTIES)}, got "
                             f"'{distance_penalty}'")
    if hc18_csv is not None and not Path(hc18_csv).is_file():
        raise UserInputError(f"--hc18_csv {hc18_csv} does not exist")
    if labels is not None:
        if not labels:
            raise UserInputError("-l needs at least one label")
        if min(labels) < 0:
            raise UserInputError(f"labels must be non-negative, got {min(labels)}")
        labels = sorted({int(label) for label in labels})
    region_map = parse_regions(regions) if regions is not None else None
    output_json = Path(output_json) if output_json is not None else pred_dir / "summary.json"
    output_csv = Path(output_csv) if output_csv is not None else pred_dir / "per_case.csv"
    if output_json.resolve() == output_csv.resolve():
        raise UserInputError(f"summary and CSV outputs are the same file: {output_json}")
    _check_outputs([("-o", output_json), ("--csv", output_csv)], ref_dir, pred_dir)

    names = _image_files(ref_dir)
    if not names:
        raise UserInputError(f"no reference images ({', '.join(IMAGE_ENDINGS)}) in {ref_dir}")
    for name in names:
        if not (pred_dir / name).is_file():
            raise UserInputError(f"reference {name} has no prediction in {pred_dir}")
    jobs = [(str(ref_dir / name), str(pred_dir / name), labels, distance_penalty, region_map) for name in names]
    if num_processes > 1:
        import multiprocessing

        # spawn, as nnU-Net does: workers do not inherit locks or thread pools of the parent
        with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
            cases = pool.starmap(evaluate_case, jobs)
    else:
        cases = [evaluate_case(*job) for job in jobs]

    if labels is None:
        labels = sorted({label for case in cases for label in case["reference_labels"]})
        if not labels:
            raise UserInputError(f"the references in {ref_dir} hold no nonzero label; pass the labels with -l")
    summary = _summarize(cases, labels, distance_penalty)
    if hc18_csv is not None:
        summary["head_circumference"] = head_circumference_summary(names, pred_dir, Path(hc18_csv))
    if region_map is not None:
        summary["regions"] = _summarize_regions(cases, region_map)
    _write_json(summary, output_json)
    _write_csv(summary, output_csv)
    return summary
