"""Tests of nnunet_ext.datasets_conversion.dce_nifti_folder on tiny NIfTI folders (CASE_pre/postK/seg.nii.gz)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from nnunet_ext.atomic import MARKER  # noqa: E402
from nnunet_ext.errors import UserInputError  # noqa: E402

from nnunet_ext.datasets_conversion import dce_nifti_folder as converter  # noqa: E402
from tests.conftest import shared_data, tree_hash  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHAPE = (4, 8, 8)
SPACING = (0.7, 0.8, 2.0)  # x, y, z (SimpleITK order)
ORIGIN = (10.0, -20.0, 35.5)
DIRECTION = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # a sagittal-like, non-identity orientation
LABELLED = ("case_a", "case_b", "case_c", "case_d")
UNLABELLED = ("case_u",)


def make_image(array: np.ndarray, spacing=SPACING, origin=ORIGIN, direction=DIRECTION):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def write_folder(src: Path, seed: int = 0, n_post: int = 2) -> dict[str, dict[str, np.ndarray]]:
    """Write labelled and unlabelled cases; return the arrays per case and role."""
    rng = np.random.default_rng(seed)
    src.mkdir(parents=True, exist_ok=True)
    (src / "README.txt").write_text("not an image; ignored")
    truth = {}
    for case in LABELLED + UNLABELLED:
        roles = {"pre": rng.normal(100, 20, SHAPE).astype(np.float32)}
        for k in range(1, n_post + 1):
            roles[f"post{k}"] = (roles["pre"] + 50 * k + rng.normal(0, 1, SHAPE)).astype(np.float32)
        if case in LABELLED:
            roles["seg"] = (rng.random(SHAPE) > 0.8).astype(np.uint8)
        for role, array in roles.items():
            sitk.WriteImage(make_image(array), str(src / f"{case}_{role}.nii.gz"))
        truth[case] = roles
    return truth


def convert(src: Path, raw: Path, **options):
    defaults = dict(dataset_id=31, pre_only_id=32, raw=str(raw))
    return converter.convert(src, **{**defaults, **options})


def assert_no_output(raw: Path) -> None:
    assert not raw.exists() or not any(raw.iterdir()), sorted(p.name for p in raw.iterdir())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("nifti")
    src, raw = root / "src", root / "raw"
    truth = write_folder(src)
    before = tree_hash(src)
    folders = convert(src, raw, test_fraction=0.3, seed=0)
    return SimpleNamespace(src=src, raw=raw, truth=truth, folders=folders, hash_before=before)


def test_outputs_pass_nnunet_integrity_check(converted, verify_with_nnunet):
    for folder in converted.folders:
        verify_with_nnunet(folder)


def test_dataset_json_and_split(converted):
    dce_folder, pre_folder = converted.folders
    assert (dce_folder.name, pre_folder.name) == ("Dataset031_DCENifti", "Dataset032_DCENiftiPreOnly")
    dce_json = json.loads((dce_folder / "dataset.json").read_text())
    pre_json = json.loads((pre_folder / "dataset.json").read_text())
    assert dce_json["channel_names"] == {"0": "pre", "1": "post1", "2": "post2"}
    assert pre_json["channel_names"] == {"0": "pre"}
    assert dce_json["labels"] == {"background": 0, "tumor": 1}
    assert dce_json["pre_only_dataset"] == pre_folder.name and pre_json["paired_dce_dataset"] == dce_folder.name
    assert dce_json["unlabeled_cases"] == ["case_u"]
    test_cases = dce_json["test_cases"]
    assert len(test_cases) == 1 and set(test_cases) <= set(LABELLED) and pre_json["test_cases"] == test_cases
    assert dce_json["numTraining"] == 4 and pre_json["numTraining"] == 3
    tr_cases = {p.name[:-len("_0000.nii.gz")] for p in (dce_folder / "imagesTr").glob("*_0000.nii.gz")}
    assert tr_cases == set(LABELLED + UNLABELLED) - set(test_cases)
    pre_cases = {p.name[:-len("_0000.nii.gz")] for p in pre_folder.glob("images*/*_0000.nii.gz")}
    assert pre_cases == set(LABELLED) and not list(pre_folder.glob("images*/*_0001.nii.gz"))


def test_split_is_reproducible_and_seeded(converted, tmp_path):
    again, _ = convert(converted.src, tmp_path / "raw", seed=0)
    first_json = json.loads((converted.folders[0] / "dataset.json").read_text())
    assert json.loads((again / "dataset.json").read_text())["test_cases"] == first_json["test_cases"]
    splits = set()
    for seed in range(6):
        folder, _ = convert(converted.src, tmp_path / f"raw{seed}", seed=seed)
        splits.add(tuple(json.loads((folder / "dataset.json").read_text())["test_cases"]))
    assert len(splits) > 1


@pytest.mark.parametrize("case", LABELLED + UNLABELLED)
def test_pixels_and_geometry_preserved(converted, case):
    dce_folder, pre_folder = converted.folders
    split = "Ts" if (dce_folder / "imagesTs" / f"{case}_0000.nii.gz").exists() else "Tr"
    for channel, role in enumerate(["pre", "post1", "post2"]):
        image = sitk.ReadImage(str(dce_folder / f"images{split}" / f"{case}_{channel:04d}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), converted.truth[case][role])
        np.testing.assert_allclose(image.GetSpacing(), SPACING, atol=1e-6)
        np.testing.assert_allclose(image.GetOrigin(), ORIGIN, atol=1e-5)
        np.testing.assert_allclose(image.GetDirection(), DIRECTION, atol=1e-6)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(dce_folder / f"labels{split}" / f"{case}.nii.gz")))
    np.testing.assert_array_equal(label, converted.truth[case].get("seg", np.zeros(SHAPE, np.uint8)))
    if case in LABELLED:
        pre = sitk.ReadImage(str(pre_folder / f"images{split}" / f"{case}_0000.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(pre), converted.truth[case]["pre"])
        pre_label = sitk.ReadImage(str(pre_folder / f"labels{split}" / f"{case}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(pre_label), converted.truth[case]["seg"])
    else:
        assert split == "Tr" and not list(pre_folder.glob(f"*/{case}*"))


def test_source_tree_unchanged(converted):
    assert tree_hash(converted.src) == converted.hash_before


# --- --subtraction: a SUB channel (post1 - pre), which the methods reading DCE phases must not take for a phase ------
@pytest.fixture(scope="module")
def subtracted(converted, tmp_path_factory):
    """The fixture's source converted again through the command line with ``--subtraction`` (n_post 2)."""
    raw = tmp_path_factory.mktemp("nifti_subtraction") / "raw"
    argv = ["-i", str(converted.src), "-d", "31", "--pre_only_id", "32", "--raw", str(raw), "--subtraction"]
    assert converter.main(argv) == 0
    return raw / "Dataset031_DCENifti", raw / "Dataset032_DCENiftiPreOnly"


