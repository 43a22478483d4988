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


# ----------------------------------------------------------------------------------------------------------------------
# --regions: region Dice and HD95 with the BraTS empty rule

BRATS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
REGION_SPACING = (3.0, 0.8, 1.2)


def _blobby_label_map(seed, shape=(6, 14, 14)):
    """Smooth random labels 0..3 (a quarter of the voxels each), so regions have real surfaces."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), sigma=1.5)
    return np.digitize(noise, np.quantile(noise, [0.25, 0.5, 0.75])).astype(np.uint8)


@pytest.mark.parametrize("spec, expected", [
    ("brats", BRATS),
    ("BraTS", BRATS),
    ("A=1,2;B=2", {"A": (1, 2), "B": (2,)}),
    (" core = 3,1,1 ; edema=2 ", {"core": (1, 3), "edema": (2,)}),
    ("bg_and_1=0,1", {"bg_and_1": (0, 1)}),
])
def test_parse_regions(spec, expected):
    from nnunet_ext.metrics.evaluate import parse_regions

    regions = parse_regions(spec)
    assert regions == expected and list(regions) == list(expected)


BAD_REGION_SPECS = {
    "empty": ("", "not NAME=LABEL"),
    "no_equals": ("WT", "entry 'WT' of 'WT' is not NAME=LABEL"),
    "no_values": ("WT=", "is not NAME=LABEL"),
    "trailing_semicolon": ("WT=1;", "entry '' of 'WT=1;'"),
    "empty_name": ("=1,2", "has no name"),
    "duplicate_name": ("WT=1;WT=2", "region WT is given twice"),
    "non_integer": ("WT=1.5", "label value '1.5' is not an integer"),
    "word_value": ("WT=one", "label value 'one' is not an integer"),
    "empty_value": ("WT=1,,2", "label value '' is not an integer"),
    "negative_value": ("WT=-1", "must be non-negative, got -1"),
    "numeric_name": ("1=1", "bad region name '1'"),
    "reserved_name": ("mean=1", "'mean' is reserved"),
}


@pytest.mark.parametrize("spec, words", BAD_REGION_SPECS.values(), ids=BAD_REGION_SPECS.keys())
def test_bad_region_specs_raise_one_line(spec, words):
    from nnunet_ext.metrics.evaluate import parse_regions

    with pytest.raises(UserInputError) as raised:
        parse_regions(spec)
    assert words in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("regions", [BRATS, {"A": (1,), "BC": (2, 3)}], ids=["brats", "custom"])
@pytest.mark.parametrize("seed", [0, 1])
def test_region_dice_equals_nnunet_compute_metrics(tmp_path, seed, regions):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from nnunet_ext.metrics.segmentation import region_metrics

    reference, prediction = _blobby_label_map(seed), _blobby_label_map(seed + 100)
    for name, array in (("ref", reference), ("pred", prediction)):
        write_image(tmp_path / f"{name}.nii.gz", array, REGION_SPACING)
    nnunet = compute_metrics(str(tmp_path / "ref.nii.gz"), str(tmp_path / "pred.nii.gz"), SimpleITKIO(),
                             list(regions.values()))["metrics"]
    ours = region_metrics(reference, prediction, regions, REGION_SPACING)
    assert list(ours) == list(regions)
    for name, labels in regions.items():
        assert ours[name]["Dice"] == pytest.approx(nnunet[labels]["Dice"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_hd95_equals_medpy_with_anisotropic_spacing(seed):
    binary = pytest.importorskip("medpy.metric.binary", reason="medpy (the independent HD95 reference) is missing")
    from nnunet_ext.metrics.segmentation import pooled_hd95, region_metrics

    reference, prediction = _blobby_label_map(seed), _blobby_label_map(seed + 100)
    ours = region_metrics(reference, prediction, BRATS, REGION_SPACING)
    for name, labels in BRATS.items():
        reference_mask, prediction_mask = np.isin(reference, labels), np.isin(prediction, labels)
        expected = binary.hd95(prediction_mask, reference_mask, voxelspacing=REGION_SPACING)
        assert ours[name]["HD95"] == pytest.approx(expected, rel=1e-12)
        assert pooled_hd95(reference_mask, prediction_mask, REGION_SPACING) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("reference_has_et, prediction_has_et, dice, hd95", [
    (False, False, 1.0, 0.0),
    (True, False, 0.0, 373.13),
    (False, True, 0.0, 373.13),
], ids=["both_empty", "prediction_empty", "reference_empty"])
def test_brats_empty_rule(reference_has_et, prediction_has_et, dice, hd95):
    from nnunet_ext.metrics.segmentation import BRATS_EMPTY_HD95_MM, region_metrics

    reference = np.zeros((4, 6, 6), np.uint8)
    reference[1:3, 1:4, 1:4] = 2
    prediction = reference.copy()
    reference[2, 2, 2] = 3 if reference_has_et else 1
    prediction[2, 2, 2] = 3 if prediction_has_et else 1
    metrics = region_metrics(reference, prediction, BRATS, REGION_SPACING)
    assert metrics["ET"] == {"Dice": dice, "HD95": hd95} and BRATS_EMPTY_HD95_MM == 373.13
    assert metrics["WT"] == {"Dice": 1.0, "HD95": 0.0}  # WT is the same in both


def test_cli_regions_brats_on_a_hand_made_example(tmp_path, capsys):
    """Two cases on a (2, 4, 5) grid, spacing 3 x 1 x 1.5 mm. case_a: prediction = reference (labels 1 and 2, no
    ET): every region scores Dice 1, HD95 0. case_b: the reference row (x = 1, 2, 3) holds NCR, ET, ED; the prediction
    holds NCR, ED, ED. WT is the same (1 / 0); TC is {x=1, 2} vs {x=1}: Dice 2/3, pooled surface distances
    {0, 0, 1.5 mm}, whose 95th percentile is 0.9 * 1.5 = 1.35 mm (MONAI's directed maximum would be 1.425);
    ET is missed: 0 / 373.13."""
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    spacing = (3.0, 1.0, 1.5)
    case_a = np.zeros((2, 4, 5), np.uint8)
    case_a[0, 1:3, 1:4] = 2
    case_a[0, 1, 2] = 1
    reference_b, prediction_b = np.zeros((2, 4, 5), np.uint8), np.zeros((2, 4, 5), np.uint8)
    reference_b[1, 2, 1:4] = (1, 3, 2)
    prediction_b[1, 2, 1:4] = (1, 2, 2)
    for name, reference, prediction in (("case_a", case_a, case_a), ("case_b", reference_b, prediction_b)):
        write_image(ref_dir / f"{name}.nii.gz", reference, spacing)
        write_image(pred_dir / f"{name}.nii.gz", prediction, spacing)

    assert main(["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir), "--regions", "brats", "-np", "2"]) == 0
    assert "region means (Dice / HD95 mm): WT 1.0000 / 0.00, TC 0.8333 / " in capsys.readouterr().out
    summary = json.loads((pred_dir / "summary.json").read_text())
    regions = summary["regions"]
    assert regions["labels"] == {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]} and regions["empty_hd95_mm"] == 373.13
    expected_b = {"WT": (1.0, 0.0), "TC": (2 / 3, 1.35), "ET": (0.0, 373.13)}
    expected_b["mean"] = ((1 + 2 / 3) / 3, (1.35 + 373.13) / 3)
    expected = [{name: (1.0, 0.0) for name in expected_b}, expected_b]
    for case, values in zip(regions["metric_per_case"], expected):
        assert set(case["metrics"]) == set(values)
        for name, (dice, hd95) in values.items():
            assert case["metrics"][name] == {"Dice": pytest.approx(dice), "HD95": pytest.approx(hd95)}
    assert regions["metric_per_case"][1]["prediction_file"].endswith("case_b.nii.gz")
    for name, (dice, hd95) in expected_b.items():
        assert regions["mean"][name] == {"Dice": pytest.approx((1 + dice) / 2), "HD95": pytest.approx(hd95 / 2)}
    assert set(summary["mean"]) == {"1", "2", "3"}  # the per-label part is still there

    with open(pred_dir / "per_case.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["label"] in ("WT", "TC", "ET", "mean")]
    assert [(row["case"], row["label"]) for row in rows[4:]] == [
        ("case_b.nii.gz", "WT"), ("case_b.nii.gz", "TC"), ("case_b.nii.gz", "ET"), ("case_b.nii.gz", "mean"),
        ("mean", "WT"), ("mean", "TC"), ("mean", "ET"), ("mean", "mean")]
    assert float(rows[5]["HD95"]) == pytest.approx(1.35) and rows[5]["IoU"] == ""
    assert float(rows[-1]["Dice"]) == pytest.approx(regions["mean"]["mean"]["Dice"])
