"""Tests of nnunet_ext.datasets_conversion.bhsd on a small fake BHSD release (4 x 8 x 8 volumes, a 4/2 split, a pool of
eight scans and a slice-level CSV)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunet_ext.atomic import MARKER
from nnunet_ext.cli import main
from nnunet_ext.datasets_conversion import bhsd
from nnunet_ext.errors import UserInputError
from tests.conftest import tree_hash
from tests.datasets_conversion.helpers import assert_refused, read, files

SHAPE = (4, 8, 8)  # z, y, x (real BHSD scans are about 32 x 512 x 512)
SPACING = (5.0, 0.45, 0.45)  # z, y, x in mm
ORIGIN = (-40.0, -115.0, -120.0)  # z, y, x in mm
# names as in the release: ID_<patient, 8 hex>_ID_<study, 10 hex>; patient aaaa0001 has two training scans
TRAIN = ["ID_aaaa0001_ID_bbbb000001", "ID_aaaa0001_ID_bbbb000002", "ID_aaaa0002_ID_bbbb000003",
         "ID_aaaa0003_ID_bbbb000004"]
TEST = ["ID_aaaa0004_ID_bbbb000005", "ID_aaaa0005_ID_bbbb000006"]
NEGATIVES = ["ID_cccc0001_ID_dddd000001", "ID_cccc0002_ID_dddd000002", "ID_cccc0003_ID_dddd000003",
             "ID_aaaa0002_ID_dddd000004"]  # the last one: a later scan of a training patient
BLEEDING = ["ID_cccc0004_ID_dddd000005", "ID_cccc0005_ID_dddd000006"]
NOT_IN_CSV = ["ID_cccc0006_ID_dddd000007"]
OF_TEST_PATIENT = "ID_aaaa0004_ID_dddd000008"  # never added: its patient is in the official test set
POOL = NEGATIVES + BLEEDING + NOT_IN_CSV + [OF_TEST_PATIENT]
CSV_NAME = "bhsd_slice_labels.csv"


def write_volume(path: Path, array: np.ndarray, spacing=SPACING, origin=ORIGIN, direction=None) -> None:
    """A NIfTI volume from a (z, y, x) array with (z, y, x) spacing and origin."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(spacing)])
    image.SetOrigin([float(o) for o in reversed(origin)])
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path), path.name.endswith(".gz"))


def ct(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1500, SHAPE).astype(np.int16)


def bleed(seed: int) -> np.ndarray:
    """A label map with two of the five bleed types (values 0..5)."""
    label = np.zeros(SHAPE, np.uint8)
    label[1:3, 2:5, 2:5] = 1 + seed % 5
    label[2, 5:7, 1:3] = 1 + (seed + 2) % 5
    return label


def write_csv(path: Path, rows: dict[str, list[int]], columns: str = "scan", patient: bool = False) -> None:
    """Two slices per scan; ``rows[name]`` holds the five subtype flags of the second slice."""
    header = [columns] + (["PatientID"] if patient else []) + ["slice", "any", "epidural", "intraparenchymal",
                                                               "intraventricular", "subarachnoid", "subdural"]
    lines = [",".join(header)]
    for name, flags in rows.items():
        key = "ID_" + name.split("_ID_")[1] if columns == "StudyInstanceUID" else f"{name}.nii.gz"
        who = [f"ID_{name.split('_')[1]}"] if patient else []
        for index, subtypes in enumerate(([0] * 5, flags)):
            lines.append(",".join([key, *who, str(index), str(int(any(subtypes))), *map(str, subtypes)]))
    path.write_text("\n".join(lines) + "\n")


def write_release(src: Path, pool: bool = True) -> Path:
    """The release as unpacked: label_192/{images, ground truths}, dataset.json, unlabel_1980/ and the CSV."""
    for folder in ("images", "ground truths"):
        (src / "label_192" / folder).mkdir(parents=True)
    for seed, name in enumerate(TRAIN + TEST):
        write_volume(src / "label_192" / "images" / f"{name}.nii.gz", ct(seed))
        write_volume(src / "label_192" / "ground truths" / f"{name}.nii.gz", bleed(seed))
    (src / "dataset.json").write_text(json.dumps({
        "description": "bleedbrain", "labels": {"0": "background", "1": "epidural", "2": "intraparenchymal",
                                                "3": "intraventricular", "4": "subarachnoid", "5": "subdural"},
        "modality": {"0": "CT"}, "numTest": len(TEST), "numTraining": len(TRAIN),
        "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in TRAIN],
        "test": [f"./imagesTs/{n}.nii.gz" for n in TEST]}, indent=4))
    if pool:
        (src / "unlabel_1980").mkdir()
        for seed, name in enumerate(POOL, start=50):
            write_volume(src / "unlabel_1980" / f"{name}.nii.gz", ct(seed))
        flags = {**{n: [0] * 5 for n in NEGATIVES + [OF_TEST_PATIENT]},
                 BLEEDING[0]: [0, 1, 0, 0, 1], BLEEDING[1]: [1, 0, 0, 0, 0]}
        write_csv(src / CSV_NAME, flags)
    return src


