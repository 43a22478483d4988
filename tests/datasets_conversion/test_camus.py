"""Tests of nnunet_ext.datasets_conversion.camus on small fake CAMUS trees (2019 .mhd and 2023 .nii.gz layouts)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunet_ext.atomic import MARKER
from nnunet_ext.cli import main
from nnunet_ext.datasets_conversion import camus
from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import read_image
from tests.conftest import tree_hash

SHAPE = (24, 20)  # rows, columns (real CAMUS frames are about 800 x 600)
SPACING = {"patient0001": (0.3, 0.15), "patient0002": (0.25, 0.2)}  # (y, x) mm, one per patient
FRAMES = [(view, phase) for view in camus.VIEWS for phase in camus.PHASES]


def segmentation(seed: int) -> np.ndarray:
    """Background, LV cavity inside the myocardium, left atrium below: values 0..3."""
    label = np.zeros(SHAPE, np.uint8)
    label[3:15, 5:15] = 2
    label[5:13, 7:13] = 1
    label[16:21, 6 + seed % 3:14] = 3
    return label


def write_frame(path: Path, array: np.ndarray, spacing=(0.3, 0.15), singleton: bool = False) -> None:
    """A CAMUS frame; ``singleton`` stores it as x * y * 1 (as the 2019 .mhd files are)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array[None] if singleton else array)
    image.SetSpacing((spacing[1], spacing[0], 1.0)[:image.GetDimension()])
    sitk.WriteImage(image, str(path), path.name.endswith(".gz"))


def write_patient(folder: Path, suffix: str, seed: int, with_gt: bool = True, singleton: bool = False,
                  spacing=None) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    spacing = spacing or SPACING.get(folder.name, (0.3, 0.15))
    for view, phase in FRAMES:
        stem = f"{folder.name}_{view}_{phase}"
        write_frame(folder / f"{stem}{suffix}", rng.integers(0, 255, SHAPE).astype(np.uint8), spacing, singleton)
        if with_gt:
            write_frame(folder / f"{stem}_gt{suffix}", segmentation(seed), spacing, singleton)
    for view in camus.VIEWS:  # whole-cycle files and metadata, which the converter must not read
        sequence = "_half_sequence" if suffix == ".nii.gz" else "_sequence"
        write_frame(folder / f"{folder.name}_{view}{sequence}{suffix}", rng.integers(0, 255, (3, *SHAPE)).astype(
            np.uint8), spacing)
        (folder / f"Info_{view}.cfg").write_text("ED: 1\nES: 3\nNbFrame: 3\nSex: F\nImageQuality: Good\n")


def write_mhd_tree(src: Path) -> Path:
    """The 2019 release: training/ with segmentations (patient0001 as x * y * 1 volumes), testing/ without."""
    write_patient(src / "training" / "patient0001", ".mhd", 1, singleton=True)
    write_patient(src / "training" / "patient0002", ".mhd", 2)
    write_patient(src / "testing" / "patient0001", ".mhd", 3, with_gt=False, singleton=True)
    return src


def write_nifti_tree(src: Path) -> Path:
    """The 2023 release (CAMUS_public): database_nifti/ with every segmentation, database_split/ beside it."""
    for seed, patient in enumerate(("patient0001", "patient0002"), start=1):
        write_patient(src / "database_nifti" / patient, ".nii.gz", seed)
    (src / "database_split").mkdir()
    (src / "database_split" / "subgroup_training.txt").write_text("patient0001\n")
    return src


def test_2019_mhd_release_converts_frames_with_spacing_groups_and_test_set(tmp_path):
    src = write_mhd_tree(tmp_path / "src")
    before = tree_hash(src)
    folder = camus.convert(src, 420, raw=tmp_path / "raw")
    assert tree_hash(src) == before
    assert folder.name == "Dataset420_CAMUS" and (folder / MARKER).is_file()
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "LV_cavity": 1, "LV_myocardium": 2, "left_atrium": 3}
    assert dataset["channel_names"] == {"0": "US"} and dataset["numTraining"] == 8
    assert dataset["case_groups"] == {f"camus_{p}_{v}_{f}": p for p in SPACING for v, f in FRAMES}
    assert dataset["conversion"]["patient_folders"] == ["training", "testing"]
    assert dataset["conversion"]["views"] == ["2CH", "4CH"] and dataset["conversion"]["phases"] == ["ED", "ES"]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [
        f"camus_patient0001_{v}_{f}_test_0000.nii.gz" for v, f in FRAMES]
    for patient in SPACING:  # patient0001: x * y * 1 source, squeezed; patient0002: 2D source
        label, spacing = read_image(folder / "labelsTr" / f"camus_{patient}_4CH_ES.nii.gz")
        assert label.shape == SHAPE and np.allclose(spacing, SPACING[patient])
        assert set(np.unique(label)) == {0, 1, 2, 3}
        image, image_spacing = read_image(folder / "imagesTr" / f"camus_{patient}_4CH_ES_0000.nii.gz")
        assert image.shape == SHAPE and image_spacing == spacing
    source, _ = read_image(src / "training" / "patient0002" / "patient0002_2CH_ED.mhd")
    written, _ = read_image(folder / "imagesTr" / "camus_patient0002_2CH_ED_0000.nii.gz")
    assert np.array_equal(written, source)


