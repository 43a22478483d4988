"""Tests of nnunet_ext.datasets_conversion.image_folder_2d on small fake image/mask folders (PIL and NIfTI formats)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnunet_ext.atomic import MARKER
from nnunet_ext.cli import main
from nnunet_ext.datasets_conversion import image_folder_2d as folder2d
from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import read_image, write_image
from tests.conftest import tree_hash

SHAPE = (24, 20)  # rows, columns
NIFTI_SPACING = (0.5, 0.25)  # (y, x) mm


def mask(seed: int, values=(1, 2)) -> np.ndarray:
    """Background 0 with one rectangle per value."""
    array = np.zeros(SHAPE, np.uint8)
    for k, value in enumerate(values):
        array[2 + 10 * k:8 + 10 * k, 3 + seed:12 + seed] = value
    return array


def save(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def write_tree(root: Path, values=(1, 2)) -> tuple[Path, Path, Path]:
    """images/ + masks/ + test/: an RGB PNG, a grayscale PNG with a space in its name, a float NIfTI with spacing."""
    rng = np.random.default_rng(0)
    images, masks, test = root / "images", root / "masks", root / "test"
    for folder in (images, masks, test):
        folder.mkdir(parents=True)
    save(images / "case1.png", rng.integers(0, 255, (*SHAPE, 3)).astype(np.uint8))
    save(masks / "case1.png", mask(0, values))
    save(images / "case 2.png", rng.integers(0, 255, SHAPE).astype(np.uint8))
    save(masks / "case 2.png", mask(1, values))
    write_image(images / "case3.nii.gz", rng.normal(size=SHAPE).astype(np.float32), NIFTI_SPACING)
    write_image(masks / "case3.nii.gz", mask(2, values), NIFTI_SPACING)
    (images / "README.txt").write_text("skipped: not an image format\n")
    (masks / ".DS_Store").write_bytes(b"\0")
    save(test / "t1.jpg", rng.integers(0, 255, SHAPE).astype(np.uint8))
    save(test / "t2.bmp", rng.integers(0, 255, SHAPE).astype(np.uint8))
    return images, masks, test


def test_converts_pil_and_nifti_pairs_with_labels_spacing_and_test_images(tmp_path):
    images, masks, test = write_tree(tmp_path / "src")
    before = tree_hash(tmp_path / "src")
    folder = folder2d.convert(images, masks, 430, raw=tmp_path / "raw", labels=["tumour=1", "organ=2"],
                              spacing=0.2, test_images=test)
    assert tree_hash(tmp_path / "src") == before
    assert folder.name == "Dataset430_ImageFolder2D" and (folder / MARKER).is_file()
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "tumour": 1, "organ": 2} and dataset["numTraining"] == 3
    assert dataset["conversion"]["mask_values"] == {"tumour": 1, "organ": 2}
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [
        "case1.nii.gz", "case3.nii.gz", "case_2.nii.gz"]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["t1_0000.nii.gz", "t2_0000.nii.gz"]
    image, spacing = read_image(folder / "imagesTr" / "case1_0000.nii.gz")  # RGB -> grayscale, --spacing
    assert image.shape == SHAPE and image.dtype == np.uint8 and np.allclose(spacing, (0.2, 0.2))
    label, spacing = read_image(folder / "labelsTr" / "case3.nii.gz")  # NIfTI keeps its own spacing
    assert np.array_equal(label, mask(2)) and np.allclose(spacing, NIFTI_SPACING)
    image, spacing = read_image(folder / "imagesTr" / "case3_0000.nii.gz")
    assert image.dtype == np.float32 and np.allclose(spacing, NIFTI_SPACING)
    _, spacing = read_image(folder / "imagesTs" / "t2_0000.nii.gz")
    assert np.allclose(spacing, (0.2, 0.2))


@pytest.mark.parametrize("options,labels", [
    ({"binary": True}, {"background": 0, "foreground": 1}),
    ({"labels": ["lesion=255"]}, {"background": 0, "lesion": 1}),
    ({"labels": {"lesion": 255}, "binary": True}, {"background": 0, "lesion": 1}),
])
def test_0_255_masks_with_binary_or_their_value(tmp_path, options, labels):
    images, masks, _ = write_tree(tmp_path / "src", values=(255,))
    folder = folder2d.convert(images, masks, 431, raw=tmp_path / "raw", **options)
    assert json.loads((folder / "dataset.json").read_text())["labels"] == labels
    label, _ = read_image(folder / "labelsTr" / "case_2.nii.gz")
    assert np.array_equal(label, mask(1, (255,)) // 255)


def test_listed_values_are_numbered_in_increasing_order(tmp_path):
    images, masks, _ = write_tree(tmp_path / "src", values=(255, 128))
    folder = folder2d.convert(images, masks, 432, raw=tmp_path / "raw", labels=["organ=255", "tumour=128"])
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "tumour": 1, "organ": 2}
    assert dataset["conversion"]["mask_values"] == {"tumour": 128, "organ": 255}
    label, _ = read_image(folder / "labelsTr" / "case1.nii.gz")
    assert np.array_equal(label, mask(0, (2, 1)))


def test_16_bit_images_keep_their_values_and_palette_masks_their_indices(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    deep = (np.arange(np.prod(SHAPE)).reshape(SHAPE) * 100).astype(np.uint16)
    save(images / "a.tif", deep)
    palette = Image.new("P", SHAPE[::-1])
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)  # index 1 red, 2 green: 'L' would mix them up
    palette.putdata(mask(0).ravel().tolist())
    palette.save(masks / "a.png")
    folder = folder2d.convert(images, masks, 433, raw=tmp_path / "raw", labels=["x=1", "y=2"])
    image, _ = read_image(folder / "imagesTr" / "a_0000.nii.gz")
    assert np.array_equal(image, deep) and image.max() > 255
    label, _ = read_image(folder / "labelsTr" / "a.nii.gz")
    assert np.array_equal(label, mask(0))


def _save_nan_nifti(images: Path) -> None:
    array = np.ones(SHAPE, np.float32)
    array[3, 4] = np.nan
    write_image(images / "case3.nii.gz", array, NIFTI_SPACING)


@pytest.mark.parametrize("damage,message", [
    (lambda i, m, t: (m / "case1.png").unlink(), r"image without mask: .*case1\.png \(no case1\.\* in .*masks\)"),
    (lambda i, m, t: (m / "case1.png").rename(m / "case1.gif"), r"case1\.gif is not a format read here"),
    (lambda i, m, t: save(m / "extra.png", mask(0)), r"mask without image: .*extra\.png"),
    (lambda i, m, t: save(m / "case1.png", np.zeros((20, 20), np.uint8)),
     r"mask .*case1\.png is 20x20 but its image case1\.png is 20x24"),
    (lambda i, m, t: write_image(m / "case3.nii.gz", mask(2), (0.5, 0.5)),
     r"mask .*case3\.nii\.gz has spacing 0\.5 x 0\.5 mm but its image case3\.nii\.gz has 0\.25 x 0\.5 mm"),
    (lambda i, m, t: (i / "case 2.png").write_bytes(b"not a PNG " * 10), r"cannot read image .*case 2\.png"),
    (lambda i, m, t: (m / "case3.nii.gz").write_bytes(b"not a NIfTI " * 10), r"cannot read mask .*case3\.nii\.gz"),
    (lambda i, m, t: _save_nan_nifti(i), r"image .*case3\.nii\.gz contains 1 NaN pixel"),
    (lambda i, m, t: save(m / "case1.png", mask(0, (1, 7))),
     r"mask .*case1\.png has value 7, which is neither background 0 nor a --labels value \(1, 2\)"),
    (lambda i, m, t: [p.unlink() for p in i.iterdir()], r"no images in -i folder .*images \(formats read: png,"),
    (lambda i, m, t: [p.unlink() for p in m.iterdir()], r"no images in -m folder .*masks"),
    (lambda i, m, t: [p.unlink() for p in t.iterdir()], r"no images in --test_images folder .*test"),
    (lambda i, m, t: (t / "t1.jpg").write_bytes(b"\xff\xd8 broken"), r"cannot read image .*t1\.jpg"),
    (lambda i, m, t: (save(i / "case_2.png", mask(0)), save(m / "case_2.png", mask(0))),
     r"case 2\.png and case_2\.png in .*images both become case id case_2"),
    (lambda i, m, t: save(i / "case1.tif", mask(0)), r"images has two files named case1: case1\.png and case1\.tif"),
])
def test_bad_input_names_the_file_and_writes_nothing(tmp_path, damage, message):
    images, masks, test = write_tree(tmp_path / "src")
    damage(images, masks, test)
    before = tree_hash(tmp_path / "src")
    with pytest.raises(UserInputError, match=message):
        folder2d.convert(images, masks, 434, raw=tmp_path / "raw", test_images=test, labels=["a=1", "b=2"])
    assert tree_hash(tmp_path / "src") == before
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("options,message", [
    ({"labels": ["tumour"]}, r"--labels expects NAME=VALUE, got 'tumour'"),
    ({"labels": ["tumour=0"]}, r"--labels tumour=0: the value must be >= 1"),
    ({"labels": ["tumour=x"]}, r"--labels tumour=x: the value must be an integer"),
    ({"labels": ["background=1"]}, r"'background' is value 0"),
    ({"labels": ["a=1", "b=1"]}, r"--labels gives the value 1 to two labels"),
    ({"labels": ["a=1", "a=2"]}, r"--labels names a twice"),
    ({"labels": ["a=1", "b=2"], "binary": True}, r"--binary makes every nonzero mask value one label"),
    ({"spacing": 0.0}, r"--spacing must be a positive pixel size in mm, got 0\.0"),
    ({"spacing": float("nan")}, r"--spacing must be a positive pixel size"),
    ({"masks": "images"}, r"-m .*images is the -i folder"),
    ({"test_images": "masks"}, r"--test_images .*masks is the -i or -m folder"),
    ({"images": "nope"}, r"-i folder .*nope does not exist"),
])
def test_bad_options(tmp_path, options, message):
    write_tree(tmp_path / "src")
    paths = {key: tmp_path / "src" / options.pop(key, key) for key in ("images", "masks")}
    if "test_images" in options:
        options["test_images"] = tmp_path / "src" / options["test_images"]
    with pytest.raises(UserInputError, match=message):
        folder2d.convert(paths["images"], paths["masks"], 435, raw=tmp_path / "raw", **options)
    assert not (tmp_path / "raw").exists()


def test_existing_dataset_id_needs_overwrite(tmp_path):
    images, masks, _ = write_tree(tmp_path / "src")
    folder2d.convert(images, masks, 436, raw=tmp_path / "raw", labels=["a=1", "b=2"])
    with pytest.raises(UserInputError, match="dataset id 436 already exists"):
        folder2d.convert(images, masks, 436, raw=tmp_path / "raw", labels=["a=1", "b=2"])
    folder2d.convert(images, masks, 436, raw=tmp_path / "raw", labels=["a=1", "b=2"], overwrite=True)


def test_cli_options_and_one_line_error(tmp_path, capsys):
    images, masks, test = write_tree(tmp_path / "src", values=(255,))
    argv = ["convert", "image_folder_2d", "-i", str(images), "-m", str(masks), "-d", "437", "--raw",
            str(tmp_path / "raw")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has value 255" in err
    assert main([*argv, "--binary", "--spacing", "0.1", "--test_images", str(test), "--name", "Masks255"]) == 0
    folder = tmp_path / "raw" / "Dataset437_Masks255"
    assert json.loads((folder / "dataset.json").read_text())["conversion"]["spacing_mm"] == 0.1
    assert "skipped 1 file(s) of other formats" in capsys.readouterr().out


def test_convert_listing_names_both_new_converters(capsys):
    assert main(["convert"]) == 0
    out = capsys.readouterr().out
    assert "  camus " in out and "  image_folder_2d " in out


def test_output_passes_nnunet_integrity_check(tmp_path, verify_with_nnunet):
    images, masks, test = write_tree(tmp_path / "src")
    verify_with_nnunet(folder2d.convert(images, masks, 438, raw=tmp_path / "raw", labels=["a=1", "b=2"],
                                        test_images=test))
