"""Tests of nnunet_ext.datasets_conversion.registration_pairs on small fake pair/atlas folders (8 x 10 x 12 volumes in
NIfTI, MHA and NRRD, labels for three of four images, a pairs.csv)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunet_ext.atomic import MARKER
from nnunet_ext.cli import main
from nnunet_ext.datasets_conversion import registration_pairs as rp
from nnunet_ext.errors import UserInputError
from tests.conftest import tree_hash
from tests.datasets_conversion.helpers import assert_refused, read, files, dataset_json

SHAPE = (8, 10, 12)  # z, y, x
SPACING = (2.0, 1.0, 1.0)  # z, y, x in mm
ORIGIN = (-8.0, -5.0, -6.0)
# NAME -> image file; three formats SimpleITK reads
IMAGE_FILES = {"a": "a.nii.gz", "b": "b.mha", "c": "c.nrrd", "atlas": "atlas.nii.gz"}
LABEL_FILES = {"a": "a.nii.gz", "b": "b.nii.gz", "atlas": "atlas.mha"}  # c has no label
PAIRS = [("a", "b"), ("c", "atlas"), ("b", "a")]


def write_volume(path: Path, array: np.ndarray, spacing=SPACING, origin=ORIGIN, direction=None) -> None:
    """A volume from a (z, y, x) array with (z, y, x) spacing and origin, in the format of ``path``'s suffix."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(spacing)])
    image.SetOrigin([float(o) for o in reversed(origin)])
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path), path.name.endswith(".gz"))


def mri(seed: int, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, shape).astype(np.float32)


def seg(seed: int, shape=SHAPE, values=(1, 2)) -> np.ndarray:
    label = np.zeros(shape, np.uint8 if max(values) <= 255 else np.uint16)
    label[1:4, 2:6, 2 + seed % 3:7] = values[0]
    label[5:7, 5:9, 1:4] = values[-1]
    return label


def write_pairs_csv(src: Path, rows, header: str = "fixed,moving") -> None:
    (src / "pairs.csv").write_text("\n".join([header] + [",".join(row) for row in rows]) + "\n")


def write_pairs_folder(src: Path, pairs: bool = True) -> Path:
    """images/ (4 images), labels/ (3 labels), pairs.csv."""
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    for seed, (name, file) in enumerate(IMAGE_FILES.items()):
        write_volume(src / "images" / file, mri(seed))
        if name in LABEL_FILES:
            write_volume(src / "labels" / LABEL_FILES[name], seg(seed))
    (src / "images" / "README.txt").write_text("not an image: skipped\n")
    if pairs:
        write_pairs_csv(src, PAIRS)
    return src


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_pairs_folder(tmp_path / "REG")


# ----------------------------------------------------------------------------------------------------------------------
# the happy paths


def test_pairs_csv_folder_converts_cases_labels_and_pairs(folder, tmp_path):
    before = tree_hash(folder)
    out = rp.convert(folder, 441, raw=tmp_path / "raw")
    assert tree_hash(folder) == before
    assert out.name == "Dataset441_RegistrationPairs" and (out / MARKER).is_file()
    dataset = dataset_json(out)
    assert dataset["channel_names"] == {"0": "image"} and dataset["file_ending"] == ".nii.gz"
    assert dataset["labels"] == {"background": 0, "label_1": 1, "label_2": 2}
    assert dataset["numTraining"] == 4
    assert dataset["registration_pairs"] == [{"fixed": f, "moving": m} for f, m in PAIRS]
    assert dataset["unlabeled_cases"] == ["c"] and "placeholder" in dataset["unlabeled_cases_note"]
    assert dataset["case_groups"] == {n: n for n in IMAGE_FILES}
    assert dataset["conversion"]["pairs_from"] == "pairs.csv" and dataset["conversion"]["resampled"] == []
    assert dataset["conversion"]["cases"] == IMAGE_FILES
    assert "atlas" not in dataset and "label_ids" not in dataset
    assert files(out / "imagesTr") == sorted(f"{n}_0000.nii.gz" for n in IMAGE_FILES)
    assert files(out / "labelsTr") == sorted(f"{n}.nii.gz" for n in IMAGE_FILES)
    for seed, name in enumerate(IMAGE_FILES):
        image, header = read(out / "imagesTr" / f"{name}_0000.nii.gz")
        label, label_header = read(out / "labelsTr" / f"{name}.nii.gz")
        assert np.array_equal(image, mri(seed)) and label.dtype == np.uint8
        assert np.array_equal(label, seg(seed) if name in LABEL_FILES else np.zeros(SHAPE, np.uint8))
        assert np.allclose(header.GetSpacing(), SPACING[::-1]) and np.allclose(header.GetOrigin(), ORIGIN[::-1])
        assert label_header.GetOrigin() == header.GetOrigin() and label_header.GetSpacing() == header.GetSpacing()


