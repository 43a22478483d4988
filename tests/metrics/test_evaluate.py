"""Tests of nnunet_ext.metrics.evaluate: the ``nnunet-ext evaluate`` command and ``evaluate_folders``."""
import csv
import json
import math
import re

import numpy as np
import pytest

from nnunet_ext.cli import main
from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import write_image
from nnunet_ext.metrics.evaluate import evaluate_folders
from nnunet_ext.metrics.segmentation import METRIC_NAMES, compute_case_metrics

SPACING = (2.5, 0.7, 0.7)
SHAPE = (6, 12, 12)


def _case_maps(seed):
    """A reference with labels 1 and 2 and a perturbed prediction; case 2 has label 2 only as a false positive."""
    rng = np.random.default_rng(seed)
    reference = np.zeros(SHAPE, dtype=np.uint8)
    z, y = rng.integers(1, 3), rng.integers(1, 4)
    reference[z:z + 3, y:y + 5, 1:6] = 1
    if seed != 2:
        reference[1:5, 7:11, 6:11] = 2
    prediction = np.roll(reference, shift=int(rng.integers(0, 2)), axis=2)
    prediction[2:4, 8:10, 8:10] = 2
    return reference, prediction


@pytest.fixture
def folders(tmp_path):
    ref_dir, pred_dir = tmp_path / "labelsTs", tmp_path / "predictions"
    ref_dir.mkdir()
    pred_dir.mkdir()
    for seed in range(3):
        reference, prediction = _case_maps(seed)
        write_image(ref_dir / f"case_{seed:03d}.nii.gz", reference, SPACING)
        write_image(pred_dir / f"case_{seed:03d}.nii.gz", prediction, SPACING)
    return ref_dir, pred_dir


