"""FFPN and FFPN-R through nnU-Net's real commands on a tiny ultrasound_2d cardiac phantom (CPU; three classes, the
LV cavity inside the myocardium ring): nnUNetv2_train -tr FFPNTrainer_tiny and -tr FFPNRTrainer_tiny (fold 0),
nnUNetv2_predict --save_probabilities for each, and nnUNetv2_ensemble of the two, the path nnU-Net users take to
ensemble folds or models. The one-class fetal-head case runs through the same code with C = 1."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_ext.imageio import read_image
from tests.conftest import PREDICT_ON_CPU, nnunet_bin as _bin, run_command as _run, tiny_schedule_env

pytestmark = pytest.mark.slow
DATASET = 332
TRAINERS = ("FFPNTrainer_tiny", "FFPNRTrainer_tiny")


@pytest.fixture(scope="module")
def ffpn_run(tmp_path_factory):
    from nnunet_ext.synth.cli import synthesize

    root = tmp_path_factory.mktemp("ffpn")
    env = tiny_schedule_env(root / "ws")
    (raw,) = synthesize("ultrasound_2d", DATASET, cases=5, test_cases=2, seed=0, raw=env["nnUNet_raw"],
                        options={"shape": (48, 64), "scene": "cardiac"})
    _run([_bin("nnUNetv2_plan_and_preprocess"), "-d", DATASET, "-c", "2d", "-np", 1, "-npfp", 1], env, root)
    for trainer in TRAINERS:
        _run([_bin("nnUNetv2_train"), DATASET, "2d", 0, "-tr", trainer, "-device", "cpu"], env, root)
        _run([_bin("nnUNetv2_predict"), "-i", raw / "imagesTs", "-o", root / trainer, "-d", DATASET, "-c", "2d",
              "-f", 0, "-tr", trainer, "-device", "cpu", *PREDICT_ON_CPU, "--save_probabilities"], env, root)
    _run([_bin("nnUNetv2_ensemble"), "-i", *(root / t for t in TRAINERS), "-o", root / "ensemble", "-np", 1],
         env, root)
    return {"env": env, "root": root, "raw": raw}


@pytest.mark.parametrize("trainer", TRAINERS)
def test_anchors_are_fitted_on_the_fold_and_stored_in_the_checkpoint(ffpn_run, trainer):
    fold = next(Path(ffpn_run["env"]["nnUNet_results"]).glob(f"Dataset{DATASET}_*/{trainer}__nnUNetPlans__2d/fold_0"))
    stored = json.loads((fold / "ffpn_anchors.json").read_text())
    weights = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    np.testing.assert_allclose(weights["anchor_fractions"].numpy(), stored["fractions_of_input_size"], rtol=1e-6)
    assert np.abs(weights["anchor_fractions"].numpy()).max() > 0.01  # fitted, not the zero placeholder
    assert any(key.startswith("csr.") for key in weights) == (trainer == "FFPNRTrainer_tiny")
    # nnUNet_ext_skip_final_validation: the predictions below are the test; nnU-Net's validation run is skipped
    assert not (fold / "validation").exists()
    assert "final validation skipped" in next(fold.glob("training_log_*.txt")).read_text()


@pytest.mark.parametrize("output", [*TRAINERS, "ensemble"])
def test_predictions_and_their_ensemble_are_label_maps_of_the_input_geometry(ffpn_run, output):
    raw = ffpn_run["raw"]
    labels = set(json.loads((raw / "dataset.json").read_text())["labels"].values())
    for reference_path in sorted((raw / "labelsTs").iterdir()):
        prediction, prediction_geometry = read_image(ffpn_run["root"] / output / reference_path.name)
        reference, reference_geometry = read_image(reference_path)
        assert prediction.shape == reference.shape
        np.testing.assert_allclose(prediction_geometry, reference_geometry)
        assert set(np.unique(prediction)) <= labels