@pytest.fixture
def release(tmp_path) -> Path:
    return write_release(tmp_path / "BHSD")


# ----------------------------------------------------------------------------------------------------------------------
# the happy path


def test_release_converts_split_negatives_unlabeled_and_groups(release, tmp_path):
    before = tree_hash(release)
    folder = bhsd.convert(release, 430, raw=tmp_path / "raw", negatives=2, unlabeled=2)
    assert tree_hash(release) == before
    assert folder.name == "Dataset430_BHSD" and (folder / MARKER).is_file()
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"} and dataset["file_ending"] == ".nii.gz"
    assert dataset["labels"] == {"background": 0, "EDH": 1, "IPH": 2, "IVH": 3, "SAH": 4, "SDH": 5}
    # no seed: the first N of the sorted candidates; unlabeled ones never repeat a negative
    negatives = sorted(NEGATIVES)[:2]
    unlabeled = sorted(set(POOL) - set(negatives) - {OF_TEST_PATIENT})[:2]
    assert dataset["negative_cases"] == negatives and dataset["unlabeled_cases"] == unlabeled
    assert "placeholder" in dataset["unlabeled_cases_note"]
    training = TRAIN + negatives + unlabeled
    assert dataset["numTraining"] == len(training) == 8
    assert dataset["official_split"]["training"] == TRAIN and dataset["official_split"]["test"] == TEST
    assert dataset["case_groups"] == {n: "ID_" + n.split("_")[1] for n in training}
    assert dataset["case_groups"][TRAIN[0]] == dataset["case_groups"][TRAIN[1]] == "ID_aaaa0001"
    assert dataset["conversion"]["excluded_from_pool"] == {"named_like_a_labelled_scan": 0,
                                                           "patient_in_official_test": 1}
    assert files(folder / "imagesTr") == sorted(f"{n}_0000.nii.gz" for n in training)
    assert files(folder / "labelsTr") == sorted(f"{n}.nii.gz" for n in training)
    assert files(folder / "imagesTs") == sorted(f"{n}_0000.nii.gz" for n in TEST)
    assert files(folder / "labelsTs") == sorted(f"{n}.nii.gz" for n in TEST)
    for seed, name in enumerate(TRAIN + TEST):
        split = "Tr" if name in TRAIN else "Ts"
        image, header = read(folder / f"images{split}" / f"{name}_0000.nii.gz")
        label, label_header = read(folder / f"labels{split}" / f"{name}.nii.gz")
        assert np.array_equal(image, ct(seed)) and np.array_equal(label, bleed(seed)) and label.dtype == np.uint8
        assert np.allclose(header.GetSpacing(), SPACING[::-1]) and np.allclose(header.GetOrigin(), ORIGIN[::-1])
        assert label_header.GetOrigin() == header.GetOrigin() and label_header.GetSpacing() == header.GetSpacing()
    for name in negatives + unlabeled:  # all-zero labels on the scan's own grid
        image, header = read(folder / "imagesTr" / f"{name}_0000.nii.gz")
        label, label_header = read(folder / "labelsTr" / f"{name}.nii.gz")
        assert np.array_equal(image, ct(50 + POOL.index(name)))
        assert label.shape == SHAPE and not label.any() and label_header.GetOrigin() == header.GetOrigin()


def test_merge_classes_writes_one_hemorrhage_label(release, tmp_path):
    folder = bhsd.convert(release, 437, raw=tmp_path / "raw", merge_classes=True)
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "hemorrhage": 1} and dataset["conversion"]["merge_classes"]
    for seed, name in enumerate(TRAIN + TEST):
        split = "Tr" if name in TRAIN else "Ts"
        label, _ = read(folder / f"labels{split}" / f"{name}.nii.gz")
        assert np.array_equal(label, (bleed(seed) > 0).astype(np.uint8)) and label.dtype == np.uint8


