"""Tests of nnunet_ext.datasets_conversion.hc18 on small fake HC18 trees, and on the real subset when present."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.draw import ellipse_perimeter

from nnunet_ext.atomic import MARKER
from nnunet_ext.datasets_conversion import hc18
from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import read_image
from tests.conftest import shared_data, tree_hash

SHAPE = (54, 80)  # rows, columns (HC18 images are 540 x 800)
# image name -> (pixel size mm, HC mm, ellipse centre row/col, semi-axes rows/cols)
CASES = {
    "001_HC.png": (0.12, 70.0, (27, 40), (15, 22)),
    "001_2HC.png": (0.12, 71.0, (26, 41), (15, 21)),
    "002_HC.png": (0.2, 90.0, (28, 38), (18, 25)),
}


def write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def outline(centre, axes, shape=SHAPE) -> np.ndarray:
    annotation = np.zeros(shape, np.uint8)
    rows, cols = ellipse_perimeter(*centre, *axes, shape=shape)
    annotation[rows, cols] = 255
    return annotation


def write_tree(src: Path, with_test_set: bool = True) -> Path:
    rng = np.random.default_rng(0)
    (src / "training_set").mkdir(parents=True)
    lines = ["filename,pixel size(mm),head circumference (mm)"]
    for name, (pixel, circumference, centre, axes) in CASES.items():
        write_png(src / "training_set" / name, rng.integers(0, 255, SHAPE))
        write_png(src / "training_set" / name.replace("HC.png", "HC_Annotation.png"), outline(centre, axes))
        lines.append(f"{name},{pixel},{circumference}")
    (src / "training_set_pixel_size_and_HC.csv").write_text("\n".join(lines) + "\n")
    if with_test_set:
        (src / "test_set").mkdir()
        write_png(src / "test_set" / "500_HC.png", rng.integers(0, 255, SHAPE))
        (src / "test_set_pixel_size.csv").write_text("filename,pixel size(mm)\n500_HC.png,0.15\n")
    return src


def test_converts_images_filled_heads_spacing_groups_and_test_set(tmp_path):
    src = write_tree(tmp_path / "src")
    before = tree_hash(src)
    folder = hc18.convert(src, 410, raw=tmp_path / "raw")
    assert tree_hash(src) == before
    assert folder.name == "Dataset410_HC18" and (folder / MARKER).is_file()
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["numTraining"] == 3 and dataset["labels"] == {"background": 0, "head": 1}
    assert dataset["case_groups"] == {"hc18_001": "001", "hc18_001_2": "001", "hc18_002": "002"}
    assert dataset["head_circumference_mm"]["hc18_002"] == 90.0
    assert dataset["pixel_size_mm"]["hc18_500_test"] == 0.15
    label, spacing = read_image(folder / "labelsTr" / "hc18_002.nii.gz")
    assert np.allclose(spacing[-2:], (0.2, 0.2))
    assert set(np.unique(label)) == {0, 1}
    # filled: the outline's ellipse area, not the 1-pixel outline
    assert label.sum() == pytest.approx(np.pi * 18 * 25, rel=0.1)
    image, _ = read_image(folder / "imagesTr" / "hc18_002_0000.nii.gz")
    assert image.squeeze().shape == SHAPE
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["hc18_500_test_0000.nii.gz"]


def test_finds_the_subset_csv_name_and_works_without_a_test_set(tmp_path):
    src = write_tree(tmp_path / "src", with_test_set=False)
    (src / "training_set_pixel_size_and_HC.csv").rename(src / "pixel_size_and_HC.csv")
    folder = hc18.convert(src, 411, raw=tmp_path / "raw")
    assert len(list((folder / "imagesTr").iterdir())) == 3 and not any((folder / "imagesTs").iterdir())


def test_outline_cut_by_the_image_border_is_closed_by_the_border(tmp_path):
    """A head extending beyond the top edge (as in real HC18 images): the part inside the image is the label."""
    src = write_tree(tmp_path / "src", with_test_set=False)
    cut = outline((5, 40), (15, 22), shape=(54 + 20, 80))[:SHAPE[0]]
    write_png(src / "training_set" / "002_HC_Annotation.png", cut)
    folder = hc18.convert(src, 416, raw=tmp_path / "raw")
    label, _ = read_image(folder / "labelsTr" / "hc18_002.nii.gz")
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    inside = ((yy - 5) / 15) ** 2 + ((xx - 40) / 22) ** 2 <= 1
    assert abs(int(label.sum()) - int(inside.sum())) < 0.1 * inside.sum()


def _break_open_outline(src):
    path = src / "training_set" / "002_HC_Annotation.png"
    annotation = np.asarray(Image.open(path)).copy()
    annotation[:, 30:50] = 0  # cut the ellipse: it no longer encloses anything
    write_png(path, annotation)


def _truncate_png(src):
    path = src / "training_set" / "001_HC.png"
    path.write_bytes(path.read_bytes()[:40])


@pytest.mark.parametrize("damage,message", [
    (_break_open_outline, "002_HC_Annotation.png is not a closed outline"),
    (lambda src: (src / "training_set" / "001_2HC_Annotation.png").unlink(), "image without annotation: .*001_2HC.png"),
    (_truncate_png, "cannot read image .*001_HC.png"),
    (lambda src: write_png(src / "training_set" / "002_HC_Annotation.png", np.zeros(SHAPE)), "has no outline"),
    (lambda src: write_png(src / "training_set" / "002_HC_Annotation.png", outline((20, 20), (8, 8), (40, 40))),
     "002_HC_Annotation.png is 40x40 but its image is 80x54"),
    (lambda src: (src / "training_set_pixel_size_and_HC.csv").write_text("filename,px,hc\n001_HC.png,0.1,70\n"),
     "no pixel size for .*001_2HC.png"),
    (lambda src: (src / "training_set_pixel_size_and_HC.csv").write_text("filename,px,hc\n001_HC.png,abc,70\n"),
     "line 2: not a number"),
    (lambda src: (src / "training_set_pixel_size_and_HC.csv").write_text("filename,px,hc\n001_HC.png,-1,70\n"),
     "line 2: values must be positive"),
    (lambda src: (src / "test_set_pixel_size.csv").unlink(), "test_set_pixel_size.csv is missing"),
    (lambda src: (src / "training_set" / "bad_HC.png").write_bytes(b"x"), "unrecognised HC18 image name bad_HC.png"),
])
def test_bad_input_names_the_file_and_writes_nothing(tmp_path, damage, message):
    src = write_tree(tmp_path / "src")
    damage(src)
    before = tree_hash(src)
    with pytest.raises(UserInputError, match=message):
        hc18.convert(src, 412, raw=tmp_path / "raw")
    assert tree_hash(src) == before
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_existing_dataset_id_needs_overwrite(tmp_path):
    src = write_tree(tmp_path / "src")
    hc18.convert(src, 413, raw=tmp_path / "raw")
    with pytest.raises(UserInputError, match="already exists"):
        hc18.convert(src, 413, raw=tmp_path / "raw")
    hc18.convert(src, 413, raw=tmp_path / "raw", overwrite=True)


def test_cli_one_line_error_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nnunet_ext.cli", "convert", "hc18", "-i", str(tmp_path / "nope"),
                           "-d", "414", "--raw", str(tmp_path / "raw")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def test_real_hc18_subset_converts_and_matches_its_circumferences(tmp_path):
    from nnunet_ext.metrics.head_circumference import head_circumference_mm

    folder = hc18.convert(shared_data("hc18"), 415, raw=tmp_path / "raw")
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["numTraining"] == 146 and len(set(dataset["case_groups"].values())) == 120
    assert len(list((folder / "labelsTr").iterdir())) == 146  # every outline closes (some only with the border)
    for case in ("hc18_010", "hc18_010_2"):
        label, spacing = read_image(folder / "labelsTr" / f"{case}.nii.gz")
        measured = head_circumference_mm(label.squeeze(), spacing[-1])
        assert measured == pytest.approx(dataset["head_circumference_mm"][case], rel=0.015)


def test_downsample_averages_blocks_scales_the_spacing_and_is_recorded(tmp_path):
    src = write_tree(tmp_path / "src", with_test_set=False)
    full = hc18.convert(src, 410, raw=tmp_path / "raw")
    half = hc18.convert(src, 411, raw=tmp_path / "raw", downsample_factor=2)
    label_full, _ = read_image(full / "labelsTr" / "hc18_002.nii.gz")
    label_half, spacing = read_image(half / "labelsTr" / "hc18_002.nii.gz")
    assert label_half.squeeze().shape == (SHAPE[0] // 2, SHAPE[1] // 2)
    assert np.allclose(spacing[-2:], (0.4, 0.4))  # 2 x the CSV's 0.2 mm
    assert 4 * int(label_half.sum()) == pytest.approx(int(label_full.sum()), rel=0.05)  # same head area in mm^2
    image_full, _ = read_image(full / "imagesTr" / "hc18_002_0000.nii.gz")
    image_half, _ = read_image(half / "imagesTr" / "hc18_002_0000.nii.gz")
    block = image_full.squeeze()[2:4, 6:8].astype(float)
    assert image_half.squeeze()[1, 3] == round(block.mean())
    assert json.loads((half / "dataset.json").read_text())["conversion"]["downsample"] == 2


@pytest.mark.parametrize("factor", [0, 9, 1.5, True])
def test_bad_downsample_factor_is_refused_before_writing(tmp_path, factor):
    src = write_tree(tmp_path / "src", with_test_set=False)
    with pytest.raises(UserInputError, match=r"--downsample must be an integer in 1\.\.8"):
        hc18.convert(src, 410, raw=tmp_path / "raw", downsample_factor=factor)
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())