def test_subtraction_adds_sub_to_the_dce_dataset_only(converted, subtracted, verify_with_nnunet):
    from tests.datasets_conversion.helpers import assert_subtraction_channel

    assert_subtraction_channel(*subtracted, plain_pre_only=converted.folders[1], n_post=2)
    verify_with_nnunet(subtracted[0])


@pytest.mark.parametrize("n_post", [1, 2])
def test_sub_is_no_time_point_for_the_methods_reading_phases(subtracted, tmp_path, n_post):
    """HCNet's TIC reader, DKM's target phase x_k and the folder readers of DKM's analysis skip the SUB channel."""
    from nnunet_ext.datasets_conversion._dce_common import phase_channels, phase_files
    from nnunet_ext.methods.dkm.trainers import DKMDiffusionTrainer
    from nnunet_ext.methods.hcnet.cluster import find_cases, read_dataset_json

    dce = subtracted[0]
    if n_post == 1:
        write_folder(tmp_path / "src", n_post=1)
        dce, _ = convert(tmp_path / "src", tmp_path / "raw", subtraction=True)
    meta = read_dataset_json(dce)
    times = [f"{c:04d}" for c in range(n_post + 1)]
    assert meta["channel_names"][str(n_post + 1)] == "SUB" and phase_channels(meta["channel_names"]) == list(
        range(n_post + 1))
    for case in find_cases(dce, meta):
        assert [p.name for p in case.images] == [f"{case.identifier}_{t}.nii.gz" for t in times]
        assert phase_files(dce / f"images{case.split}", case.identifier) == case.images
    assert DKMDiffusionTrainer.post_channel_of(meta["channel_names"]) == n_post
    with pytest.raises(RuntimeError, match="has 1 time point channel"):
        DKMDiffusionTrainer.post_channel_of({"0": "pre", "1": "SUB"})
    loose = tmp_path / "loose"  # no dataset.json beside the folder: every channel file is a time point
    loose.mkdir()
    for t in times + [f"{n_post + 1:04d}"]:
        (loose / f"a_{t}.nii.gz").touch()
    assert len(phase_files(loose, "a")) == n_post + 2


