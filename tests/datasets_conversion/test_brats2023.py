"""Tests of nnunet_ext.datasets_conversion.brats2023 on a small fake BraTS-GLI release (8 x 10 x 12 volumes: three
labelled cases, two of them timepoints of one patient, and one case without segmentation)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunet_ext.atomic import MARKER
from nnunet_ext.cli import main
from nnunet_ext.datasets_conversion import brats2023
from nnunet_ext.errors import UserInputError
from tests.conftest import tree_hash
from tests.datasets_conversion.helpers import assert_refused, dataset_json, files, read

SHAPE = (8, 10, 12)  # z, y, x (real BraTS volumes are 155 x 240 x 240)
SPACING = (1.0, 1.0, 1.0)  # z, y, x in mm
ORIGIN = (-10.0, -20.0, -30.0)  # z, y, x in mm
MODALITIES = ("t1n", "t1c", "t2w", "t2f")
LABELLED = ["BraTS-GLI-00001-000", "BraTS-GLI-00001-001", "BraTS-GLI-00002-000"]
UNLABELLED = ["BraTS-GLI-00003-000"]
CASES = LABELLED + UNLABELLED
TRAINING_FOLDER = "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
OUT = "Dataset450_BraTS2023GLI"


def write_volume(path: Path, array: np.ndarray, spacing=SPACING, origin=ORIGIN, direction=None) -> None:
    """A NIfTI volume from a (z, y, x) array with (z, y, x) spacing and origin."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(spacing)])
    image.SetOrigin([float(o) for o in reversed(origin)])
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path), path.name.endswith(".gz"))


def mri(case: str, modality: str) -> np.ndarray:
    seed = 10 * CASES.index(case) + MODALITIES.index(modality)
    return np.random.default_rng(seed).uniform(0, 1000, SHAPE).astype(np.float32)


def segmentation(case: str) -> np.ndarray:
    """Edema around a core of necrosis and enhancing tumour, placed per case (values 0..3)."""
    shift = CASES.index(case)
    label = np.zeros(SHAPE, np.uint8)
    label[1:7, 2:8, 1 + shift:9 + shift] = 2
    label[2:5, 3:6, 3 + shift:6 + shift] = 3
    label[3, 4, 4 + shift] = 1
    return label


def case_path(src: Path, case: str, suffix: str, nested: bool = True) -> Path:
    return src / (TRAINING_FOLDER if nested else "") / case / f"{case}-{suffix}.nii.gz"


def write_brats(src: Path, nested: bool = True) -> Path:
    """The release as unpacked: case folders in SRC/<training folder>/ (``nested``) or directly in SRC."""
    for case in CASES:
        case_path(src, case, "seg", nested).parent.mkdir(parents=True)
        for modality in MODALITIES:
            write_volume(case_path(src, case, modality, nested), mri(case, modality))
        if case in LABELLED:
            write_volume(case_path(src, case, "seg", nested), segmentation(case))
    return src


@pytest.fixture
def release(tmp_path) -> Path:
    return write_brats(tmp_path / "BraTS")


# ----------------------------------------------------------------------------------------------------------------------
# the happy path


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "flat"])
@pytest.mark.parametrize("modalities, channels", [("t1", 2), ("all", 4)])
def test_release_converts_channels_regions_labels_and_groups(tmp_path, nested, modalities, channels):
    src = write_brats(tmp_path / "BraTS", nested)
    before = tree_hash(src)
    folder = brats2023.convert(src, 450, raw=tmp_path / "raw", modalities=modalities)
    assert tree_hash(src) == before
    assert folder.name == OUT and (folder / MARKER).is_file()
    dataset = dataset_json(folder)
    assert dataset["channel_names"] == {str(k): m for k, m in enumerate(MODALITIES[:channels])}
    assert list(dataset["labels"].items()) == [("background", 0), ("whole_tumor", [1, 2, 3]), ("tumor_core", [1, 3]),
                                               ("enhancing_tumor", [3])]
    assert dataset["regions_class_order"] == [2, 1, 3]
    assert dataset["numTraining"] == 3 and dataset["file_ending"] == ".nii.gz"
    assert dataset["case_groups"] == {"BraTS-GLI-00001-000": "BraTS-GLI-00001", "BraTS-GLI-00001-001":
                                      "BraTS-GLI-00001", "BraTS-GLI-00002-000": "BraTS-GLI-00002"}
    assert dataset["conversion"]["unlabelled_cases"] == UNLABELLED
    assert files(folder / "imagesTr") == [f"{c}_{k:04d}.nii.gz" for c in LABELLED for k in range(channels)]
    assert files(folder / "labelsTr") == [f"{c}.nii.gz" for c in LABELLED]
    assert files(folder / "imagesTs") == [f"{c}_{k:04d}.nii.gz" for c in UNLABELLED for k in range(channels)]
    assert not (folder / "labelsTs").exists()
    for case in CASES:
        split = "Tr" if case in LABELLED else "Ts"
        for k, modality in enumerate(MODALITIES[:channels]):
            image, header = read(folder / f"images{split}" / f"{case}_{k:04d}.nii.gz")
            assert np.array_equal(image, mri(case, modality))
            assert header.GetSpacing() == SPACING[::-1] and header.GetOrigin() == ORIGIN[::-1]
        if case in LABELLED:
            label, label_header = read(folder / "labelsTr" / f"{case}.nii.gz")
            assert label.dtype == np.uint8 and np.array_equal(label, segmentation(case))  # 1, 2, 3 kept
            assert label_header.GetOrigin() == header.GetOrigin()


