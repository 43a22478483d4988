"""Tests of nnunet_ext.datasets_conversion.mama_mia on a small fake MAMA-MIA release.

The fake release mimics the documented layout: ``images/<PID>/<pid>_000k.nii.gz`` (k = 0 pre-contrast, then the
post-contrast phases, a different number per case; upper-case folders with lower- or upper-case files),
``segmentations/expert/<pid>.nii.gz`` and the optional clinical files the converter must not need. Images are tiny
4x6x6 volumes with a non-identity orientation.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from nnunet_ext.atomic import MARKER  # noqa: E402
from nnunet_ext.errors import UserInputError  # noqa: E402

from nnunet_ext.datasets_conversion import mama_mia as converter  # noqa: E402
from tests.conftest import tree_hash  # noqa: E402

SHAPE = (4, 6, 6)  # z, y, x
SPACING = (0.8, 0.7, 1.5)  # x, y, z (SimpleITK order)
ORIGIN = (-30.0, 12.0, 5.5)
DIRECTION = (-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)
# folder name -> (pid as the files spell it, post-contrast phases, segmentation file name or None)
CASES = {
    "ISPY1_1001": ("ispy1_1001", 2, "ispy1_1001.nii.gz"),
    "ISPY1_1002": ("ISPY1_1002", 3, "ISPY1_1002.nii.gz"),
    "DUKE_001": ("duke_001", 2, "duke_001.nii.gz"),
    "DUKE_002": ("duke_002", 1, "duke_002.nii.gz"),  # one post-contrast phase: skipped with --phases 2
    "DUKE_003": ("duke_003", 4, None),  # no expert segmentation: unlabelled
    "ISPY2_100001": ("ispy2_100001", 2, "ispy2_100001.nii.gz"),
    "NACT_01": ("nact_01", 2, "nact_01.nii.gz"),  # broken (no pre-contrast file): only an error if NACT is chosen
}
BREAST_MASKS = {"duke_001": "DUKE_001.nii.gz", "ispy1_1001": "ispy1_1001.nii.gz", "duke_003": "duke_003.nii.gz"}


def make_image(array: np.ndarray, origin=ORIGIN):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(origin)
    image.SetDirection(DIRECTION)
    return image


def write_release(root: Path, seed: int = 0) -> dict:
    """Write the fake release (and a breast-mask folder beside it); return the arrays per case id."""
    rng = np.random.default_rng(seed)
    truth = {}
    for folder, (spelled, n_post, seg_name) in CASES.items():
        case_dir = root / "images" / folder
        case_dir.mkdir(parents=True)
        pre = rng.normal(100, 20, SHAPE).astype(np.float32)
        phases = [pre] + [(pre + 40 * k + rng.normal(0, 1, SHAPE)).astype(np.float32) for k in range(1, n_post + 1)]
        for k, array in enumerate(phases):
            if folder == "NACT_01" and k == 0:
                continue
            sitk.WriteImage(make_image(array), str(case_dir / f"{spelled}_{k:04d}.nii.gz"))
        (case_dir / "notes.txt").write_text("not a phase; ignored")
        seg = None
        if seg_name is not None:
            seg = np.zeros(SHAPE, np.uint8)
            seg[1, 1, 2] = seg[2, 3, 4] = seg[2, 4, 3] = 1  # three voxels: their bounding box is 2 x 4 x 3
            seg = np.roll(seg, int(rng.integers(0, 2)), axis=2)
            (root / "segmentations" / "expert").mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(make_image(seg), str(root / "segmentations" / "expert" / seg_name))
        truth[spelled.lower()] = SimpleNamespace(phases=phases, seg=seg)
    (root / "segmentations" / "automatic").mkdir()
    (root / "patient_info_files").mkdir()
    (root / "patient_info_files" / "duke_001.json").write_text("{}")
    (root / "clinical_and_imaging_info.xlsx").write_bytes(b"not read")
    masks = root.parent / "breast_masks_src"
    masks.mkdir()
    for case, file_name in BREAST_MASKS.items():
        mask = np.zeros(SHAPE, np.uint8)
        mask[:, 1:5, :3] = 1
        truth[case].breast = mask
        sitk.WriteImage(make_image(mask), str(masks / file_name))
    return truth


def convert(src: Path, raw: Path, **options):
    defaults = dict(dataset_id=51, pre_only_id=52, raw=str(raw))
    return converter.convert(src, **{**defaults, **options})


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def dataset_json(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def case_ids(folder: Path, channel: int = 0) -> set[str]:
    suffix = f"_{channel:04d}.nii.gz"
    return {p.name[:-len(suffix)] for p in folder.glob(f"images*/*{suffix}")}


def split_of(folder: Path, case: str) -> str:
    return "Ts" if (folder / "imagesTs" / f"{case}_0000.nii.gz").exists() else "Tr"


def assert_nothing_written(raw: Path) -> None:
    assert not raw.exists() or not any(raw.iterdir()), sorted(p.name for p in raw.iterdir())


@pytest.fixture
def release(tmp_path):
    src = tmp_path / "MAMA-MIA"
    return SimpleNamespace(src=src, truth=write_release(src), masks=tmp_path / "breast_masks_src")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("mama_mia")
    src, raw = root / "MAMA-MIA", root / "raw"
    truth = write_release(src)
    before = tree_hash(src)
    lines: list[str] = []
    folders = convert(src, raw, progress=lines.append)
    return SimpleNamespace(src=src, raw=raw, truth=truth, folders=folders, lines=lines, hash_before=before)


# ----------------------------------------------------------------------------------------------------------------------
# the default conversion


def test_outputs_pass_nnunet_integrity_check(converted, verify_with_nnunet):
    for folder in converted.folders:
        verify_with_nnunet(folder)


def test_default_cohorts_channels_and_case_ids(converted):
    dce, pre = converted.folders
    assert (dce.name, pre.name) == ("Dataset051_MAMAMIA", "Dataset052_MAMAMIAPreOnly")
    dce_json, pre_json = dataset_json(dce), dataset_json(pre)
    assert dce_json["channel_names"] == {"0": "pre", "1": "post1", "2": "post2"}
    assert pre_json["channel_names"] == {"0": "pre"} and dce_json["labels"] == {"background": 0, "tumor": 1}
    assert case_ids(dce) == {"ispy1_1001", "ispy1_1002", "duke_001", "duke_003"}  # no ISPY2, NACT or duke_002
    assert case_ids(dce, 2) == case_ids(dce) and not case_ids(dce, 3)  # ISPY1_1002's third post phase is dropped
    assert case_ids(pre) == {"ispy1_1001", "ispy1_1002", "duke_001"} and not case_ids(pre, 1)
    assert dce_json["skipped_cases"] == {"duke_002": "1 post-contrast phase(s), fewer than --phases 2"}
    assert dce_json["unlabeled_cases"] == ["duke_003"]
    assert dce_json["mama_mia"]["cases_per_cohort"] == {"ISPY1": 2, "DUKE": 2}
    assert "box_labels" not in dce_json and "breast_masks" not in dce_json
    assert not (dce / "breast_masks").exists()
    assert dce_json["conversion"]["cases"]["ispy1_1002"]["phases"] == [f"ISPY1_1002_000{k}.nii.gz" for k in range(3)]
    assert "converted DUKE: 2, ISPY1: 2" in converted.lines
    assert "skipped duke_002: 1 post-contrast phase(s), fewer than --phases 2" in converted.lines
    assert tree_hash(converted.src) == converted.hash_before


@pytest.mark.parametrize("case", ["ispy1_1001", "ispy1_1002", "duke_001", "duke_003"])
def test_pixels_geometry_and_labels(converted, case):
    dce, pre = converted.folders
    truth = converted.truth[case]
    split = split_of(dce, case)
    for channel in range(3):
        image = sitk.ReadImage(str(dce / f"images{split}" / f"{case}_{channel:04d}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), truth.phases[channel])
        np.testing.assert_allclose(image.GetSpacing(), SPACING, atol=1e-6)
        np.testing.assert_allclose(image.GetOrigin(), ORIGIN, atol=1e-5)
        np.testing.assert_allclose(image.GetDirection(), DIRECTION, atol=1e-6)
    label = read(dce / f"labels{split}" / f"{case}.nii.gz")
    np.testing.assert_array_equal(label, truth.seg if truth.seg is not None else np.zeros(SHAPE, np.uint8))
    if truth.seg is not None:
        np.testing.assert_array_equal(read(pre / f"images{split}" / f"{case}_0000.nii.gz"), truth.phases[0])
        np.testing.assert_array_equal(read(pre / f"labels{split}" / f"{case}.nii.gz"), truth.seg)
    else:
        assert split == "Tr" and not list(pre.glob(f"*/{case}*"))


def test_subtraction_adds_sub_to_the_dce_dataset_only(converted, tmp_path, verify_with_nnunet):
    from tests.datasets_conversion.helpers import assert_subtraction_channel

    raw = tmp_path / "raw"
    assert converter.main(["-i", str(converted.src), "-d", "51", "--pre_only_id", "52", "--raw", str(raw),
                           "--subtraction"]) == 0
    dce, pre_only = raw / "Dataset051_MAMAMIA", raw / "Dataset052_MAMAMIAPreOnly"
    assert_subtraction_channel(dce, pre_only, plain_pre_only=converted.folders[1], n_post=2)
    assert dataset_json(dce)["mama_mia"] == dataset_json(converted.folders[0])["mama_mia"]
    verify_with_nnunet(dce)


def test_split_is_grouped_by_patient_and_shared(converted):
    dce, pre = converted.folders
    dce_json, pre_json = dataset_json(dce), dataset_json(pre)
    assert dce_json["test_cases"] == pre_json["test_cases"]
    assert len(dce_json["test_cases"]) == 1 and set(dce_json["test_cases"]) <= {"ispy1_1001", "ispy1_1002", "duke_001"}
    assert {p.name[:-len("_0000.nii.gz")] for p in (dce / "imagesTs").glob("*_0000.nii.gz")} == set(
        dce_json["test_cases"])
    cases, _ = converter.scan_source(converted.src, ["ISPY1", "DUKE"], 2)
    plans = converter.plan_cases(cases, 2)
    assert [(p.case_id, p.group) for p in plans] == [(c.pid, c.pid) for c in cases]


# ----------------------------------------------------------------------------------------------------------------------
# options


def test_cohorts_are_case_insensitive_and_filter(release, tmp_path):
    dce, pre = convert(release.src, tmp_path / "raw", cohorts=["ispy2", "Duke"], test_fraction=0.0)
    assert case_ids(dce) == {"duke_001", "duke_003", "ispy2_100001"}
    assert case_ids(pre) == {"duke_001", "ispy2_100001"}
    assert dataset_json(dce)["mama_mia"]["cohorts"] == ["ISPY2", "DUKE"]
    np.testing.assert_array_equal(read(dce / "imagesTr" / "ispy2_100001_0002.nii.gz"),
                                  release.truth["ispy2_100001"].phases[2])


def test_phases_keeps_n_post_and_skips_shorter_cases(release, tmp_path):
    dce, pre = convert(release.src, tmp_path / "raw", n_post=3, test_fraction=0.0)
    dce_json = dataset_json(dce)
    assert dce_json["channel_names"] == {"0": "pre", "1": "post1", "2": "post2", "3": "post3"}
    assert case_ids(dce) == {"ispy1_1002", "duke_003"} and case_ids(pre) == {"ispy1_1002"}
    assert sorted(dce_json["skipped_cases"]) == ["duke_001", "duke_002", "ispy1_1001"]
    assert dce_json["skipped_cases"]["ispy1_1001"] == "2 post-contrast phase(s), fewer than --phases 3"
    np.testing.assert_array_equal(read(dce / "imagesTr" / "ispy1_1002_0003.nii.gz"),
                                  release.truth["ispy1_1002"].phases[3])
    assert not case_ids(dce, 4)  # duke_003 has four post phases; only three kept


def test_box_labels_turn_duke_labels_into_their_bounding_box(release, tmp_path):
    lines: list[str] = []
    dce, pre = convert(release.src, tmp_path / "raw", box_labels=True, test_fraction=0.0, progress=lines.append)
    seg = release.truth["duke_001"].seg
    z, y, x = np.nonzero(seg)
    box = np.zeros(SHAPE, np.uint8)
    box[z.min():z.max() + 1, y.min():y.max() + 1, x.min():x.max() + 1] = 1
    assert box.sum() == 2 * 4 * 3 > seg.sum()
    for folder in (dce, pre):
        np.testing.assert_array_equal(read(folder / "labelsTr" / "duke_001.nii.gz"), box)
        np.testing.assert_array_equal(read(folder / "labelsTr" / "ispy1_1001.nii.gz"),
                                      release.truth["ispy1_1001"].seg)  # other cohorts keep their masks
        note = dataset_json(folder)["box_labels"]
        assert note["cases"] == ["duke_001"] and "never train or evaluate segmentation" in note["note"]
    assert "bounding box" in dataset_json(dce)["description"]
    assert any(line.startswith("bounding-box labels") and "duke_001" in line for line in lines)


def test_box_labels_without_duke_is_refused(release, tmp_path):
    with pytest.raises(UserInputError, match="--box_labels only changes DUKE cases"):
        convert(release.src, tmp_path / "raw", box_labels=True, cohorts=["ISPY1"])
    assert_nothing_written(tmp_path / "raw")


def test_breast_masks_are_copied_into_both_datasets(release, tmp_path, verify_with_nnunet):
    lines: list[str] = []
    raw = tmp_path / "raw"
    before = tree_hash(release.masks)
    dce, pre = convert(release.src, raw, breast_masks=release.masks, progress=lines.append)
    assert sorted(p.name for p in (dce / "breast_masks").iterdir()) == [
        "duke_001.nii.gz", "duke_003.nii.gz", "ispy1_1001.nii.gz"]
    assert sorted(p.name for p in (pre / "breast_masks").iterdir()) == ["duke_001.nii.gz", "ispy1_1001.nii.gz"]
    for case in ("duke_001", "ispy1_1001"):
        mask = sitk.ReadImage(str(pre / "breast_masks" / f"{case}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), release.truth[case].breast)
        np.testing.assert_allclose(mask.GetOrigin(), ORIGIN, atol=1e-5)
        np.testing.assert_allclose(mask.GetDirection(), DIRECTION, atol=1e-6)
    note = dataset_json(dce)["breast_masks"]
    assert note["cases_without_mask"] == ["ispy1_1002"] and note["folder"] == "breast_masks"
    assert "no breast mask: ispy1_1002" in lines
    # the staged write leaves exactly the two datasets, each marked and complete, and the mask folder untouched
    assert sorted(p.name for p in raw.iterdir()) == [dce.name, pre.name]
    assert (dce / MARKER).is_file() and (pre / MARKER).is_file() and not (dce / ".staging").exists()
    assert case_ids(dce) == {"ispy1_1001", "ispy1_1002", "duke_001", "duke_003"}
    assert dataset_json(pre)["paired_dce_dataset"] == dce.name
    assert tree_hash(release.masks) == before
    for folder in (dce, pre):  # the extra folder does not disturb nnU-Net
        verify_with_nnunet(folder)


def test_breast_masks_obey_the_overwrite_rule(release, tmp_path):
    raw = tmp_path / "raw"
    (raw / "Dataset051_Old").mkdir(parents=True)
    with pytest.raises(UserInputError, match="dataset id 51 already exists"):
        convert(release.src, raw, breast_masks=release.masks)
    with pytest.raises(UserInputError, match="refusing to replace .*Dataset051_Old"):
        convert(release.src, raw, breast_masks=release.masks, overwrite=True)
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset051_Old"]
    (raw / "Dataset051_Old" / MARKER).write_text("{}")  # an earlier nnunet-ext output may be replaced
    convert(release.src, raw, breast_masks=release.masks, overwrite=True)
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset051_MAMAMIA", "Dataset052_MAMAMIAPreOnly"]


def test_resample_to_pre_also_aligns_breast_masks(release, tmp_path):
    images = release.src / "images" / "DUKE_001"
    shifted = sitk.ReadImage(str(images / "duke_001_0002.nii.gz"))
    shifted.SetOrigin((ORIGIN[0] + 0.5, ORIGIN[1], ORIGIN[2]))
    sitk.WriteImage(shifted, str(images / "duke_001_0002.nii.gz"))
    mask = sitk.ReadImage(str(release.masks / "DUKE_001.nii.gz"))
    mask.SetOrigin((ORIGIN[0], ORIGIN[1], ORIGIN[2] + 0.2))
    sitk.WriteImage(mask, str(release.masks / "DUKE_001.nii.gz"))
    dce, _ = convert(release.src, tmp_path / "raw", breast_masks=release.masks, resample_to_pre=True,
                     test_fraction=0.0)
    assert dataset_json(dce)["conversion"]["resampled_to_pre"] == {"duke_001": ["breast_masks", "post2"]}
    resampled = sitk.ReadImage(str(dce / "breast_masks" / "duke_001.nii.gz"))
    np.testing.assert_allclose(resampled.GetOrigin(), ORIGIN, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# refusals: one line naming case and file, nothing written, the source untouched


def _missing_pre(release) -> tuple[str, str]:
    (release.src / "images" / "DUKE_001" / "duke_001_0000.nii.gz").unlink()
    return "duke_001", "duke_001_0000.nii.gz"


def _gap_in_kept_phases(release) -> tuple[str, str]:
    (release.src / "images" / "ISPY1_1002" / "ISPY1_1002_0001.nii.gz").unlink()
    return "ispy1_1002", "ISPY1_1002_0001.nii.gz"


def _post_off_grid(release) -> tuple[str, str]:
    path = release.src / "images" / "DUKE_001" / "duke_001_0002.nii.gz"
    image = sitk.ReadImage(str(path))
    image.SetOrigin((ORIGIN[0] + 1.0, ORIGIN[1], ORIGIN[2]))
    sitk.WriteImage(image, str(path))
    return "duke_001", "duke_001_0002.nii.gz"


def _label_off_grid(release) -> tuple[str, str]:
    sitk.WriteImage(make_image(np.zeros((4, 6, 7), np.uint8)),
                    str(release.src / "segmentations" / "expert" / "ispy1_1001.nii.gz"))
    return "ispy1_1001", "ispy1_1001.nii.gz"


def _label_values(release) -> tuple[str, str]:
    seg = np.zeros(SHAPE, np.uint8)
    seg[0, 0, :3] = (1, 2, 7)
    sitk.WriteImage(make_image(seg), str(release.src / "segmentations" / "expert" / "duke_001.nii.gz"))
    return "duke_001", "duke_001.nii.gz"


def _nan_voxel(release) -> tuple[str, str]:
    path = release.src / "images" / "ISPY1_1001" / "ispy1_1001_0001.nii.gz"
    array = read(path)
    array[1, 2, 3] = np.nan
    sitk.WriteImage(make_image(array), str(path))
    return "ispy1_1001", "ispy1_1001_0001.nii.gz"


def _breast_mask_off_grid(release) -> tuple[str, str]:
    sitk.WriteImage(make_image(np.ones(SHAPE, np.uint8), origin=(0.0, 0.0, 0.0)),
                    str(release.masks / "ispy1_1001.nii.gz"))
    return "ispy1_1001", "ispy1_1001.nii.gz"


def _breast_mask_values(release) -> tuple[str, str]:
    sitk.WriteImage(make_image(np.full(SHAPE, 2, np.uint8)), str(release.masks / "DUKE_001.nii.gz"))
    return "duke_001", "DUKE_001.nii.gz"


def _two_segmentations(release) -> tuple[str, str]:
    expert = release.src / "segmentations" / "expert"
    (expert / "DUKE_001.nii.gz").write_bytes((expert / "duke_001.nii.gz").read_bytes())
    return "duke_001", "DUKE_001.nii.gz"


def _nact_chosen(release) -> tuple[str, str]:
    return "nact_01", "nact_01_0000.nii.gz"


def _no_case_of_cohort(release) -> tuple[str, str]:
    for path in (release.src / "images" / "NACT_01").iterdir():
        path.unlink()
    (release.src / "images" / "NACT_01").rmdir()
    return "NACT", "images"


@pytest.mark.parametrize("mutate, options, message", [
    (_missing_pre, {}, "pre-contrast phase missing"),
    (_gap_in_kept_phases, {}, "phase 1 missing"),
    (_post_off_grid, {}, "post2 image"),
    (_label_off_grid, {}, "not on the pre-contrast grid"),
    (_label_values, {}, "label values 2, 7"),
    (_nan_voxel, {}, "NaN"),
    (_breast_mask_off_grid, {"breast_masks": True}, "breast mask"),
    (_breast_mask_values, {"breast_masks": True}, "expected a binary mask"),
    (_two_segmentations, {}, "two expert segmentation files"),
    (_nact_chosen, {"cohorts": ["nact"]}, "pre-contrast phase missing"),
    (_no_case_of_cohort, {"cohorts": ["NACT"]}, "no case of cohort(s) NACT"),
])
def test_bad_input_raises_and_writes_nothing(release, tmp_path, mutate, options, message):
    case, hint = mutate(release)
    if options.pop("breast_masks", False):
        options["breast_masks"] = release.masks
    before, masks_before = tree_hash(release.src), tree_hash(release.masks)
    raw = tmp_path / "raw"
    with pytest.raises(UserInputError) as info:
        convert(release.src, raw, **options)
    text = str(info.value)
    assert message in text and case in text and hint in text and "\n" not in text, text
    assert_nothing_written(raw)
    assert tree_hash(release.src) == before and tree_hash(release.masks) == masks_before


def test_bad_options_are_refused(release, tmp_path):
    with pytest.raises(UserInputError, match="unknown cohort.*ISPY3"):
        convert(release.src, tmp_path / "raw", cohorts=["ISPY1", "ispy3"])
    with pytest.raises(UserInputError, match="--phases must be >= 1"):
        convert(release.src, tmp_path / "raw", n_post=0)
    with pytest.raises(UserInputError, match="unknown cohort"):
        convert(release.src, tmp_path / "raw", cohorts=[])
    shutil.rmtree(release.src / "segmentations")
    with pytest.raises(UserInputError, match="segmentations.expert not found.*does not look like the MAMA-MIA"):
        convert(release.src, tmp_path / "raw")
    assert_nothing_written(tmp_path / "raw")


def test_cli_through_nnunet_ext_convert(release, tmp_path, capsys):
    from nnunet_ext.cli import main

    raw = tmp_path / "raw"
    argv = ["convert", "mama_mia", "-i", str(release.src), "-d", "61", "--pre_only_id", "62", "--raw", str(raw),
            "--cohorts", "duke", "--phases", "1", "--box_labels", "--breast_masks", str(release.masks),
            "--test_fraction", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "converted DUKE: 3" in out and "wrote" in out
    dce = raw / "Dataset061_MAMAMIA"
    assert case_ids(dce) == {"duke_001", "duke_002", "duke_003"} and not case_ids(dce, 2)
    assert (dce / "breast_masks" / "duke_003.nii.gz").is_file()
    assert dataset_json(dce)["box_labels"]["cases"] == ["duke_001", "duke_002"]
    assert main(argv) == 2  # ids now taken: one line on stderr, exit code 2
    err = capsys.readouterr().err.strip()
    assert "dataset id 61 already exists" in err and "\n" not in err