@pytest.mark.parametrize("given", ["atlas", "atlas.nii.gz"])
def test_atlas_is_the_moving_image_of_every_pair(tmp_path, given):
    src = write_pairs_folder(tmp_path / "REG", pairs=False)
    dataset = dataset_json(rp.convert(src, 442, raw=tmp_path / "raw", atlas=given))
    assert dataset["atlas"] == "atlas" and dataset["conversion"]["pairs_from"] == "--atlas atlas"
    assert dataset["registration_pairs"] == [{"fixed": n, "moving": "atlas"} for n in ("a", "b", "c")]


def test_without_pairs_or_atlas_the_dataset_is_unpaired(tmp_path):
    src = write_pairs_folder(tmp_path / "REG", pairs=False)
    dataset = dataset_json(rp.convert(src, 443, raw=tmp_path / "raw", channel_name="CT"))
    assert dataset["registration_pairs"] == [] and dataset["conversion"]["pairs_from"] is None
    assert dataset["channel_names"] == {"0": "CT"}


def test_labels_folder_is_optional(tmp_path):
    src = write_pairs_folder(tmp_path / "REG")
    shutil.rmtree(src / "labels")
    dataset = dataset_json(rp.convert(src, 444, raw=tmp_path / "raw"))
    assert dataset["labels"] == {"background": 0} and sorted(dataset["unlabeled_cases"]) == sorted(IMAGE_FILES)


def _coarse_b(src: Path, origin=ORIGIN) -> np.ndarray:
    """Image b (and its label) at half the z resolution: a 4 x 10 x 12 grid of 4 x 1 x 1 mm over the same extent."""
    coarse = mri(1, (4, 10, 12))
    (src / "images" / "b.mha").unlink()
    write_volume(src / "images" / "b.mha", coarse, spacing=(4.0, 1.0, 1.0), origin=origin)
    write_volume(src / "labels" / "b.nii.gz", seg(1, (4, 10, 12)), spacing=(4.0, 1.0, 1.0), origin=origin)
    return coarse


def test_resample_puts_the_moving_image_and_label_on_the_fixed_grid(folder, tmp_path):
    coarse = _coarse_b(folder)
    before = tree_hash(folder)
    out = rp.convert(folder, 445, raw=tmp_path / "raw", resample=True)
    assert tree_hash(folder) == before
    dataset = dataset_json(out)
    # a <- b needs b on a's grid; b <- a needs a on b's grid; c <- atlas shares one grid
    assert dataset["registration_pairs"] == [{"fixed": "a", "moving": "b_on_a"}, {"fixed": "c", "moving": "atlas"},
                                             {"fixed": "b", "moving": "a_on_b"}]
    assert dataset["numTraining"] == 6 and dataset["case_groups"]["b_on_a"] == "b"
    assert dataset["case_groups"]["a_on_b"] == "a"
    records = {r["case"]: r for r in dataset["conversion"]["resampled"]}
    assert records["b_on_a"]["moving"] == "b" and records["b_on_a"]["fixed"] == "a"
    assert records["b_on_a"]["moving_size"] == "12x10x4" and records["b_on_a"]["fixed_size"] == "12x10x8"
    assert 0.8 < records["b_on_a"]["coverage"] <= 1.0
    image, header = read(out / "imagesTr" / "b_on_a_0000.nii.gz")
    label, label_header = read(out / "labelsTr" / "b_on_a.nii.gz")
    _, fixed = read(out / "imagesTr" / "a_0000.nii.gz")
    assert image.shape == SHAPE and header.GetSpacing() == fixed.GetSpacing()
    assert header.GetOrigin() == fixed.GetOrigin() == label_header.GetOrigin()
    # fixed slices 0, 2, 4, 6 lie on coarse slices 0..3: linear interpolation returns them unchanged
    np.testing.assert_allclose(image[0:8:2], coarse, rtol=1e-5)
    np.testing.assert_array_equal(label[0:8:2], seg(1, (4, 10, 12)))
    assert set(np.unique(label)) <= {0, 1, 2} and label.dtype == np.uint8