def _missing_post2(src: Path) -> tuple[str, str]:
    (src / "case_b_post2.nii.gz").unlink()
    return "case_b", "case_b_post2.nii.gz"


def _shifted_post1(src: Path) -> tuple[str, str]:
    image = sitk.ReadImage(str(src / "case_c_post1.nii.gz"))
    image.SetOrigin((ORIGIN[0] + 1.0, ORIGIN[1], ORIGIN[2]))
    sitk.WriteImage(image, str(src / "case_c_post1.nii.gz"))
    return "case_c", "case_c_post1.nii.gz"


def _other_size_seg(src: Path) -> tuple[str, str]:
    sitk.WriteImage(make_image(np.zeros((4, 8, 9), np.uint8)), str(src / "case_a_seg.nii.gz"))
    return "case_a", "case_a_seg.nii.gz"


def _unreadable(src: Path) -> tuple[str, str]:
    (src / "case_d_post1.nii.gz").write_bytes(b"garbage, not gzip")
    return "case_d", "case_d_post1.nii.gz"


def _nan_voxel(src: Path) -> tuple[str, str]:
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "case_u_pre.nii.gz")))
    array[1, 2, 3] = np.nan
    sitk.WriteImage(make_image(array), str(src / "case_u_pre.nii.gz"))
    return "case_u", "NaN"


def _bad_label_values(src: Path) -> tuple[str, str]:
    seg = np.zeros(SHAPE, np.uint8)
    seg[0, 0, :3] = (1, 2, 7)
    sitk.WriteImage(make_image(seg), str(src / "case_b_seg.nii.gz"))
    return "case_b", "2, 7"


def _unrecognised_name(src: Path) -> tuple[str, str]:
    (src / "case_a_post1.nii.gz").rename(src / "case_a_postcontrast.nii.gz")
    return "case_a", "case_a_postcontrast.nii.gz"


@pytest.mark.parametrize("mutate, message", [
    (_missing_post2, "missing phase post2"),
    (_shifted_post1, "not on the pre-contrast grid"),
    (_other_size_seg, "not on the pre-contrast grid"),
    (_unreadable, "cannot read"),
    (_nan_voxel, "NaN"),
    (_bad_label_values, "label values"),
    (_unrecognised_name, "unrecognised NIfTI file"),
])
def test_bad_input_raises_and_writes_nothing(tmp_path, mutate, message):
    src, raw = tmp_path / "src", tmp_path / "raw"
    write_folder(src)
    case, hint = mutate(src)
    before = tree_hash(src)
    with pytest.raises(UserInputError) as info:
        convert(src, raw)
    text = str(info.value)
    assert message in text and case in text and hint in text and "\n" not in text, text
    assert_no_output(raw)
    assert tree_hash(src) == before


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("no images here")
    with pytest.raises(UserInputError, match="no CASE_pre"):
        convert(tmp_path / "src", tmp_path / "raw")
    assert_no_output(tmp_path / "raw")


