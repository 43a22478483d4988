"""DCARegSegTrainer through nnU-Net's real commands on a tiny ``brain_pairs`` phantom (subjects layout, CPU):
``nnunet-ext plan_and_preprocess -pl WholeVolumePlanner`` -> ``nnUNetv2_train -tr DCARegSegTrainer_small`` (folds 0
and 1; fold 1 with similarity fusion is not needed: the fusion switch is unit-tested) -> ``nnUNetv2_predict`` with
one fold and the 2-fold ensemble -> ``nnunet-ext evaluate``; the atlas bank travels in the checkpoint."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_ext.imageio import read_image
from tests.conftest import PREDICT_ON_CPU, nnunet_bin as _bin, run_command as _run, tiny_schedule_env

pytestmark = pytest.mark.slow
DATASET = 361
PLANS = "nnUNetPlansWholeVolume"
TRAINER = "DCARegSegTrainer_small"
SHAPE = (20, 24, 20)


@pytest.fixture(scope="module")
def dca_run(tmp_path_factory):
    from nnunet_ext.synth.cli import synthesize

    root = tmp_path_factory.mktemp("dca")
    env = tiny_schedule_env(root / "ws")
    (raw,) = synthesize("brain_pairs", DATASET, cases=5, test_cases=2, seed=0, raw=env["nnUNet_raw"],
                        options={"shape": SHAPE, "layout": "subjects"})
    _run([_bin("nnunet-ext"), "plan_and_preprocess", "-d", DATASET, "-pl", "WholeVolumePlanner", "-c",
          "3d_fullres"], env, root)
    for fold in (0, 1):
        _run([_bin("nnUNetv2_train"), DATASET, "3d_fullres", fold, "-tr", TRAINER, "-p", PLANS, "-device", "cpu"],
             env, root)
    for folds in (["0"], ["0", "1"]):
        _run([_bin("nnUNetv2_predict"), "-i", raw / "imagesTs", "-o", root / f"pred_{'_'.join(folds)}", "-d",
              DATASET, "-c", "3d_fullres", "-f", *folds, "-tr", TRAINER, "-p", PLANS, "-device", "cpu",
              *PREDICT_ON_CPU], env, root)
    return {"env": env, "root": root, "raw": raw}


def _model(run) -> Path:
    return next(Path(run["env"]["nnUNet_results"]).glob(f"Dataset{DATASET}_*/{TRAINER}__{PLANS}__3d_fullres"))


def test_plans_make_the_patch_cover_every_image(dca_run):
    plans = json.loads((_model(dca_run) / "plans.json").read_text())
    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    assert all(p >= s for p, s in zip(patch, SHAPE)) and plans["configurations"]["3d_fullres"]["batch_size"] == 2


def test_checkpoint_holds_the_folds_training_cases_as_atlases(dca_run):
    for fold in (0, 1):
        folder = _model(dca_run) / f"fold_{fold}"
        atlases = json.loads((folder / "dca_atlases.json").read_text())["atlases"]
        preprocessed = Path(dca_run["env"]["nnUNet_preprocessed"]) / _model(dca_run).parent.name
        splits = json.loads((preprocessed / "splits_final.json").read_text())
        assert atlases == sorted(splits[fold]["train"])
        weights = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        images = weights["network_weights"]["atlases.images"]
        assert images.shape[0] == len(atlases) and images.shape[1] == 1
        assert weights["trainer_name"] == TRAINER
        log = next(folder.glob("training_log_*.txt")).read_text()
        assert "lambda_seg=1.0" in log and f"{len(atlases)} atlases" in log


@pytest.mark.parametrize("folds", ["0", "0_1"])
def test_predictions_are_label_maps_that_beat_chance(dca_run, folds):
    raw = dca_run["raw"]
    for reference_path in sorted((raw / "labelsTs").iterdir()):
        prediction, spacing = read_image(dca_run["root"] / f"pred_{folds}" / reference_path.name)
        reference, reference_spacing = read_image(reference_path)
        assert prediction.shape == reference.shape and np.allclose(spacing, reference_spacing)
        assert set(np.unique(prediction)) <= set(range(8))
        # atlases of other phantom subjects, barely trained: the fused labels still overlap the brain
        brain = (prediction > 0) & (reference > 0)
        assert 2 * brain.sum() / ((prediction > 0).sum() + (reference > 0).sum()) > 0.7


def test_evaluate_reads_the_predictions(dca_run, tmp_path):
    out = tmp_path / "summary.json"
    _run([_bin("nnunet-ext"), "evaluate", "-ref", dca_run["raw"] / "labelsTs", "-pred", dca_run["root"] / "pred_0_1",
          "-o", out], dca_run["env"], dca_run["root"])
    summary = json.loads(out.read_text())
    assert summary["foreground_mean"]["Dice"] > 0.1


def test_register_with_the_trained_model_and_fine_tuning(dca_run, tmp_path):
    raw = dca_run["raw"]
    fixed, moving = raw / "imagesTs" / "test_0000_0000.nii.gz", raw / "imagesTs" / "test_0001_0000.nii.gz"
    seg_fixed, seg_moving = raw / "labelsTs" / "test_0000.nii.gz", raw / "labelsTs" / "test_0001.nii.gz"
    for iterations, flags in ((0, ["--model", _model(dca_run)]), (2, ["-tr", TRAINER, "-d", DATASET, "-c",
                                                                      "3d_fullres", "-p", PLANS, "--fold", 1])):
        out = tmp_path / f"reg_{iterations}"
        _run([_bin("nnunet-ext"), "register", "-f", fixed, "-m", moving, "-ms", seg_moving, "-fs", seg_fixed,
              "-o", out, "--iterations", iterations, *flags], dca_run["env"], dca_run["root"])
        record = json.loads((out / "register.json").read_text())
        assert record["model"]["trainer"] == TRAINER and record["model"]["spacing_note"] is None
        assert record["mode"].startswith("trained model") and ("fine-tuning" in record["mode"]) == bool(iterations)
        assert record["metrics"]["after"]["dice_mean"] > 0.3
        assert (out / "disp_test_0000_0000_test_0001_0000.nii.gz").is_file()


def test_register_refuses_a_model_that_is_not_a_registration_trainer(dca_run, tmp_path):
    folder = tmp_path / "NotReg__nnUNetPlansWholeVolume__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        (folder / name).write_text((_model(dca_run) / name).read_text())
    torch.save({"trainer_name": "nnUNetTrainer", "network_weights": {}}, folder / "fold_0" / "checkpoint_final.pth")
    raw = dca_run["raw"] / "imagesTs"
    proc = _run([_bin("nnunet-ext"), "register", "-f", raw / "test_0000_0000.nii.gz", "-m",
                 raw / "test_0001_0000.nii.gz", "-o", tmp_path / "out", "--model", folder], dca_run["env"],
                dca_run["root"], ok=False)
    assert proc.returncode == 2 and "trained by nnUNetTrainer, not a registration trainer" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_pairbench_with_the_trained_model(dca_run, tmp_path):
    raw = dca_run["raw"]
    out = tmp_path / "bench.json"
    _run([sys.executable, "-m", "nnunet_ext.methods.dca.pairbench", "--method", "trained", "--model",
          _model(dca_run), "--iterations", 0, "--both_directions",
          "--fixed", raw / "imagesTs" / "test_0000_0000.nii.gz", "--moving", raw / "imagesTs" / "test_0001_0000.nii.gz",
          "--fixed_seg", raw / "labelsTs" / "test_0000.nii.gz", "--moving_seg", raw / "labelsTs" / "test_0001.nii.gz",
          "-o", out], dca_run["env"], dca_run["root"])
    result = json.loads(out.read_text())
    assert result["method"] == "trained" and result["settings"]["model"]["trainer"] == TRAINER
    assert 0 < result["dice"] <= 1 and result["seconds_per_iteration"] is None
