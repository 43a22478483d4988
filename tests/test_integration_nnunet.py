"""End to end through nnU-Net's real commands on a tiny breast_dce phantom, on CPU.

nnUNetv2_plan_and_preprocess -> nnUNetv2_train -tr TinyTrainer (3d_fullres folds 0 and 1, 2d fold 0, run from an
unrelated directory) -> nnUNetv2_predict (fold 0 and the 2-fold ensemble -f 0 1; sequential and with spawned
workers) -> nnunet-ext evaluate.

Every command here runs as a plain subprocess of the installed console script. The other integration tests run
theirs through the tests' warm launcher (``tests/warm_launcher.py``); two tests below check that a warm command
trains the same weights and predicts the same probabilities as the plain one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from nnunet_ext.imageio import read_image
from nnunet_ext.pipeline import prediction_workers
from tests.conftest import _WARM, PREDICT_ON_CPU, nnunet_bin as _bin, run_command

pytestmark = pytest.mark.slow
DATASET_ID = 311


def _run(cmd, env, cwd, ok: bool = True, warm: bool = False):
    return run_command(cmd, env, cwd, ok=ok, warm=warm)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from nnunet_ext.env import environment
    from nnunet_ext.synth.cli import synthesize

    root = tmp_path_factory.mktemp("e2e")
    elsewhere = tmp_path_factory.mktemp("somewhere_else")  # the commands must not depend on the cwd
    env = {**os.environ, **environment(root / "ws", keep_existing=False), "nnUNet_ext_seed": "1"}
    (raw,) = synthesize("breast_dce", DATASET_ID, cases=5, test_cases=2, seed=0, raw=env["nnUNet_raw"],
                        options={"shape": (16, 48, 48)})
    _run([_bin("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "3d_fullres", "-np", "1",
          "-npfp", "1", "--verify_dataset_integrity"], env, elsewhere)
    for config, fold in (("3d_fullres", 0), ("3d_fullres", 1), ("2d", 0)):
        # nnU-Net's final validation (spawned export workers, ~15 s) once, on the first fold; the others skip it
        skip = {} if fold == 0 and config == "3d_fullres" else {"nnUNet_ext_skip_final_validation": "1"}
        _run([_bin("nnUNetv2_train"), str(DATASET_ID), config, str(fold), "-tr", "TinyTrainer", "-device", "cpu"],
             {**env, **skip}, elsewhere)
    return {"env": env, "raw": raw, "cwd": elsewhere, "root": root}


def _predict(trained, config, folds, out, options=PREDICT_ON_CPU, warm=False):
    proc = _run([_bin("nnUNetv2_predict"), "-i", str(trained["raw"] / "imagesTs"), "-o", str(out), "-d",
                 str(DATASET_ID), "-c", config, "-f", *folds, "-tr", "TinyTrainer", "-device", "cpu", "--disable_tta",
                 *options], trained["env"], trained["cwd"], warm=warm)
    assert proc.warm == warm, f"the warm launcher refused the command: {_WARM.last_refusal}"
    preds = sorted(p.name for p in out.glob("*.nii.gz"))
    assert preds == ["test_0000.nii.gz", "test_0001.nii.gz"]
    for name in preds:
        pred, spacing = read_image(out / name)
        ref, ref_spacing = read_image(trained["raw"] / "labelsTs" / name)
        assert pred.shape == ref.shape and np.allclose(spacing, ref_spacing)
        assert set(np.unique(pred)) <= {0, 1}


@pytest.fixture(scope="module")
def fold0_predictions(trained, tmp_path_factory):
    """3d_fullres fold 0 predictions of the test cases (checked by ``_predict``), sequential, with probabilities,
    made once for the tests below."""
    out = tmp_path_factory.mktemp("pred_3d_fold0")
    _predict(trained, "3d_fullres", ["0"], out, (*PREDICT_ON_CPU, "--save_probabilities"))
    return out


def test_training_wrote_nnunet_results(trained):
    base = Path(trained["env"]["nnUNet_results"]) / f"Dataset{DATASET_ID:03d}_BreastDCE"
    for config, fold in (("3d_fullres", 0), ("3d_fullres", 1), ("2d", 0)):
        folder = base / f"TinyTrainer__nnUNetPlans__{config}" / f"fold_{fold}"
        assert (folder / "checkpoint_final.pth").is_file()
    assert (base / "TinyTrainer__nnUNetPlans__3d_fullres" / "fold_0" / "validation" / "summary.json").is_file()


@pytest.mark.parametrize("config,folds", [("3d_fullres", ["0", "1"]), ("2d", ["0"])])
def test_predict_single_fold_and_ensemble(trained, tmp_path, config, folds):
    _predict(trained, config, folds, tmp_path / "pred")


@pytest.mark.parametrize("options, warm", [((*prediction_workers("cuda"), "--save_probabilities"), False),
                                           ((*PREDICT_ON_CPU, "--save_probabilities"), True)],
                         ids=["spawned_workers", "warm_launcher"])
def test_prediction_mode_gives_the_same_probabilities(trained, fold0_predictions, tmp_path, options, warm):
    """Against ``fold0_predictions`` (plain command, sequential mode: what the CPU tests and pipeline use), the same
    prediction must export the same probabilities and segmentations (an untrained model's segmentation may be all
    background, its probabilities are not constant) when made
    - with nnU-Net's spawned preprocessing/export workers (what the pipeline passes on a GPU), or
    - through the tests' warm launcher (what the other integration tests use)."""
    other = tmp_path / "other"
    _predict(trained, "3d_fullres", ["0"], other, options, warm=warm)
    for case in ("test_0000", "test_0001"):
        probabilities, reference = (np.load(folder / f"{case}.npz")["probabilities"]
                                    for folder in (other, fold0_predictions))
        assert probabilities.std() > 0 and np.array_equal(probabilities, reference)
        assert np.array_equal(read_image(other / f"{case}.nii.gz")[0],
                              read_image(fold0_predictions / f"{case}.nii.gz")[0])