def test_output_passes_nnunet_integrity_check_and_overwrite_rule(release, tmp_path, verify_with_nnunet):
    folder = bhsd.convert(release, 436, raw=tmp_path / "raw", negatives=1, unlabeled=1)
    verify_with_nnunet(folder)
    with pytest.raises(UserInputError, match=r"dataset id 436 already exists at .*Dataset436_BHSD \(pass --overwrite"):
        bhsd.convert(release, 436, raw=tmp_path / "raw")
    again = bhsd.convert(release, 436, raw=tmp_path / "raw", name="BHSDsup", overwrite=True)
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["Dataset436_BHSDsup"]
    assert json.loads((again / "dataset.json").read_text())["numTraining"] == len(TRAIN)


@pytest.mark.parametrize("seed", [None, 0, 7])
@pytest.mark.parametrize("negatives, unlabeled", [("all", "all"), (3, 1), (0, "all"), ("all", 0)])
def test_pool_selection_is_deterministic_disjoint_and_never_leaks_a_test_patient(release, seed, negatives, unlabeled):
    first, _ = bhsd.plan_cases(release, negatives=negatives, unlabeled=unlabeled, seed=seed)
    again, _ = bhsd.plan_cases(release, negatives=negatives, unlabeled=unlabeled, seed=seed)
    assert first == again
    chosen = {kind: [c["id"] for c in first if c["kind"] == kind] for kind in ("negative", "unlabeled")}
    assert not set(chosen["negative"]) & set(chosen["unlabeled"])
    assert set(chosen["negative"]) <= set(NEGATIVES) and OF_TEST_PATIENT not in chosen["unlabeled"]
    assert len(chosen["negative"]) == (len(NEGATIVES) if negatives == "all" else negatives)
    rest = len(POOL) - 1 - len(chosen["negative"])
    assert len(chosen["unlabeled"]) == (rest if unlabeled == "all" else unlabeled)
    if seed is None:  # sorted ids, first N
        assert chosen["negative"] == sorted(NEGATIVES)[:len(chosen["negative"])]


def test_seed_changes_the_sample(release):
    samples = {tuple(c["id"] for c in bhsd.plan_cases(release, unlabeled=3, seed=seed)[0] if c["kind"] == "unlabeled")
               for seed in range(6)}
    assert len(samples) > 1


def test_without_pool_options_the_pool_and_csv_are_not_needed(tmp_path):
    src = write_release(tmp_path / "BHSD", pool=False)
    folder = bhsd.convert(src, 431, raw=tmp_path / "raw")
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["numTraining"] == len(TRAIN) and dataset["negative_cases"] == dataset["unlabeled_cases"] == []
    assert dataset["conversion"]["pool"] is None and dataset["conversion"]["csv"] is None


def test_label_192_folder_plain_name_lists_and_suffixless_files(tmp_path):
    """-i label_192 with --split; the split as imagesTr/imagesTs name lists; files without suffix (label_192.zip)."""
    src = write_release(tmp_path / "BHSD", pool=False)
    labelled = src / "label_192"
    for folder in ("images", "ground truths"):
        path = labelled / folder / f"{TRAIN[2]}.nii.gz"
        path.rename(path.with_name(TRAIN[2]))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"imagesTr": TRAIN, "imagesTs": [f"{n}.nii.gz" for n in TEST]}))
    before = tree_hash(src)
    folder = bhsd.convert(labelled, 432, raw=tmp_path / "raw", split=split)
    assert tree_hash(src) == before
    label, _ = read(folder / "labelsTr" / f"{TRAIN[2]}.nii.gz")
    assert np.array_equal(label, bleed(2))
    assert json.loads((folder / "dataset.json").read_text())["official_split"]["training"] == TRAIN


@pytest.mark.parametrize("key", ["scan", "StudyInstanceUID"])
def test_csv_keyed_by_study_with_patient_column(release, key):
    flags = {**{n: [0] * 5 for n in NEGATIVES}, BLEEDING[0]: [0, 0, 1, 0, 0]}
    write_csv(release / CSV_NAME, flags, columns=key, patient=True)
    cases, facts = bhsd.plan_cases(release, negatives="all")
    assert sorted(c["id"] for c in cases if c["kind"] == "negative") == sorted(NEGATIVES)
    assert facts["csv"] == release / CSV_NAME
    assert {c["group"] for c in cases if c["id"] == NEGATIVES[-1]} == {"ID_aaaa0002"}