@pytest.mark.parametrize("sub", ["", "database_nifti"])
def test_2023_nifti_release_from_its_root_or_its_patient_folder(tmp_path, sub):
    src = write_nifti_tree(tmp_path / "src")
    before = tree_hash(src)
    folder = camus.convert(src / sub if sub else src, 421, raw=tmp_path / "raw", views=["4ch"], phases=["ES"])
    assert tree_hash(src) == before
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["numTraining"] == 2 and dataset["conversion"]["views"] == ["4CH"]
    assert dataset["case_groups"] == {"camus_patient0001_4CH_ES": "patient0001",
                                      "camus_patient0002_4CH_ES": "patient0002"}
    assert dataset["conversion"]["patient_folders"] == ["database_nifti" if not sub else "."]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [
        "camus_patient0001_4CH_ES.nii.gz", "camus_patient0002_4CH_ES.nii.gz"]
    assert not any((folder / "imagesTs").iterdir())
    label, spacing = read_image(folder / "labelsTr" / "camus_patient0002_4CH_ES.nii.gz")
    assert np.array_equal(label, segmentation(2)) and np.allclose(spacing, SPACING["patient0002"])


def test_frame_without_segmentation_goes_to_images_ts(tmp_path):
    src = write_nifti_tree(tmp_path / "src")
    (src / "database_nifti" / "patient0002" / "patient0002_2CH_ED_gt.nii.gz").unlink()
    folder = camus.convert(src, 422, raw=tmp_path / "raw")
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["numTraining"] == 7 and "camus_patient0002_2CH_ED" not in dataset["case_groups"]
    assert [p.name for p in (folder / "imagesTs").iterdir()] == ["camus_patient0002_2CH_ED_0000.nii.gz"]


def _gt(src: Path, name: str = "patient0002_4CH_ES_gt.mhd") -> Path:
    return src / "training" / "patient0002" / name


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.mark.parametrize("damage,message", [
    (lambda src: _truncate(src / "training" / "patient0001" / "patient0001_2CH_ED.raw"),
     r"cannot read image .*patient0001_2CH_ED\.mhd: .*data not read completely"),
    (lambda src: (src / "training" / "patient0001" / "patient0001_2CH_ED.raw").unlink(),
     r"cannot read image .*patient0001_2CH_ED\.mhd"),
    (lambda src: _gt(src).write_text("not a MetaImage header\n"), r"cannot read segmentation .*4CH_ES_gt\.mhd"),
    (lambda src: write_frame(_gt(src), np.zeros((23, 20), np.uint8), SPACING["patient0002"]),
     r"segmentation .*patient0002_4CH_ES_gt\.mhd is 20x23 but its image patient0002_4CH_ES\.mhd is 20x24"),
    (lambda src: write_frame(_gt(src), segmentation(2), (0.25, 0.25)),
     r"segmentation .*4CH_ES_gt\.mhd has spacing 0\.25 x 0\.25 mm but its image .* has 0\.2 x 0\.25 mm"),
    (lambda src: write_frame(_gt(src), np.where(segmentation(2) == 3, 4, segmentation(2)).astype(np.uint8),
                             SPACING["patient0002"]),
     r"segmentation .*4CH_ES_gt\.mhd has values 4; CAMUS labels are 0\.\.3"),
    (lambda src: write_frame(_gt(src), np.zeros((2, *SHAPE), np.uint8), SPACING["patient0002"]),
     r"segmentation .*4CH_ES_gt\.mhd is 20x24x2; expected a 2D image"),
    (lambda src: (src / "training" / "patient0002" / "patient0002_4CH_ED.mhd").unlink(),
     r"missing patient0002_4CH_ED\.mhd or \.nii\.gz in .*patient0002 \(asked for by --views 4CH --phases ED\)"),
    (lambda src: shutil.copy(_gt(src), _gt(src, "patient0002_4CH_ES_gt.nii")),
     r"patient0002 holds patient0002_4CH_ES_gt twice \(patient0002_4CH_ES_gt\.mhd, patient0002_4CH_ES_gt\.nii\)"),
    (lambda src: (src / "database_nifti").mkdir(), r"holds both the 2019 layout .* and the 2023 one"),
    (lambda src: shutil.rmtree(src / "training"), r"no segmentation .* in .*testing: nothing to train on"),
    (lambda src: [shutil.rmtree(src / sub) for sub in ("training", "testing")],
     r"no patient folders \(patientNNNN/\) in .*src"),
])
def test_bad_mhd_input_names_the_file_and_writes_nothing(tmp_path, damage, message):
    src = write_mhd_tree(tmp_path / "src")
    damage(src)
    before = tree_hash(src)
    with pytest.raises(UserInputError, match=message):
        camus.convert(src, 423, raw=tmp_path / "raw")
    assert tree_hash(src) == before
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