def test_resample_to_pre_fixes_grids(tmp_path):
    src = tmp_path / "src"
    truth = write_folder(src)
    _shifted_post1(src)
    moved = sitk.ReadImage(str(src / "case_a_seg.nii.gz"))
    moved.SetOrigin((ORIGIN[0] + 0.25 * SPACING[2], ORIGIN[1], ORIGIN[2]))  # a quarter slice along -x (third axis)
    sitk.WriteImage(moved, str(src / "case_a_seg.nii.gz"))
    dce_folder, _ = convert(src, tmp_path / "raw", test_fraction=0.0, resample_to_pre=True)
    post1 = sitk.ReadImage(str(dce_folder / "imagesTr" / "case_c_0001.nii.gz"))
    assert post1.GetOrigin() == sitk.ReadImage(str(dce_folder / "imagesTr" / "case_c_0000.nii.gz")).GetOrigin()
    assert post1.GetPixelID() == sitk.sitkFloat32
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(dce_folder / "labelsTr" / "case_a.nii.gz")))
    np.testing.assert_array_equal(label, truth["case_a"]["seg"])  # a quarter slice: nearest neighbour is exact
    resampled = json.loads((dce_folder / "dataset.json").read_text())["conversion"]["resampled_to_pre"]
    assert resampled == {"case_a": ["seg"], "case_c": ["post1"]}


def test_existing_dataset_id_is_refused_unless_overwrite(tmp_path):
    src, raw = tmp_path / "src", tmp_path / "raw"
    write_folder(src)
    (raw / "Dataset031_Old").mkdir(parents=True)
    (raw / "Dataset031_Old" / "keep.txt").write_text("old")
    with pytest.raises(UserInputError, match="dataset id 31 already exists"):
        convert(src, raw)
    # not written by nnunet-ext: never replaced, even with --overwrite
    with pytest.raises(UserInputError, match="refusing to replace .*Dataset031_Old"):
        convert(src, raw, overwrite=True)
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset031_Old"]
    (raw / "Dataset031_Old" / MARKER).write_text("{}")  # an earlier nnunet-ext output may be replaced
    convert(src, raw, overwrite=True)
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset031_DCENifti", "Dataset032_DCENiftiPreOnly"]


def test_output_inside_source_is_refused(tmp_path):
    src = tmp_path / "src"
    write_folder(src)
    before = tree_hash(src)
    with pytest.raises(UserInputError, match="inside the source folder"):
        convert(src, src / "raw")
    assert tree_hash(src) == before


def test_cli_module_runs(tmp_path):
    src = tmp_path / "src"
    write_folder(src, n_post=1)
    command = [sys.executable, "-m", "nnunet_ext.datasets_conversion.dce_nifti_folder", "-i", str(src), "-d", "41",
               "--pre_only_id", "42", "--raw", str(tmp_path / "raw"), "--name", "Tiny", "--test_fraction", "0"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "raw" / "Dataset041_Tiny" / "imagesTr" / "case_a_0001.nii.gz").is_file()
    assert (tmp_path / "raw" / "Dataset042_TinyPreOnly" / "labelsTr" / "case_a.nii.gz").is_file()
    assert converter.main(command[3:]) == 2  # ids now taken: one line on stderr, exit code 2


def test_real_breast_mri_header_and_label_survive(tmp_path):
    """Real breast MRI (pyradiomics breast1, int16 image + int16 0/1 label): values, grid and label kept exactly."""
    data = shared_data("pyradiomics")
    src = tmp_path / "src"
    src.mkdir()
    image = sitk.ReadImage(str(data / "breast1_image.nrrd"))
    label = sitk.ReadImage(str(data / "breast1_label.nrrd"))
    sitk.WriteImage(image, str(src / "breast1_pre.nii.gz"))
    sitk.WriteImage(image, str(src / "breast1_post1.nii.gz"))  # a stand-in phase: only the converter is tested
    sitk.WriteImage(label, str(src / "breast1_seg.nii.gz"))
    dce_folder, pre_folder = convert(src, tmp_path / "raw", test_fraction=0.0)
    for folder in (dce_folder, pre_folder):
        pre = sitk.ReadImage(str(folder / "imagesTr" / "breast1_0000.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(pre), sitk.GetArrayFromImage(image))
        np.testing.assert_allclose(pre.GetSpacing(), image.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(pre.GetOrigin(), image.GetOrigin(), atol=1e-4)
        seg = sitk.ReadImage(str(folder / "labelsTr" / "breast1.nii.gz"))
        assert seg.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(sitk.GetArrayFromImage(seg), sitk.GetArrayFromImage(label))
