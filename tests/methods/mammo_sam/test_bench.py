"""Tests of nnunet_ext.methods.mammo_sam.bench: a trained model scored on two mammo_2d test sets, camouflaged cases
selected from the phantom's extras, trainable parameters from the network as its trainer builds it."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from nnunet_ext.imageio import read_image
from nnunet_ext.methods.mammo_sam import bench
from tests.conftest import nnunet_bin as _bin, run_command as _run

DATASET = 372


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    from nnunet_ext.env import environment
    from nnunet_ext.synth.cli import synthesize

    root = tmp_path_factory.mktemp("mammo_bench")
    env = {**os.environ, **environment(root / "ws", keep_existing=False), "nnUNet_ext_epochs": "1",
           "nnUNet_ext_iters": "1", "nnUNet_ext_val_iters": "1", "nnUNet_ext_skip_final_validation": "1"}
    options = {"shape": (64, 48), "no_mass_fraction": 0.0}
    (film,) = synthesize("mammo_2d", DATASET, cases=4, test_cases=3, seed=0, raw=env["nnUNet_raw"], options=options)
    (digital,) = synthesize("mammo_2d", DATASET + 1, cases=2, test_cases=3, seed=0, raw=env["nnUNet_raw"],
                            options={**options, "style": "digital"})
    _run([_bin("nnUNetv2_plan_and_preprocess"), "-d", DATASET, "-c", "2d", "-np", 1, "-npfp", 1], env, root)
    _run([_bin("nnUNetv2_train"), DATASET, "2d", "all", "-tr", "MammoSAMPretrainTrainer_tiny", "-device", "cpu"],
         env, root)
    model = next((root / "ws" / "nnUNet_results").glob(f"Dataset{DATASET}_*/MammoSAMPretrainTrainer_tiny__*"))
    out = root / "eval.json"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert bench.main(["--model", str(model), "--set", "in_domain", str(film), "--set", "shifted", str(digital),
                           "-o", str(out)]) == 0
    return {"result": json.loads(out.read_text()), "film": film, "digital": digital}


@pytest.mark.slow
def test_means_are_the_means_of_the_cases(scored):
    result = scored["result"]
    assert set(result["per_case"]) == {"test_0000", "test_0001", "test_0002"}
    for name in ("in_domain", "shifted"):
        for metric in ("Dice", "IoU", "precision", "recall"):
            values = [case[f"{name}_{metric}"] for case in result["per_case"].values()]
            assert not np.isnan(values).any()  # every image has a mass: all four metrics are defined
            assert result[f"{name}_{metric}"] == pytest.approx(np.mean(values))
    # the trained network is the pretraining one: its encoder trains too
    assert result["trainable_params"] > 500_000


@pytest.mark.slow
def test_camouflaged_dice_covers_exactly_the_cases_with_a_camouflaged_mass(scored):
    for name, raw in (("in_domain", scored["film"]), ("shifted", scored["digital"])):
        expected = {case for case in scored["result"]["per_case"]
                    if read_image(raw / "extrasTs" / f"{case}_camouflaged.nii.gz")[0].any()}
        assert bench.camouflaged_cases(raw) == expected
        got = {case for case, values in scored["result"]["per_case"].items() if f"{name}_camouflaged_Dice" in values}
        assert got == expected


def test_a_folder_that_is_no_model_is_refused(tmp_path):
    from nnunet_ext.errors import UserInputError

    with pytest.raises(UserInputError, match="not an nnU-Net model folder"):
        bench._model_identity(tmp_path)