def test_cli_runs_through_nnunet_ext_convert(release, tmp_path, capsys):
    code = main(["convert", "bhsd", "-i", str(release), "-d", "433", "--raw", str(tmp_path / "raw"),
                 "--negatives", "1", "--unlabeled", "all", "--seed", "3", "--name", "BHSDsemi"])
    assert code == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "(negative, imagesTr)" in out
    dataset = json.loads((tmp_path / "raw" / "Dataset433_BHSDsemi" / "dataset.json").read_text())
    assert len(dataset["negative_cases"]) == 1 and len(dataset["unlabeled_cases"]) == len(POOL) - 2
    assert dataset["conversion"]["seed"] == 3 and dataset["conversion"]["unlabeled"] == "all"


# ----------------------------------------------------------------------------------------------------------------------
# the checks: one-line errors, no output, the source untouched


def _rewrite_split(training=TRAIN, test=TEST):
    def setup(src: Path) -> None:
        (src / "dataset.json").write_text(json.dumps({"training": [{"image": f"./imagesTr/{n}.nii.gz"}
                                                                   for n in training],
                                                      "test": [f"./imagesTs/{n}.nii.gz" for n in test]}))
    return setup


def _volume(relative: str, array: np.ndarray, **geometry):
    return lambda src: write_volume(src / relative, array, **geometry)


def _extra_case(name: str, test: bool):
    def setup(src: Path) -> None:
        write_volume(src / "label_192" / "images" / f"{name}.nii.gz", ct(9))
        write_volume(src / "label_192" / "ground truths" / f"{name}.nii.gz", bleed(9))
        _rewrite_split(TRAIN + ([] if test else [name]), TEST + ([name] if test else []))(src)
    return setup


def _truncated_image(src: Path) -> None:
    """A float image large enough that cutting its gzip stream leaves the NIfTI header readable."""
    write_volume(src / IMAGE, np.random.default_rng(0).normal(size=(4, 64, 64)).astype(np.float32))
    (src / IMAGE).write_bytes((src / IMAGE).read_bytes()[:-300])


def _nan_image(src: Path) -> None:
    image = ct(0).astype(np.float32)
    image[2, 3, 3] = np.nan
    write_volume(src / "label_192" / "images" / f"{TRAIN[0]}.nii.gz", image)


