"""FFPN through nnU-Net's real commands on a tiny ultrasound_2d cardiac phantom (CPU; three classes, the LV cavity
inside the myocardium ring): nnUNetv2_train -tr FFPNTrainer_tiny on folds 0 and 1, nnUNetv2_predict with the 2-fold
ensemble. The one-class fetal-head case runs through the same code with C = 1."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_ext.imageio import read_image
from tests.conftest import nnunet_bin as _bin, run_command as _run

pytestmark = pytest.mark.slow
SCENES = {"cardiac": 332}


@pytest.fixture(scope="module")
def ffpn_run(tmp_path_factory):
    from nnunet_ext.env import environment
    from nnunet_ext.synth.cli import synthesize

    root = tmp_path_factory.mktemp("ffpn")
    env = {**os.environ, **environment(root / "ws", keep_existing=False), "nnUNet_ext_epochs": "1",
           "nnUNet_ext_iters": "2", "nnUNet_ext_val_iters": "1"}
    raw = {}
    for scene, dataset_id in SCENES.items():
        (raw[scene],) = synthesize("ultrasound_2d", dataset_id, cases=5, test_cases=2, seed=0, raw=env["nnUNet_raw"],
                                   options={"shape": (48, 64), "scene": scene})
    _run([_bin("nnUNetv2_plan_and_preprocess"), "-d", *SCENES.values(), "-c", "2d", "-np", 1, "-npfp", 1], env, root)
    for dataset_id in SCENES.values():
        for fold in (0, 1):
            _run([_bin("nnUNetv2_train"), dataset_id, "2d", fold, "-tr", "FFPNTrainer_tiny", "-device", "cpu"],
                 env, root)
    return {"env": env, "root": root, "raw": raw}


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_anchors_are_fitted_on_the_fold_and_stored_in_the_checkpoint(ffpn_run, scene):
    fold = next(Path(ffpn_run["env"]["nnUNet_results"]).glob(
        f"Dataset{SCENES[scene]}_*/FFPNTrainer_tiny__nnUNetPlans__2d/fold_0"))
    stored = json.loads((fold / "ffpn_anchors.json").read_text())
    weights = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    np.testing.assert_allclose(weights["anchor_fractions"].numpy(), stored["fractions_of_input_size"], rtol=1e-6)
    assert np.abs(weights["anchor_fractions"].numpy()).max() > 0.01  # fitted, not the zero placeholder


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_fold_ensemble_prediction_writes_label_maps_of_the_input_geometry(ffpn_run, tmp_path, scene):
    """``nnUNetv2_predict -f 0 1``: each fold's network, then nnU-Net's averaging (a single fold is the same path)."""
    folds = ["0", "1"]
    raw = ffpn_run["raw"][scene]
    labels = set(json.loads((raw / "dataset.json").read_text())["labels"].values())
    _run([_bin("nnUNetv2_predict"), "-i", raw / "imagesTs", "-o", tmp_path / "pred", "-d", SCENES[scene], "-c", "2d",
          "-f", *folds, "-tr", "FFPNTrainer_tiny", "-device", "cpu", "-npp", 1, "-nps", 1],
         ffpn_run["env"], tmp_path)
    for reference_path in sorted((raw / "labelsTs").iterdir()):
        prediction, prediction_geometry = read_image(tmp_path / "pred" / reference_path.name)
        reference, reference_geometry = read_image(reference_path)
        assert prediction.shape == reference.shape
        np.testing.assert_allclose(prediction_geometry, reference_geometry)
        assert set(np.unique(prediction)) <= labels