def test_output_passes_nnunet_integrity_check_grouped_folds_and_overwrite_rule(release, tmp_path, verify_with_nnunet):
    from nnunet_ext.planning.splits import grouped_splits

    folder = brats2023.convert(release, 450, raw=tmp_path / "raw", modalities="all")
    verify_with_nnunet(folder)
    for fold in grouped_splits(dataset_json(folder)["case_groups"], num_folds=2):
        assert ("BraTS-GLI-00001-000" in fold["val"]) == ("BraTS-GLI-00001-001" in fold["val"])
    with pytest.raises(UserInputError, match=r"dataset id 450 already exists at .*Dataset450_BraTS2023GLI"):
        brats2023.convert(release, 450, raw=tmp_path / "raw")
    again = brats2023.convert(release, 450, raw=tmp_path / "raw", overwrite=True)
    assert dataset_json(again)["channel_names"] == {"0": "t1n", "1": "t1c"}


def test_modalities_not_chosen_are_not_needed(release, tmp_path):
    case_path(release, LABELLED[1], "t2f").unlink()
    case_path(release, UNLABELLED[0], "t2w").unlink()
    folder = brats2023.convert(release, 451, raw=tmp_path / "raw")
    assert len(files(folder / "imagesTr")) == 2 * len(LABELLED)