GT = f"label_192/ground truths/{TRAIN[1]}.nii.gz"
IMAGE = f"label_192/images/{TEST[0]}.nii.gz"
CHECKS = [
    ("missing_source", shutil.rmtree, {}, r"source folder .* does not exist"),
    ("no_images_folder", lambda src: (src / "label_192" / "images").rename(src / "label_192" / "scans"), {},
     r"no label_192/images/ folder in "),
    ("no_ground_truths_folder", lambda src: (src / "label_192" / "ground truths").rename(src / "label_192" / "gt"), {},
     r"no 'ground truths/' folder beside "),
    ("no_split_file", lambda src: (src / "dataset.json").unlink(), {}, r"no dataset\.json with the official split"),
    ("unreadable_split", lambda src: (src / "dataset.json").write_text("{training: "), {},
     r"cannot read split file .*dataset\.json"),
    ("split_without_test", lambda src: (src / "dataset.json").write_text('{"training": []}'), {},
     r"has no 'test' \(or 'imagesTs'\) list"),
    ("image_without_ground_truth", lambda src: (src / GT).unlink(), {},
     rf"image without ground truth: .*{TRAIN[1]}\.nii\.gz \(no {TRAIN[1]}\.nii\.gz in .*ground truths\)"),
    ("ground_truth_without_image", lambda src: (src / IMAGE).unlink(), {},
     rf"ground truth without image: .*ground truths/{TEST[0]}\.nii\.gz"),
    ("case_in_both_splits", _rewrite_split(TRAIN, TEST + [TRAIN[3]]), {},
     rf"lists 1 case\(s\) in both training and test: {TRAIN[3]}"),
    ("patient_in_both_splits", _extra_case("ID_aaaa0002_ID_bbbb0000ff", test=True), {},
     r"patient ID_aaaa0002 has scans in both the official training \(ID_aaaa0002_ID_bbbb000003\) and test"),
    ("listed_case_missing", _rewrite_split(TRAIN + ["ID_aaaa0009_ID_bbbb000009"]), {},
     r"lists ID_aaaa0009_ID_bbbb000009 for training but .*images has no"),
    ("image_in_no_list", _rewrite_split(TRAIN[:-1]), {},
     rf"image .*{TRAIN[3]}\.nii\.gz is in neither the training nor the test list"),
    ("shape_mismatch", _volume(GT, np.zeros((5, 8, 8), np.uint8)), {},
     rf"ground truth .*{TRAIN[1]}\.nii\.gz is not on the grid of its image {TRAIN[1]}\.nii\.gz \(size \(8, 8, 5\)"),
    ("spacing_mismatch", _volume(GT, bleed(1), spacing=(2.5, 0.45, 0.45)), {}, r"is not on the grid .*\(spacing"),
    ("origin_mismatch", _volume(GT, bleed(1), origin=(-40.0, -115.0, -100.0)), {}, r"is not on the grid .*\(origin"),
    ("direction_mismatch", _volume(GT, bleed(1), direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1)), {},
     r"is not on the grid .*\(direction"),
    ("label_out_of_range", _volume(GT, np.full(SHAPE, 7, np.uint8)), {},
     rf"ground truth .*{TRAIN[1]}\.nii\.gz has values 7; BHSD labels are 0\.\.5"),
    ("negative_label", _volume(GT, np.full(SHAPE, -1, np.int16)), {}, r"has values -1; BHSD labels are 0\.\.5"),
    ("non_integer_label", _volume(GT, np.full(SHAPE, 0.5, np.float32)), {},
     r"has non-integer values \(0\.5\); labels are the integers 0\.\.5"),
    ("nan_in_image", _nan_image, {}, rf"image .*{TRAIN[0]}\.nii\.gz contains 1 NaN voxel"),
    ("corrupt_nifti", lambda src: (src / IMAGE).write_bytes(b"not a NIfTI file " * 20), {},
     rf"cannot read image .*{TEST[0]}\.nii\.gz: not an image file SimpleITK can read"),
    ("truncated_gzip", _truncated_image, {}, rf"cannot read image .*{TEST[0]}\.nii\.gz: truncated or corrupt gzip"),
    ("too_many_negatives", None, {"negatives": 5},
     r"--negatives 5: only 4 pool scan\(s\) in .*unlabel_1980 have no bleeding on any slice per"),
    ("too_many_unlabeled", None, {"negatives": 2, "unlabeled": 6},
     r"--unlabeled 6: only 5 pool scan\(s\) available in .*\(after 2 negative\(s\) and 1 excluded\)"),
    ("bad_count", None, {"unlabeled": "many"}, r"--unlabeled must be a non-negative integer or 'all', got 'many'"),
    ("no_pool", lambda src: (src / "unlabel_1980").rename(src / "pool"), {"unlabeled": 1},
     r"no unlabel\*/ folder in .* \(pass --pool\)"),
    ("no_csv", lambda src: (src / CSV_NAME).unlink(), {"negatives": 1}, r"--negatives needs the slice-level labels"),
    ("csv_bad_value", lambda src: (src / CSV_NAME).write_text(f"scan,any\n{NEGATIVES[0]},yes\n"), {"negatives": 1},
     r"bhsd_slice_labels\.csv line 2: any must be 0 or 1, got 'yes'"),
    ("csv_without_label_columns", lambda src: (src / CSV_NAME).write_text(f"scan,grade\n{NEGATIVES[0]},1\n"),
     {"negatives": 1}, r"has no slice-label columns \(any, epidural"),
    ("csv_without_scan_column", lambda src: (src / CSV_NAME).write_text("ID,Label\nID_1_any,0\n"), {"negatives": 1},
     r"has no scan column \(one of scan, case, .*; columns found: ID, Label\)"),
]


@pytest.mark.parametrize("setup, options, message", [pytest.param(*row[1:], id=row[0]) for row in CHECKS])
def test_bad_release_is_one_error_naming_the_file_and_writes_nothing(release, tmp_path, setup, options, message):
    if setup is not None:
        setup(release)
    assert_refused(lambda raw: bhsd.convert(release, 434, raw=raw, **options), release, tmp_path / "raw",
                   "Dataset434_BHSD", message)


def test_output_inside_the_source_is_refused(release):
    with pytest.raises(UserInputError, match="lies inside the input"):
        bhsd.convert(release, 435, raw=release / "raw")
    assert not (release / "raw").exists()
