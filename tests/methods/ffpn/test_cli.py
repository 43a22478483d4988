"""``nnunet-ext ffpn predict-hc18`` on real HC18 images (skips without ../shared/data): convert a few images
(--downsample 4), plan them with WholeImage2DPlanner (whole-image patch, no resampling, grouped splits), train
FFPNTrainer_tiny for 2 iterations through nnUNetv2_train, then predict a folder of PNGs + CSV converted on the fly."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from nnunet_ext.imageio import read_image
from tests.conftest import nnunet_bin as _bin, run_command as _run, shared_data, tiny_schedule_env

pytestmark = pytest.mark.slow
DATASET = 333
# six examinations (>= 5 groups for a grouped fold 0), one with a repeat image
IMAGES = ("010_HC.png", "010_2HC.png", "015_HC.png", "024_HC.png", "030_HC.png", "031_HC.png", "044_HC.png")


def _subset(source, target, names):
    """An HC18-layout tree of links to ``names`` (and their annotations) with the matching CSV rows."""
    (target / "training_set").mkdir(parents=True)
    for name in names:
        for file in (name, name.replace("HC.png", "HC_Annotation.png")):
            (target / "training_set" / file).symlink_to(source / "training_set" / file)
    with open(source / "pixel_size_and_HC.csv", newline="") as handle:
        rows = [r for r in csv.reader(handle)]
    with open(target / "pixel_size_and_HC.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([rows[0]] + [r for r in rows[1:] if r[0] in names])
    return target


def test_train_on_real_hc18_and_predict_a_png_folder(tmp_path):
    source = shared_data("hc18")
    env = tiny_schedule_env(tmp_path / "ws")
    subset = _subset(source, tmp_path / "hc18", IMAGES)
    _run([_bin("nnunet-ext"), "convert", "hc18", "-i", subset, "-d", DATASET, "--downsample", 4], env, tmp_path)
    _run([_bin("nnunet-ext"), "plan_and_preprocess", "-d", DATASET, "-pl", "WholeImage2DPlanner", "-c", "2d"],
         env, tmp_path)
    preprocessed = tmp_path / "ws" / "nnUNet_preprocessed" / "Dataset333_HC18"
    plans = json.loads((preprocessed / "nnUNetPlansWholeImage.json").read_text())
    assert list(plans["configurations"]) == ["2d"]
    config = plans["configurations"]["2d"]
    assert config["resampling_fn_data"] == "no_resampling_hack" and config["batch_size"] == 2
    assert config["patch_size"][0] >= 540 // 4 and config["patch_size"][1] >= 800 // 4  # the whole image
    splits = json.loads((preprocessed / "splits_final.json").read_text())
    assert all(("hc18_010" in s["val"]) == ("hc18_010_2" in s["val"]) for s in splits)

    _run([_bin("nnUNetv2_train"), DATASET, "2d", 0, "-tr", "FFPNTrainer_tiny", "-p", "nnUNetPlansWholeImage",
          "-device", "cpu"], env, tmp_path)
    # a folder of new images as users get them: PNGs (annotations are ignored) and a CSV with pixel sizes
    new = _subset(source, tmp_path / "new", IMAGES[:2]) / "training_set"
    out = tmp_path / "out"
    _run([_bin("nnunet-ext"), "ffpn", "predict-hc18", "-i", new, "--csv", new.parent / "pixel_size_and_HC.csv",
          "-o", out, "-d", DATASET, "-f", 0, "-tr", "FFPNTrainer_tiny"], env, tmp_path)
    rows = {r["filename"]: r for r in csv.DictReader(open(out / "head_circumference.csv"))}
    assert set(rows) == {"010_HC.png", "010_2HC.png"}
    assert float(rows["010_HC.png"]["reference (mm)"]) == pytest.approx(71.91)
    mask, spacing = read_image(out / "hc18_010.nii.gz")
    assert mask.squeeze().shape == (540 // 4, 800 // 4)
    assert np.allclose(spacing[-2:], 4 * 0.079935165, rtol=1e-4)  # the model's --downsample is applied
    predicted = float(rows["010_HC.png"]["head circumference (mm)"])
    assert math.isnan(predicted) or predicted > 0  # two iterations learn nothing; the columns must be there