def test_remap_labels_numbers_the_values_and_keeps_the_mapping(folder, tmp_path):
    write_volume(folder / "labels" / "a.nii.gz", seg(0, values=(3, 1000)))
    write_volume(folder / "labels" / "atlas.mha", seg(3, values=(7, 3)))
    out = rp.convert(folder, 446, raw=tmp_path / "raw", remap_labels=True)
    dataset = dataset_json(out)
    # source values 0, 1, 2 (b), 3, 7, 1000 -> 0..5
    assert dataset["label_ids"] == {"0": 0, "1": 1, "2": 2, "3": 3, "4": 7, "5": 1000}
    assert dataset["labels"] == {"background": 0, "label_1": 1, "label_2": 2, "label_3": 3, "label_7": 4,
                                 "label_1000": 5}
    label, _ = read(out / "labelsTr" / "a.nii.gz")
    assert label.dtype == np.uint8 and np.array_equal(label, seg(0, values=(3, 5)))
    label, _ = read(out / "labelsTr" / "atlas.nii.gz")
    assert np.array_equal(label, seg(3, values=(4, 3)))
    label, _ = read(out / "labelsTr" / "b.nii.gz")
    assert np.array_equal(label, seg(1))


def test_output_passes_nnunet_integrity_check(folder, tmp_path, verify_with_nnunet):
    verify_with_nnunet(rp.convert(folder, 447, raw=tmp_path / "raw"))