def test_evaluate_predictions(trained, fold0_predictions):
    _run([_bin("nnunet-ext"), "evaluate", "-ref", str(trained["raw"] / "labelsTs"), "-pred", str(fold0_predictions)],
         trained["env"], trained["cwd"])
    summary = json.loads((fold0_predictions / "summary.json").read_text())
    assert {"Dice", "HD95", "ASD", "PPV", "SEN"} <= set(summary["mean"]["1"])


def test_plan_with_our_planner_through_nnunet_api(trained):
    _run([_bin("nnunet-ext"), "plan_and_preprocess", "-d", str(DATASET_ID), "-pl", "CPUPlanner", "--no_pp"],
         trained["env"], trained["cwd"])
    plans = json.loads((Path(trained["env"]["nnUNet_preprocessed"]) / f"Dataset{DATASET_ID:03d}_BreastDCE"
                        / "nnUNetPlansCPU.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert arch["features_per_stage"][0] == 16 and max(arch["features_per_stage"]) <= 128
    assert plans["configurations"]["3d_fullres"]["preprocessor_name"] == "DefaultPreprocessor"


def test_unknown_planner_is_one_line_error(trained):
    proc = _run([_bin("nnunet-ext"), "plan_and_preprocess", "-d", DATASET_ID, "-pl", "NoSuchPlanner", "--no_pp"],
                trained["env"], trained["cwd"], ok=False)
    assert proc.returncode != 0 and "planner 'NoSuchPlanner' not found" in proc.stderr.strip().splitlines()[-1]


def test_deterministic_option_gives_identical_weights(trained, tmp_path):
    """Two deterministic trainings, one plain and one through the tests' warm launcher, give identical weights."""
    import torch

    weights = []
    for run, warm in (("plain", False), ("warm", True)):
        env = {**trained["env"], "nnUNet_results": str(tmp_path / run), "nnUNet_ext_deterministic": "1",
               "nnUNet_ext_epochs": "1", "nnUNet_ext_val_iters": "1", "nnUNet_ext_skip_final_validation": "1"}
        proc = _run([_bin("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", "TinyTrainer", "-device", "cpu"],
                    env, trained["cwd"], warm=warm)
        assert proc.warm == warm, f"the warm launcher refused the command: {_WARM.last_refusal}"
        ckpt = next((tmp_path / run).rglob("checkpoint_final.pth"))
        weights.append(torch.load(ckpt, map_location="cpu", weights_only=False)["network_weights"])
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k