PATIENT2 = Path("database_nifti") / "patient0002"


@pytest.mark.parametrize("damage,message", [
    (lambda src: (src / PATIENT2 / "patient0002_2CH_ES.nii.gz").write_bytes(b"not a NIfTI file " * 8),
     r"cannot read image .*patient0002_2CH_ES\.nii\.gz"),
    (lambda src: _truncate(src / PATIENT2 / "patient0002_2CH_ES_gt.nii.gz", keep=0.9),
     r"cannot read segmentation .*patient0002_2CH_ES_gt\.nii\.gz: truncated or corrupt gzip data"),
    (lambda src: _truncate(src / PATIENT2 / "patient0002_2CH_ES_gt.nii.gz", keep=0.1),
     r"cannot read segmentation .*patient0002_2CH_ES_gt\.nii\.gz: not an image file SimpleITK can read"),
    (lambda src: write_frame(src / PATIENT2 / "patient0002_2CH_ES_gt.nii.gz", segmentation(2) * 0.5,
                             SPACING["patient0002"]), r"patient0002_2CH_ES_gt\.nii\.gz has values 0\.5, 1\.5; CAMUS"),
])
def test_bad_nifti_input_names_the_file_and_writes_nothing(tmp_path, damage, message):
    src = write_nifti_tree(tmp_path / "src")
    damage(src)
    before = tree_hash(src)
    with pytest.raises(UserInputError, match=message):
        camus.convert(src, 424, raw=tmp_path / "raw")
    assert tree_hash(src) == before
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("options,message", [
    ({"views": ["3CH"]}, r"--views 3CH: unknown value \(choose from 2CH, 4CH\)"),
    ({"phases": ["ED", "mid"]}, r"--phases mid: unknown value \(choose from ED, ES\)"),
    ({"views": []}, r"--views needs at least one of 2CH, 4CH"),
    ({"name": "my camus"}, r"dataset name 'my camus' must start with"),
])
def test_bad_options_are_refused_before_reading(tmp_path, options, message):
    with pytest.raises(UserInputError, match=message):
        camus.convert(tmp_path / "nope", 425, raw=tmp_path / "raw", **options)


def test_existing_dataset_id_needs_overwrite(tmp_path):
    src = write_nifti_tree(tmp_path / "src")
    camus.convert(src, 426, raw=tmp_path / "raw", views=["2CH"], phases=["ED"])
    with pytest.raises(UserInputError, match="dataset id 426 already exists"):
        camus.convert(src, 426, raw=tmp_path / "raw", name="Other")
    folder = camus.convert(src, 426, raw=tmp_path / "raw", name="Other", overwrite=True)
    assert [p.name for p in (tmp_path / "raw").iterdir()] == [folder.name] == ["Dataset426_Other"]


def test_cli_converts_and_a_truncated_raw_file_is_one_line_on_the_terminal(tmp_path, capfd):
    """ITK's MetaImage reader prints to file descriptor 2 itself: the converter folds that into its one line."""
    src = write_mhd_tree(tmp_path / "src")
    assert main(["convert", "camus", "-i", str(src), "-d", "427", "--raw", str(tmp_path / "raw"),
                 "--views", "2CH", "--phases", "ES"]) == 0
    assert "wrote " in capfd.readouterr().out
    _truncate(src / "training" / "patient0002" / "patient0002_2CH_ES.raw")
    assert main(["convert", "camus", "-i", str(src), "-d", "428", "--raw", str(tmp_path / "raw")]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nnunet-ext convert: error: cannot read image ")


def test_output_passes_nnunet_integrity_check(tmp_path, verify_with_nnunet):
    verify_with_nnunet(camus.convert(write_mhd_tree(tmp_path / "src"), 429, raw=tmp_path / "raw"))
