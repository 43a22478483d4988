"""Tests of nnunet_ext.datasets_conversion.oasis_learn2reg on a small fake Learn2Reg OASIS download (five 8 x 10 x 12
subjects with labels 0..35 and brain masks, OASIS_dataset.json with a validation pair)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunet_ext.atomic import MARKER
from nnunet_ext.cli import main
from nnunet_ext.datasets_conversion import oasis_learn2reg as oasis
from nnunet_ext.errors import UserInputError
from tests.conftest import tree_hash
from tests.datasets_conversion.test_registration_pairs import write_volume
from tests.datasets_conversion.helpers import assert_refused, read, files, dataset_json

SHAPE = (8, 10, 12)  # z, y, x (real: 224 x 192 x 160 at 1 mm)
SPACING = (1.0, 1.0, 1.0)
ORIGIN = (0.0, 0.0, 0.0)
SUBJECTS = ["0001", "0002", "0003", "0438", "0439"]
CASES = [f"OASIS_{s}" for s in SUBJECTS]
VAL = [("0438", "0439")]  # (fixed, moving), as the download's registration_val starts


def t1(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, SHAPE).astype(np.float32)


def seg35(seed: int) -> np.ndarray:
    """A label map using values 0..35 (every one of them once the seeds are combined)."""
    values = np.random.default_rng(100 + seed).integers(0, 36, SHAPE)
    values[0, 0, :] = 35
    return values.astype(np.uint8)


def image_path(subject: str) -> str:
    return f"./imagesTr/OASIS_{subject}_0000.nii.gz"


def write_description(root: Path, **changes) -> None:
    """OASIS_dataset.json with the Learn2Reg keys; ``changes`` replaces keys (value None removes one)."""
    data = {
        "name": "OASIS", "release": "1.1", "description": "OASIS subset of Learn2Reg (fake)", "pairings": "unpaired",
        "provided_data": {"0": ["image", "label", "mask"]}, "registration_direction": {"fixed": 0, "moving": 0},
        "modality": {"0": "MR"}, "labels": {}, "tensorImageSize": {"0": "3D"},
        "tensorImageShape": {"0": [12, 10, 8]}, "numTraining": len(SUBJECTS), "numTest": 0,
        "training": [{"image": image_path(s), "label": f"./labelsTr/OASIS_{s}_0000.nii.gz",
                      "mask": f"./masksTr/OASIS_{s}_0000.nii.gz"} for s in SUBJECTS],
        "test": [], "numPairedTraining": 0, "training_paired_images": [],
        "registration_val": [{"fixed": image_path(f), "moving": image_path(m)} for f, m in VAL],
    }
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    (root / "OASIS_dataset.json").write_text(json.dumps(data, indent=4))


def write_oasis(src: Path) -> Path:
    """SRC/OASIS/{imagesTr, labelsTr, masksTr, OASIS_dataset.json} as the download unpacks; returns SRC."""
    root = src / "OASIS"
    for folder in ("imagesTr", "labelsTr", "masksTr"):
        (root / folder).mkdir(parents=True)
    for seed, subject in enumerate(SUBJECTS):
        name = f"OASIS_{subject}_0000.nii.gz"
        write_volume(root / "imagesTr" / name, t1(seed), spacing=SPACING, origin=ORIGIN)
        write_volume(root / "labelsTr" / name, seg35(seed), spacing=SPACING, origin=ORIGIN)
        write_volume(root / "masksTr" / name, (t1(seed) > 0.2).astype(np.uint8), spacing=SPACING, origin=ORIGIN)
    write_description(root)
    return src


@pytest.fixture
def download(tmp_path) -> Path:
    return write_oasis(tmp_path / "L2R")


# ----------------------------------------------------------------------------------------------------------------------
# the happy paths


@pytest.mark.parametrize("inner", [False, True], ids=["parent_folder", "OASIS_folder"])
def test_download_converts_cases_labels_and_pairs(download, tmp_path, inner):
    before = tree_hash(download)
    out = oasis.convert(download / "OASIS" if inner else download, 440, raw=tmp_path / "raw")
    assert tree_hash(download) == before
    assert out.name == "Dataset440_OASIS" and (out / MARKER).is_file()
    dataset = dataset_json(out)
    assert dataset["channel_names"] == {"0": "T1"} and dataset["file_ending"] == ".nii.gz"
    assert dataset["labels"] == {"background": 0, **{f"label_{v}": v for v in range(1, 36)}}
    assert dataset["numTraining"] == len(CASES)
    assert dataset["registration_pairs"] == []
    assert dataset["registration_val"] == [{"fixed": "OASIS_0438", "moving": "OASIS_0439"}]
    conversion = dataset["conversion"]
    assert conversion["tensorImageShape"] == {"0": [12, 10, 8]} and conversion["images_without_label"] == []
    assert conversion["cases"] == {c: f"{c}_0000.nii.gz" for c in CASES}
    assert conversion["source"] == str((download / "OASIS").resolve())
    assert files(out / "imagesTr") == [f"{c}_0000.nii.gz" for c in CASES]
    assert files(out / "labelsTr") == [f"{c}.nii.gz" for c in CASES]
    for seed, case in enumerate(CASES):
        image, header = read(out / "imagesTr" / f"{case}_0000.nii.gz")
        label, label_header = read(out / "labelsTr" / f"{case}.nii.gz")
        assert np.array_equal(image, t1(seed)) and np.array_equal(label, seg35(seed)) and label.dtype == np.uint8
        assert label_header.GetSpacing() == header.GetSpacing() and label_header.GetOrigin() == header.GetOrigin()


def test_training_pairs_are_copied_as_case_ids(download, tmp_path):
    paired = [{"fixed": image_path("0001"), "moving": "imagesTr/OASIS_0002_0000.nii.gz"},
              {"fixed": "OASIS_0003_0000.nii.gz", "moving": image_path("0001")}]
    write_description(download / "OASIS", training_paired_images=paired, registration_val=None)
    dataset = dataset_json(oasis.convert(download, 441, raw=tmp_path / "raw"))
    assert dataset["registration_pairs"] == [{"fixed": "OASIS_0001", "moving": "OASIS_0002"},
                                             {"fixed": "OASIS_0003", "moving": "OASIS_0001"}]
    assert "registration_val" not in dataset


@pytest.mark.parametrize("labels, expected", [
    ({"0": "background", "1": "Cortex", "2": "WM", "3": "CSF"}, {"background": 0, "Cortex": 1, "WM": 2, "CSF": 3}),
    ({"background": 0, "Cortex": 1, "WM": 2, "CSF": 3}, {"background": 0, "Cortex": 1, "WM": 2, "CSF": 3}),
    ({"1": "Cortex", "2": "Cortex"}, {"background": 0, "Cortex": 1, "Cortex_2": 2}),
])
def test_labels_declared_in_the_description_are_used(download, tmp_path, labels, expected):
    write_description(download / "OASIS", labels=labels)
    for seed, subject in enumerate(SUBJECTS):
        write_volume(download / "OASIS" / "labelsTr" / f"OASIS_{subject}_0000.nii.gz", seg35(seed) % len(expected),
                     spacing=SPACING, origin=ORIGIN)
    dataset = dataset_json(oasis.convert(download, 442, raw=tmp_path / "raw"))
    assert dataset["labels"] == expected


@pytest.mark.parametrize("max_cases, cases, dropped", [
    (3, ["OASIS_0001", "OASIS_0438", "OASIS_0439"], 0),  # the validation pair's images first
    (1, ["OASIS_0438"], 1),
])
def test_max_cases_keeps_the_validation_pair_first(download, tmp_path, max_cases, cases, dropped):
    dataset = dataset_json(oasis.convert(download, 443, raw=tmp_path / "raw", max_cases=max_cases))
    assert sorted(dataset["conversion"]["cases"]) == cases and dataset["numTraining"] == len(cases)
    assert len(dataset["registration_val"]) == 1 - dropped
    assert dataset["conversion"]["pairs_dropped"] == {"training_paired_images": 0, "registration_val": dropped}


def test_images_without_label_are_skipped_and_listed(download, tmp_path):
    (download / "OASIS" / "labelsTr" / "OASIS_0002_0000.nii.gz").unlink()
    dataset = dataset_json(oasis.convert(download, 444, raw=tmp_path / "raw"))
    assert dataset["conversion"]["images_without_label"] == ["OASIS_0002"]
    assert "OASIS_0002" not in dataset["conversion"]["cases"] and dataset["numTraining"] == 4


def test_output_passes_nnunet_integrity_check(download, tmp_path, verify_with_nnunet):
    verify_with_nnunet(oasis.convert(download, 445, raw=tmp_path / "raw"))


def test_cli_runs_through_nnunet_ext_convert(download, tmp_path, capsys):
    assert main(["convert", "oasis_learn2reg", "-i", str(download), "-d", "446", "--raw", str(tmp_path / "raw"),
                 "--max_cases", "2", "--name", "OASISsmall"]) == 0
    out = capsys.readouterr().out
    assert "OASIS_0438_0000.nii.gz -> OASIS_0438" in out and "wrote" in out
    assert dataset_json(tmp_path / "raw" / "Dataset446_OASISsmall")["numTraining"] == 2
    assert main(["convert", "oasis_learn2reg", "-i", str(tmp_path / "nope"), "-d", "447", "--raw",
                 str(tmp_path / "raw")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nnunet-ext convert: error: source folder") and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------------------------------------------------
# the checks: one-line errors, no output, the source untouched

ROOT = "OASIS"
LABEL = f"{ROOT}/labelsTr/OASIS_0002_0000.nii.gz"
IMAGE = f"{ROOT}/imagesTr/OASIS_0003_0000.nii.gz"


def _describe(**changes):
    return lambda src: write_description(src / ROOT, **changes)


def _volume(relative: str, array: np.ndarray, spacing=SPACING, origin=ORIGIN, **geometry):
    return lambda src: write_volume(src / relative, array, spacing=spacing, origin=origin, **geometry)


def _truncated_image(src: Path) -> None:
    write_volume(src / IMAGE, np.random.default_rng(0).normal(size=(8, 64, 64)).astype(np.float32))
    (src / IMAGE).write_bytes((src / IMAGE).read_bytes()[:-300])


CHECKS = [
    ("missing_source", shutil.rmtree, {}, r"source folder .* does not exist"),
    ("no_description", lambda src: (src / ROOT / "OASIS_dataset.json").unlink(), {},
     r"no OASIS_dataset\.json in .*L2R \(the Learn2Reg OASIS download: OASIS_dataset\.json, imagesTr/, labelsTr/\)"),
    ("unreadable_description", lambda src: (src / ROOT / "OASIS_dataset.json").write_text("{training: "), {},
     r"cannot read .*OASIS_dataset\.json: "),
    ("description_not_an_object", lambda src: (src / ROOT / "OASIS_dataset.json").write_text("[]"), {},
     r"OASIS_dataset\.json holds a list, expected an object"),
    ("no_images_folder", lambda src: (src / ROOT / "imagesTr").rename(src / ROOT / "images"), {},
     r"no imagesTr/ folder in .*OASIS \(beside OASIS_dataset\.json\)"),
    ("no_labels", lambda src: shutil.rmtree(src / ROOT / "labelsTr"), {}, r"no labels in .*labelsTr"),
    ("val_pair_missing_image", _describe(registration_val=[{"fixed": image_path("0438"),
                                                            "moving": image_path("0999")}]), {},
     r"OASIS_dataset\.json registration_val\[0\] names moving image \./imagesTr/OASIS_0999_0000\.nii\.gz, which is "
     r"not in .*imagesTr"),
    ("training_pair_missing_image", _describe(training_paired_images=[{"fixed": "./imagesTr/OASIS_0005_0000.nii.gz",
                                                                       "moving": image_path("0001")}]), {},
     r"training_paired_images\[0\] names fixed image \./imagesTr/OASIS_0005_0000\.nii\.gz, which is not in"),
    ("pair_image_without_label", lambda src: (src / ROOT / "labelsTr" / "OASIS_0439_0000.nii.gz").unlink(), {},
     r"registration_val\[0\] names moving image \./imagesTr/OASIS_0439_0000\.nii\.gz, which has no label in "
     r".*labelsTr"),
    ("malformed_pair", _describe(registration_val=[["OASIS_0438", "OASIS_0439"]]), {},
     r"OASIS_dataset\.json: registration_val\[0\] is not a \{\"fixed\": PATH, \"moving\": PATH\} pair"),
    ("pairs_not_a_list", _describe(registration_val={"fixed": image_path("0438")}), {},
     r"'registration_val' must be a list of"),
    ("labels_with_a_gap", _describe(labels={"0": "background", "1": "a", "3": "c"}), {},
     r"OASIS_dataset\.json: labels must be the values 0\.\.K without gaps \(nnU-Net's rule\), got 0, 1, 3"),
    ("labels_malformed", _describe(labels={"Cortex": "one"}), {}, r"labels entry 'Cortex': 'one' is neither"),
    ("label_without_image", _volume(f"{ROOT}/labelsTr/OASIS_0007_0000.nii.gz", seg35(0)), {},
     r"label without image: .*OASIS_0007_0000\.nii\.gz \(no OASIS_0007_0000\.nii\.gz in .*imagesTr\)"),
    ("label_shape_mismatch", _volume(LABEL, seg35(1)[:, :, :11]), {},
     r"label .*OASIS_0002_0000\.nii\.gz is not on the grid of its image OASIS_0002_0000\.nii\.gz \(size "
     r"\(11, 10, 8\) instead of \(12, 10, 8\): label 11x10x8 at 1 x 1 x 1 mm, image 12x10x8 at 1 x 1 x 1 mm\)"),
    ("label_spacing_mismatch", _volume(LABEL, seg35(1), spacing=(1.0, 1.0, 1.2)), {},
     r"label .*OASIS_0002_0000\.nii\.gz is not on the grid of its image .*\(spacing \(1\.2, 1, 1\) instead of "
     r"\(1, 1, 1\)"),
    ("label_outside_declared", _volume(LABEL, np.full(SHAPE, 36, np.uint8)), {},
     r"label .*OASIS_0002_0000\.nii\.gz has values 36, outside the labels declared for the dataset \(0\.\.35"),
    ("label_outside_declared_in_json", lambda src: _describe(labels={"0": "background", "1": "a", "2": "b"})(src),
     {}, r"label .*OASIS_0001_0000\.nii\.gz has values 3, 4, 5, 6, 7, \.\.\., outside the labels declared .*0\.\.2"),
    ("non_integer_label", _volume(LABEL, np.full(SHAPE, 1.5, np.float32)), {},
     r"label .*OASIS_0002_0000\.nii\.gz has non-integer values \(1\.5\)"),
    ("corrupt_image", lambda src: (src / IMAGE).write_bytes(b"not a NIfTI file " * 20), {},
     r"cannot read image .*OASIS_0003_0000\.nii\.gz: not an image file SimpleITK can read"),
    ("truncated_image", _truncated_image, {}, r"cannot read image .*OASIS_0003_0000\.nii\.gz: truncated or corrupt"),
    ("two_files_of_one_case", _volume(f"{ROOT}/imagesTr/OASIS_0001.nii", t1(0)), {},
     r"imagesTr holds two files of case OASIS_0001 \(OASIS_0001\.nii and OASIS_0001_0000\.nii\.gz\)"),
    ("max_cases_zero", None, {"max_cases": 0}, r"--max_cases must be a positive integer, got 0"),
]


@pytest.mark.parametrize("setup, options, message", [pytest.param(*row[1:], id=row[0]) for row in CHECKS])
def test_bad_download_is_one_error_naming_the_file_and_writes_nothing(download, tmp_path, setup, options, message):
    if setup is not None:
        setup(download)
    assert_refused(lambda raw: oasis.convert(download, 448, raw=raw, **options), download, tmp_path / "raw",
                   "Dataset448_OASIS", message)


def test_output_inside_the_source_is_refused(download):
    with pytest.raises(UserInputError, match="lies inside the input"):
        oasis.convert(download, 449, raw=download / "raw")
    assert not (download / "raw").exists()