def test_cli_lists_and_runs_the_converter(release, tmp_path, capsys):
    from nnunet_ext.convert import available_converters

    assert available_converters()["brats2023"] == brats2023.__doc__.splitlines()[0]
    code = main(["convert", "brats2023", "-i", str(release), "-d", "452", "--raw", str(tmp_path / "raw"),
                 "--modalities", "all", "--name", "BraTSGLI4"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"{UNLABELLED[0]} (imagesTs, unlabelled)" in out and "wrote" in out
    dataset = dataset_json(tmp_path / "raw" / "Dataset452_BraTSGLI4")
    assert dataset["channel_names"] == {"0": "t1n", "1": "t1c", "2": "t2w", "3": "t2f"}
    assert dataset["conversion"]["modalities"] == "all"


# ----------------------------------------------------------------------------------------------------------------------
# the checks: one-line errors, no output, the source untouched

CASE = LABELLED[1]


def _volume(suffix: str, array: np.ndarray, case: str = CASE, **geometry):
    return lambda src: write_volume(case_path(src, case, suffix), array, **geometry)


def _delete(suffix: str, case: str = CASE):
    return lambda src: case_path(src, case, suffix).unlink()


def _nan_image(src: Path) -> None:
    image = mri(CASE, "t1c")
    image[2, 3, 4] = np.nan
    write_volume(case_path(src, CASE, "t1c"), image)


def _empty_source(src: Path) -> None:
    shutil.rmtree(src / TRAINING_FOLDER)
    (src / "docs").mkdir()
    (src / "docs" / "README.txt").write_text("not a case\n")


def _no_segmentation(src: Path) -> None:
    for case in LABELLED:
        case_path(src, case, "seg").unlink()


def _case_twice(src: Path) -> None:
    shutil.copytree(case_path(src, CASE, "seg").parent, src / "copy" / CASE)


def _both_endings(src: Path) -> None:
    write_volume(case_path(src, CASE, "t1n").with_suffix(""), mri(CASE, "t1n"))  # ...-t1n.nii beside ...-t1n.nii.gz


SEG = rf"{CASE}/{CASE}-seg\.nii\.gz"
CHECKS = [
    ("missing_source", shutil.rmtree, {}, r"source folder .* does not exist"),
    ("no_case_folders", _empty_source, {}, r"no BraTS-GLI case folders \(BraTS-GLI-XXXXX-YYY/\) in .*BraTS or its"),
    ("no_segmentation", _no_segmentation, {},
     r"no case in .* has a segmentation \(<case>-seg\.nii\.gz\): nothing to train on \(4 unlabelled case"),
    ("case_twice", _case_twice, {}, rf"case {CASE} is in .* twice \(.*{TRAINING_FOLDER}/{CASE} and .*copy/{CASE}\)"),
    ("two_endings", _both_endings, {}, rf"case {CASE}: t1n is given twice \({CASE}-t1n\.nii\.gz and {CASE}-t1n\.nii"),
    ("missing_t1c", _delete("t1c"), {}, rf"case {CASE}: t1c image missing \(.*{CASE}/{CASE}-t1c\.nii\.gz not found"),
    ("missing_t2f_with_all", _delete("t2f", UNLABELLED[0]), {"modalities": "all"},
     rf"case {UNLABELLED[0]}: t2f image missing .*--modalities all needs t1n, t1c, t2w, t2f"),
    ("label_4", _volume("seg", np.where(segmentation(CASE) == 3, 4, segmentation(CASE)).astype(np.uint8)), {},
     rf"case {CASE}: segmentation .*{SEG} has values 4; BraTS 2023 labels are 0\.\.3 .*4 is the BraTS 2021 label of "
     rf"enhancing tumour, .*map 4 -> 3"),
    ("label_7", _volume("seg", np.full(SHAPE, 7, np.uint8)), {},
     rf"case {CASE}: segmentation .*{SEG} has values 7; BraTS 2023 labels are 0\.\.3 \(1 NCR, 2 ED, 3 ET\)$"),
    ("non_integer_label", _volume("seg", np.full(SHAPE, 0.5, np.float32)), {},
     rf"case {CASE}: segmentation .*{SEG} has non-integer values \(0\.5\)"),
    ("seg_shape", _volume("seg", np.zeros((8, 10, 11), np.uint8)), {},
     rf"case {CASE}: segmentation .*{SEG} is not on the grid of {CASE}-t1n\.nii\.gz \(size \(11, 10, 8\) instead"),
    ("seg_spacing", _volume("seg", segmentation(CASE), spacing=(2.0, 1.0, 1.0)), {}, rf"{SEG} is not on .*\(spacing"),
    ("seg_origin", _volume("seg", segmentation(CASE), origin=(0.0, 0.0, 0.0)), {}, rf"{SEG} is not on .*\(origin"),
    ("seg_direction", _volume("seg", segmentation(CASE), direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1)), {},
     rf"{SEG} is not on .*\(direction"),
    ("t1c_spacing", _volume("t1c", mri(CASE, "t1c"), spacing=(1.0, 1.2, 1.0)), {},
     rf"case {CASE}: t1c image .*{CASE}-t1c\.nii\.gz is not on the grid of {CASE}-t1n\.nii\.gz \(spacing"),
    ("t2w_origin_with_all", _volume("t2w", mri(CASE, "t2w"), origin=(-10.0, -20.0, -29.0)), {"modalities": "all"},
     rf"case {CASE}: t2w image .*{CASE}-t2w\.nii\.gz is not on the grid .*\(origin"),
    ("nan_in_image", _nan_image, {}, rf"case {CASE}: t1c image .*{CASE}-t1c\.nii\.gz contains 1 NaN voxel"),
    ("corrupt_nifti", lambda src: case_path(src, CASE, "t1n").write_bytes(b"not a NIfTI file " * 20), {},
     rf"case {CASE}: cannot read t1n image .*{CASE}-t1n\.nii\.gz: not an image file"),
    ("bad_modalities", None, {"modalities": "flair"}, r"--modalities flair: unknown value \(choose from t1, all\)"),
]


@pytest.mark.parametrize("setup, options, message", [pytest.param(*row[1:], id=row[0]) for row in CHECKS])
def test_bad_release_is_one_error_naming_the_case_and_file_and_writes_nothing(release, tmp_path, setup, options,
                                                                              message):
    if setup is not None:
        setup(release)
    assert_refused(lambda raw: brats2023.convert(release, 453, raw=raw, **options), release, tmp_path / "raw",
                   "Dataset453_BraTS2023GLI", message)


def test_output_inside_the_source_is_refused(release):
    before = tree_hash(release)
    with pytest.raises(UserInputError, match="lies inside the input"):
        brats2023.convert(release, 454, raw=release / "raw")
    assert tree_hash(release) == before