def test_cli_runs_through_nnunet_ext_convert(folder, tmp_path, capsys):
    code = main(["convert", "registration_pairs", "-i", str(folder), "-d", "448", "--raw", str(tmp_path / "raw"),
                 "--name", "Reg", "--require_labels"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "image without label: " in err and "c.nrrd" in err
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())
    assert main(["convert", "registration_pairs", "-i", str(folder), "-d", "448", "--raw", str(tmp_path / "raw"),
                 "--name", "Reg"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "(no label: placeholder)" in out
    assert (tmp_path / "raw" / "Dataset448_Reg" / "dataset.json").is_file()


# ----------------------------------------------------------------------------------------------------------------------
# the checks: one-line errors, no output, the source untouched


def _volume(relative: str, array: np.ndarray, **geometry):
    return lambda src: write_volume(src / relative, array, **geometry)


def _replace_image(old: str, relative: str, array: np.ndarray, **geometry):
    def setup(src: Path) -> None:
        (src / "images" / old).unlink()
        write_volume(src / relative, array, **geometry)
    return setup


def _csv(*rows, header="fixed,moving"):
    return lambda src: write_pairs_csv(src, rows, header)


def _nan_image(src: Path) -> None:
    image = mri(0)
    image[2, 3, 3] = np.nan
    write_volume(src / "images" / "a.nii.gz", image)


def _truncated_image(src: Path) -> None:
    """A float image large enough that cutting its gzip stream leaves the NIfTI header readable (no pairs: a pair
    would fail on the changed grid first)."""
    (src / "pairs.csv").unlink()
    write_volume(src / "images" / "a.nii.gz", np.random.default_rng(0).normal(size=(8, 64, 64)).astype(np.float32))
    data = (src / "images" / "a.nii.gz").read_bytes()
    (src / "images" / "a.nii.gz").write_bytes(data[:-300])


def _two_d_image(src: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(mri(0)[0]), str(src / "images" / "a.nii.gz"), True)


def _clashing_names(src: Path) -> None:
    write_volume(src / "images" / "x y.nii.gz", mri(7))
    write_volume(src / "images" / "x_y.nii.gz", mri(8))


CHECKS = [
    ("missing_source", shutil.rmtree, {}, r"source folder .* does not exist"),
    ("no_images_folder", lambda src: (src / "images").rename(src / "scans"), {}, r"no images/ folder in .*REG"),
    ("no_images", lambda src: [p.unlink() for p in (src / "images").iterdir() if p.suffix != ".txt"] and None, {},
     r"no images in .*images \(formats read: nii\.gz, nii, mha"),
    ("same_name_twice", _volume("images/a.nii", mri(9)), {}, r"images holds a twice \(a\.nii and a\.nii\.gz\)"),
    ("case_id_clash", _clashing_names, {}, r"x y and x_y in .*images both become case id x_y"),
    ("label_without_image", _volume("labels/zed.nii.gz", seg(0)), {},
     r"label without image: .*labels/zed\.nii\.gz \(no zed\.\* in .*images\)"),
    ("image_without_label_required", None, {"require_labels": True},
     r"image without label: .*images/c\.nrrd \(no c\.\* in .*labels; --require_labels\)"),
    ("pair_names_missing_image", _csv(("a", "b"), ("a", "zzz")), {},
     r"pairs\.csv line 3: moving image 'zzz' is not an image in .*images \(images: a, atlas, b, c\)"),
    ("pair_names_missing_fixed", _csv(("nope.nii.gz", "b")), {},
     r"pairs\.csv line 2: fixed image 'nope\.nii\.gz' is not an image in"),
    ("pair_with_itself", _csv(("a", "a.nii.gz")), {}, r"pairs\.csv line 2: pairs a with itself"),
    ("csv_without_columns", _csv(("a", "b"), header="source,target"), {},
     r"pairs\.csv needs a header with the columns fixed and moving \(found: source, target\)"),
    ("csv_without_rows", _csv(), {}, r"pairs\.csv lists no pairs"),
    ("csv_short_row", lambda src: (src / "pairs.csv").write_text("fixed,moving\na\n"), {},
     r"pairs\.csv line 2: expected a fixed and a moving value, got 1 column"),
    ("atlas_missing", lambda src: (src / "pairs.csv").unlink(), {"atlas": "nope"},
     r"--atlas 'nope' is not an image in .*images"),
    ("atlas_and_pairs_csv", None, {"atlas": "atlas"}, r"holds pairs\.csv and --atlas atlas was given; use one of them"),
    ("pair_shape_mismatch", _replace_image("b.mha", "images/b.mha", mri(1, (9, 10, 12))), {},
     r"pairs\.csv line 2: fixed image a\.nii\.gz is 12x10x8 at 1 x 1 x 2 mm but moving image b\.mha is 12x10x9 at "
     r"1 x 1 x 2 mm; a pair must share one voxel grid \(pass --resample"),
    ("pair_spacing_mismatch", _replace_image("c.nrrd", "images/c.nrrd", mri(2), spacing=(2.0, 1.0, 1.5)), {},
     r"pairs\.csv line 3: fixed image c\.nrrd is 12x10x8 at 1\.5 x 1 x 2 mm but moving image atlas\.nii\.gz is "
     r"12x10x8 at 1 x 1 x 2 mm"),
    ("atlas_grid_mismatch", lambda src: ((src / "pairs.csv").unlink(),
                                         _volume("images/atlas.nii.gz", mri(3, (8, 10, 11)))(src)), {"atlas": "atlas"},
     r"--atlas atlas: fixed image a\.nii\.gz is 12x10x8 at .* but moving image atlas\.nii\.gz is 11x10x8"),
    ("no_overlap_when_resampling", lambda src: _coarse_b(src, origin=(500.0, 0.0, 0.0)), {"resample": True},
     r"pairs\.csv line 2: --resample cannot put moving image b\.mha onto the grid of fixed image a\.nii\.gz: they do "
     r"not overlap in world coordinates"),
    ("label_shape_mismatch", _volume("labels/a.nii.gz", seg(0, (8, 10, 13))), {},
     r"label .*labels/a\.nii\.gz is not on the grid of its image a\.nii\.gz \(size \(13, 10, 8\) instead of "
     r"\(12, 10, 8\): label 13x10x8 at 1 x 1 x 2 mm, image 12x10x8 at 1 x 1 x 2 mm\)"),
    ("label_spacing_mismatch", _volume("labels/b.nii.gz", seg(1), spacing=(2.5, 1.0, 1.0)), {},
     r"label .*labels/b\.nii\.gz is not on the grid of its image b\.mha \(spacing"),
    ("label_origin_mismatch", _volume("labels/a.nii.gz", seg(0), origin=(0.0, 0.0, 0.0)), {},
     r"labels/a\.nii\.gz is not on the grid .*\(origin"),
    ("label_direction_mismatch", _volume("labels/a.nii.gz", seg(0), direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1)), {},
     r"labels/a\.nii\.gz is not on the grid .*\(direction"),
    ("non_integer_label", _volume("labels/a.nii.gz", np.full(SHAPE, 0.5, np.float32)), {},
     r"label .*labels/a\.nii\.gz has non-integer values \(0\.5\); labels are integers 0\.\.K"),
    ("negative_label", _volume("labels/b.nii.gz", seg(1).astype(np.int16) - 1), {},
     r"label .*labels/b\.nii\.gz has negative values \(-1\)"),
    ("labels_not_consecutive", _volume("labels/atlas.mha", seg(3, values=(1, 5))), {},
     r"label values are not consecutive 0\.\.K: the labels hold 0, 1, 2, 5 \(3, 4 missing; 5 first seen in "
     r".*atlas\.mha\); pass --remap_labels to number them 0\.\.3"),
    ("corrupt_image", lambda src: (src / "images" / "a.nii.gz").write_bytes(b"not a NIfTI file " * 20), {},
     r"cannot read image .*a\.nii\.gz: not an image file SimpleITK can read"),
    ("truncated_image", _truncated_image, {}, r"cannot read image .*a\.nii\.gz: truncated or corrupt gzip"),
    ("nan_image", _nan_image, {}, r"image .*a\.nii\.gz contains 1 NaN voxel"),
    ("two_d_image", _two_d_image, {}, r"image .*a\.nii\.gz is a 2D image with 1 component\(s\) per voxel"),
    ("empty_channel_name", None, {"channel_name": " "}, r"--channel_name must not be empty"),
]


@pytest.mark.parametrize("setup, options, message", [pytest.param(*row[1:], id=row[0]) for row in CHECKS])
def test_bad_folder_is_one_error_naming_the_file_and_writes_nothing(folder, tmp_path, setup, options, message):
    if setup is not None:
        setup(folder)
    assert_refused(lambda raw: rp.convert(folder, 449, raw=raw, **options), folder, tmp_path / "raw",
                   "Dataset449_RegistrationPairs", message)


def test_output_inside_the_source_is_refused(folder):
    with pytest.raises(UserInputError, match="lies inside the input"):
        rp.convert(folder, 450, raw=folder / "raw")
    assert not (folder / "raw").exists()


def test_existing_dataset_id_needs_overwrite(folder, tmp_path):
    rp.convert(folder, 451, raw=tmp_path / "raw")
    with pytest.raises(UserInputError, match=r"dataset id 451 already exists at .*Dataset451_RegistrationPairs"):
        rp.convert(folder, 451, raw=tmp_path / "raw", atlas=None)
    again = rp.convert(folder, 451, raw=tmp_path / "raw", name="Reg2", overwrite=True)
    assert [p.name for p in (tmp_path / "raw").iterdir()] == [again.name] == ["Dataset451_Reg2"]
