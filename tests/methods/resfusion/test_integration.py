"""ResFusion through nnU-Net's real commands on BraTS-layout data (CPU): a fake BraTS 2023 release -> nnunet-ext
convert brats2023 (t1n pre, t1c post; WT/TC/ET regions) -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train
ResFusionTrainer_small (region training, 2 iterations) -> nnUNetv2_predict -> nnunet-ext evaluate --regions brats."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PREDICT_ON_CPU, nnunet_bin as _bin, run_command as _run, tiny_schedule_env
from tests.datasets_conversion.test_brats2023 import LABELLED, write_brats

pytestmark = pytest.mark.slow
BRATS_ID, TRAINER = 461, "ResFusionTrainer_small"


@pytest.fixture(scope="module")
def brats_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("resfusion")
    env = tiny_schedule_env(root / "ws")
    _run([_bin("nnunet-ext"), "convert", "brats2023", "-i", write_brats(root / "BraTS"), "-d", BRATS_ID], env, root)
    _run([_bin("nnUNetv2_plan_and_preprocess"), "-d", BRATS_ID, "-c", "3d_fullres", "-np", 1, "-npfp", 1], env,
         root)
    _run([_bin("nnUNetv2_train"), BRATS_ID, "3d_fullres", "all", "-tr", TRAINER, "-device", "cpu"], env, root)
    return {"env": env, "root": root, "raw": Path(env["nnUNet_raw"]) / f"Dataset{BRATS_ID}_BraTS2023GLI"}


def test_region_training_predicts_brats_regions(brats_run, tmp_path):
    env, raw = brats_run["env"], brats_run["raw"]
    _run([_bin("nnUNetv2_predict"), "-i", raw / "imagesTr", "-o", tmp_path / "pred", "-d", BRATS_ID, "-c",
          "3d_fullres", "-f", "all", "-tr", TRAINER, "-device", "cpu", "--disable_tta", *PREDICT_ON_CPU], env,
         tmp_path)
    _run([_bin("nnunet-ext"), "evaluate", "-ref", raw / "labelsTr", "-pred", tmp_path / "pred", "--regions", "brats",
          "-o", tmp_path / "metrics.json"], env, tmp_path)
    regions = json.loads((tmp_path / "metrics.json").read_text())["regions"]
    assert len(regions["metric_per_case"]) == len(LABELLED)
    assert set(regions["mean"]) == {"WT", "TC", "ET", "mean"}
    assert all(0.0 <= regions["mean"][r]["Dice"] <= 1.0 for r in ("WT", "TC", "ET"))