def test_cli_writes_summary_and_csv(folders, capsys):
    ref_dir, pred_dir = folders
    assert main(["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir)]) == 0
    assert "foreground mean Dice" in capsys.readouterr().out
    summary = json.loads((pred_dir / "summary.json").read_text())
    assert set(summary) == {"metric_per_case", "mean", "foreground_mean", "distance_penalty", "negative_scans"}
    assert summary["negative_scans"]["n_cases"] == 0  # every reference here has foreground
    assert len(summary["metric_per_case"]) == 3 and set(summary["mean"]) == {"1", "2"}

    for seed, case in enumerate(summary["metric_per_case"]):
        assert case["reference_file"].endswith(f"case_{seed:03d}.nii.gz")
        expected = compute_case_metrics(*_case_maps(seed), [1, 2], SPACING)
        for label in (1, 2):
            for name in METRIC_NAMES:
                assert case["metrics"][str(label)][name] == pytest.approx(expected[label][name], nan_ok=True)
    # case 2 has no label 2 in its reference: the predicted label 2 is all false positive
    assert summary["metric_per_case"][2]["metrics"]["2"]["Dice"] == 0.0
    assert math.isnan(summary["metric_per_case"][2]["metrics"]["2"]["SEN"])

    dice_label_2 = [c["metrics"]["2"]["Dice"] for c in summary["metric_per_case"]]
    assert summary["mean"]["2"]["Dice"] == pytest.approx(np.mean(dice_label_2))
    assert math.isfinite(summary["mean"]["2"]["SEN"])  # nanmean skips the NaN of case 2
    assert summary["foreground_mean"]["HD95"] == pytest.approx(
        (summary["mean"]["1"]["HD95"] + summary["mean"]["2"]["HD95"]) / 2)

    with open(pred_dir / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and list(rows[0]) == ["case", "label", *METRIC_NAMES]
    assert rows[0]["case"] == "case_000.nii.gz" and rows[0]["label"] == "1"
    assert float(rows[1]["ASD"]) == pytest.approx(summary["metric_per_case"][0]["metrics"]["2"]["ASD"])


def test_undefined_distances_are_counted_and_optionally_penalised(folders, tmp_path):
    """Case 2 predicts label 2 where the reference has none: its HD95/ASD are undefined. The default mean skips
    the case and says so; the diagonal penalty puts the image diagonal in its place, so the miss worsens the mean."""
    from nnunet_ext.metrics.segmentation import image_diagonal_mm

    ref_dir, pred_dir = folders
    plain = evaluate_folders(ref_dir, pred_dir, output_json=tmp_path / "a.json", output_csv=tmp_path / "a.csv")
    penalised = evaluate_folders(ref_dir, pred_dir, output_json=tmp_path / "b.json", output_csv=tmp_path / "b.csv",
                                 distance_penalty="diagonal")
    assert plain["mean"]["2"]["n_distance_undefined"] == 1 and plain["mean"]["1"]["n_distance_undefined"] == 0
    assert plain["foreground_mean"]["n_distance_undefined"] == 1 and penalised["distance_penalty"] == "diagonal"
    hd95 = [c["metrics"]["2"]["HD95"] for c in plain["metric_per_case"]]
    assert math.isnan(hd95[2]) and plain["mean"]["2"]["HD95"] == pytest.approx(np.mean(hd95[:2]))
    diagonal = image_diagonal_mm(SHAPE, SPACING)
    assert penalised["metric_per_case"][2]["metrics"]["2"]["HD95"] == pytest.approx(diagonal)
    assert penalised["mean"]["2"]["HD95"] == pytest.approx(np.mean([*hd95[:2], diagonal]))
    assert penalised["mean"]["1"] == pytest.approx(plain["mean"]["1"], nan_ok=True)  # nothing undefined there


def test_api_with_labels_outputs_and_workers(folders, tmp_path):
    ref_dir, pred_dir = folders
    serial = evaluate_folders(ref_dir, pred_dir, labels=[2, 1, 2], output_json=tmp_path / "out" / "s.json",
                              output_csv=tmp_path / "out" / "c.csv")
    parallel = evaluate_folders(ref_dir, pred_dir, labels=[1], output_json=tmp_path / "p.json",
                                output_csv=tmp_path / "p.csv", num_processes=2)
    assert (tmp_path / "out" / "s.json").is_file() and (tmp_path / "out" / "c.csv").is_file()
    assert not (pred_dir / "summary.json").exists()
    assert list(serial["mean"]) == ["1", "2"] and list(parallel["mean"]) == ["1"]
    assert parallel["mean"]["1"] == pytest.approx(serial["mean"]["1"], nan_ok=True)


def test_png_pairs_are_evaluated_in_2d(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    reference = np.zeros((10, 12), dtype=np.uint8)
    reference[2:6, 3:9] = 1
    write_image(ref_dir / "a.png", reference, (1.0, 1.0))
    write_image(pred_dir / "a.png", np.roll(reference, 1, axis=0), (1.0, 1.0))
    summary = evaluate_folders(ref_dir, pred_dir)
    assert summary["mean"]["1"]["Dice"] == pytest.approx(2 * 18 / 48)
    assert summary["mean"]["1"]["HD95"] == pytest.approx(1.0)


def _delete_prediction(ref_dir, pred_dir):
    (pred_dir / "case_001.nii.gz").unlink()


def _write_prediction(array, spacing=SPACING):
    def mutate(ref_dir, pred_dir):
        write_image(pred_dir / "case_001.nii.gz", array, spacing)
    return mutate


def _shift_prediction_origin(shift_mm):
    def mutate(ref_dir, pred_dir):
        reference, prediction = _case_maps(1)
        write_image(pred_dir / "case_001.nii.gz", prediction, SPACING, origin=(shift_mm, 0.0, 0.0))  # along z
    return mutate


def _rotate_prediction(ref_dir, pred_dir):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(pred_dir / "case_001.nii.gz"))
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))  # x and y swapped, z flipped
    sitk.WriteImage(image, str(pred_dir / "case_001.nii.gz"))


def _empty_references(ref_dir, pred_dir):
    for path in ref_dir.iterdir():
        path.unlink()


def _background_only_references(ref_dir, pred_dir):
    for path in ref_dir.iterdir():
        write_image(path, np.zeros(SHAPE, dtype=np.uint8), SPACING)


FOLDERS = ["-ref", "{ref}", "-pred", "{pred}"]

# (folder change, CLI arguments, words the one-line message must contain)
ERROR_CASES = {
    "missing_ref_folder": (None, ["-ref", "{tmp}/nope", "-pred", "{pred}"], ["reference folder not found", "nope"]),
    "missing_pred_folder": (None, ["-ref", "{ref}", "-pred", "{tmp}/nope"], ["prediction folder not found", "nope"]),
    "missing_prediction": (_delete_prediction, FOLDERS, ["case_001.nii.gz", "no prediction"]),
    "shape_mismatch": (_write_prediction(np.zeros((6, 12, 11), dtype=np.uint8)), FOLDERS,
                       ["case_001.nii.gz", "shape", "(6, 12, 12)", "(6, 12, 11)"]),
    "spacing_mismatch": (_write_prediction(np.zeros(SHAPE, dtype=np.uint8), (2.5, 0.7, 0.72)), FOLDERS,
                         ["case_001.nii.gz", "spacing", "(2.5, 0.7, 0.7)", "0.72"]),
    "origin_mismatch": (_shift_prediction_origin(0.35), FOLDERS,
                        ["case_001.nii.gz", "origin mismatch", "(0.0, 0.0, 0.0)", "(0.0, 0.0, 0.35)"]),
    "direction_mismatch": (_rotate_prediction, FOLDERS, ["case_001.nii.gz", "direction mismatch", "-1"]),
    "summary_over_a_reference": (None, FOLDERS + ["-o", "{ref}/case_000.nii.gz"],
                                 ["-o", "would overwrite the reference image case_000.nii.gz"]),
    "csv_over_a_prediction": (None, FOLDERS + ["--csv", "{pred}/case_002.nii.gz"],
                              ["--csv", "would overwrite the prediction image case_002.nii.gz"]),
    "summary_inside_references": (None, FOLDERS + ["-o", "{ref}/sub/summary.json"],
                                  ["-o", "inside the reference folder"]),
    "summary_is_a_folder": (None, FOLDERS + ["-o", "{tmp}"], ["-o", "is a folder"]),
    "non_integer_label": (_write_prediction(np.full(SHAPE, 1.5, dtype=np.float32)), FOLDERS,
                          ["case_001.nii.gz", "integers", "1.5"]),
    "negative_label": (_write_prediction(np.full(SHAPE, -1, dtype=np.int16)), FOLDERS,
                       ["case_001.nii.gz", "non-negative", "-1"]),
    "negative_label_option": (None, FOLDERS + ["-l", "1", "-3"], ["non-negative", "-3"]),
    "no_files": (_empty_references, FOLDERS, ["no reference images"]),
    "no_foreground_labels": (_background_only_references, FOLDERS, ["no nonzero label", "-l"]),
}


@pytest.mark.parametrize("mutate, argv, words", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_bad_input_exits_with_one_line_and_writes_nothing(folders, tmp_path, capsys, mutate, argv, words):
    ref_dir, pred_dir = folders
    if mutate is not None:
        mutate(ref_dir, pred_dir)
    before = sorted(p.name for p in pred_dir.iterdir())
    references_before = sorted(p.name for p in ref_dir.iterdir())

    assert main(["evaluate", *[a.format(ref=ref_dir, pred=pred_dir, tmp=tmp_path) for a in argv]]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnunet-ext evaluate: error:")
    for word in words:
        assert word in lines[0]
    assert sorted(p.name for p in pred_dir.iterdir()) == before  # no summary, no CSV, no temporary file
    assert sorted(p.name for p in ref_dir.iterdir()) == references_before


def test_origin_within_a_thousandth_of_a_voxel_is_accepted(folders):
    ref_dir, pred_dir = folders
    _shift_prediction_origin(0.5 * 1e-3 * SPACING[0])(ref_dir, pred_dir)
    assert evaluate_folders(ref_dir, pred_dir)["mean"]["1"]["Dice"] > 0.5


def test_spacing_within_tolerance_is_accepted(folders):
    ref_dir, pred_dir = folders
    reference, prediction = _case_maps(1)
    write_image(pred_dir / "case_001.nii.gz", prediction, (2.5, 0.7, 0.7 * (1 + 1e-4)))
    assert evaluate_folders(ref_dir, pred_dir)["mean"]["1"]["Dice"] > 0.5


def test_same_path_for_both_outputs_is_refused(folders):
    ref_dir, pred_dir = folders
    with pytest.raises(UserInputError, match="same file"):
        evaluate_folders(ref_dir, pred_dir, output_json=pred_dir / "x", output_csv=pred_dir / "x")


def _hc18_folders(tmp_path):
    """Three HC18-named cases: two ellipses (semi-axes 30 x 20 px and 25 x 25 px) and an empty prediction."""
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    yy, xx = np.mgrid[:80, :100]
    shapes = {"hc18_001": (30, 20), "hc18_001_2": (25, 25), "hc18_002": None}
    for case, axes in shapes.items():
        mask = np.zeros((80, 100), np.uint8) if axes is None else \
            (((xx - 50) / axes[0]) ** 2 + ((yy - 40) / axes[1]) ** 2 <= 1).astype(np.uint8)
        write_image(ref_dir / f"{case}.nii.gz", np.maximum(mask, np.eye(80, 100, dtype=np.uint8)), (0.2, 0.2))
        write_image(pred_dir / f"{case}.nii.gz", mask, (0.2, 0.2))
    csv_path = tmp_path / "pixel_size_and_HC.csv"
    csv_path.write_text("filename,pixel size(mm),head circumference (mm)\n"
                        "001_HC.png,0.2,30.0\n001_2HC.png,0.2,31.4\n002_HC.png,0.2,40.0\n")
    return ref_dir, pred_dir, csv_path


def test_hc18_metric_is_the_fitted_ellipse_perimeter_against_the_csv(tmp_path, capsys):
    from scipy.special import ellipe

    ref_dir, pred_dir, csv_path = _hc18_folders(tmp_path)
    assert main(["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir), "--hc18_csv", str(csv_path)]) == 0
    assert "head circumference: mean absolute difference" in capsys.readouterr().out
    hc = json.loads((pred_dir / "summary.json").read_text().replace("NaN", "null"))["head_circumference"]
    exact = 4 * 30 * ellipe(1 - (20 / 30) ** 2) * 0.2  # perimeter of the 30 x 20 px ellipse in mm
    assert hc["per_case"]["hc18_001"]["predicted_mm"] == pytest.approx(exact, rel=0.005)
    assert hc["per_case"]["hc18_001"]["abs_diff_mm"] == pytest.approx(abs(exact - 30.0), abs=0.15)
    assert hc["per_case"]["hc18_001_2"]["image"] == "001_2HC.png"
    assert hc["n_cases"] == 3 and hc["n_undefined"] == 1 and hc["per_case"]["hc18_002"]["predicted_mm"] is None
    assert hc["mean_abs_diff_mm"] == pytest.approx(np.mean([hc["per_case"][c]["abs_diff_mm"]
                                                            for c in ("hc18_001", "hc18_001_2")]))


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d[2].write_text("filename,pixel size(mm),head circumference (mm)\n001_HC.png,0.2,30\n"),
     "has no row for 001_2HC.png"),
    (lambda d: d[2].unlink(), "--hc18_csv .* does not exist"),
    (lambda d: [(d[i] / "hc18_002.nii.gz").rename(d[i] / "case_9.nii.gz") for i in (0, 1)],
     "case_9 is not an HC18 case id"),
])
def test_hc18_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, mutate, message):
    folders = _hc18_folders(tmp_path)
    mutate(folders)
    ref_dir, pred_dir, csv_path = folders
    assert main(["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir), "--hc18_csv", str(csv_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and re.search(message, error), error
    assert not (pred_dir / "summary.json").exists() and not (pred_dir / "per_case.csv").exists()


def test_negative_scans_get_false_positive_figures(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    bleed = np.zeros((4, 8, 8), np.uint8)
    bleed[1:3, 2:5, 2:5] = 1
    write_image(ref_dir / "sick.nii.gz", bleed, SPACING)
    write_image(pred_dir / "sick.nii.gz", bleed, SPACING)
    alarm = np.zeros((4, 8, 8), np.uint8)
    alarm[0, :2, :2] = 1
    for name, prediction in (("healthy_alarm", alarm), ("healthy_quiet", np.zeros_like(alarm))):
        write_image(ref_dir / f"{name}.nii.gz", np.zeros_like(alarm), SPACING)
        write_image(pred_dir / f"{name}.nii.gz", prediction, SPACING)
    negatives = evaluate_folders(ref_dir, pred_dir)["negative_scans"]
    assert negatives["n_cases"] == 2 and negatives["mean_fp_any"] == 0.5
    assert negatives["per_case"]["healthy_alarm"]["fp_ml"] == pytest.approx(4 * np.prod(SPACING) / 1000)
    assert negatives["per_case"]["healthy_quiet"]["fp_components"] == 0.0
