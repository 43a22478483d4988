"""Mammo-SAM through nnU-Net's real commands on a tiny ``mammo_2d`` phantom (CPU), as the phantom benchmark runs it:
``nnUNetv2_train -tr MammoSAMPretrainTrainer_tiny`` (the stand-in foundation encoder) -> ``nnunet-ext mammo-sam
export-encoder`` -> ``nnUNetv2_train`` of ``MammoSAMTrainer_tiny`` (folds 0 and 1) and of the Freeze Encoder row
(fold 0) from that SAM-format file -> ``nnUNetv2_predict`` with the SAM file gone (the 2-fold ensemble and the
SAM-decoder path) and the benchmark's scoring command (:mod:`nnunet_ext.methods.mammo_sam.bench`, fold 0, film and
digital test sets)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_ext.imageio import read_image
from tests.conftest import PREDICT_ON_CPU, nnunet_bin as _bin, run_command as _run, tiny_schedule_env

pytestmark = pytest.mark.slow
DATASET = 371
PRETRAIN = "MammoSAMPretrainTrainer_tiny"
# the SAM-decoder path; the other ablations differ from these two only in settings (tests/test_trainer_conformance.py
# checks that claim and runs every one by name; the benchmark trains each through nnUNetv2_train)
ABLATIONS = ("MammoSAMTrainer_tiny_FreezeEncoder",)
TRAINER = "MammoSAMTrainer_tiny"


@pytest.fixture(scope="module")
def mammo_run(tmp_path_factory):
    from nnunet_ext.synth.cli import synthesize

    root = tmp_path_factory.mktemp("mammo_sam")
    env = tiny_schedule_env(root / "ws")
    env.pop("nnUNet_ext_sam_checkpoint", None)
    options = {"shape": (64, 48), "no_mass_fraction": 0.0}
    (raw,) = synthesize("mammo_2d", DATASET, cases=5, test_cases=2, seed=0, raw=env["nnUNet_raw"], options=options)
    (digital,) = synthesize("mammo_2d", DATASET + 1, cases=1, test_cases=2, seed=0, raw=env["nnUNet_raw"],
                            options={**options, "style": "digital"})
    _run([_bin("nnUNetv2_plan_and_preprocess"), "-d", DATASET, "-c", "2d", "-np", 1, "-npfp", 1], env, root)
    _run([_bin("nnUNetv2_train"), DATASET, "2d", 0, "-tr", PRETRAIN, "-device", "cpu"], env, root)
    sam_file = root / "sam_tiny.pth"
    _run([_bin("nnunet-ext"), "mammo-sam", "export-encoder", "-i", _model(env, PRETRAIN) / "fold_0" /
          "checkpoint_final.pth", "-o", sam_file], env, root)
    train_env = {**env, "nnUNet_ext_sam_checkpoint": str(sam_file), "nnUNet_ext_mammo_sam_augmentation": "flips"}
    for trainer, fold in [(TRAINER, 0), (TRAINER, 1), *((t, 0) for t in ABLATIONS)]:
        _run([_bin("nnUNetv2_train"), DATASET, "2d", fold, "-tr", trainer, "-device", "cpu"], train_env, root)
    os.replace(sam_file, root / "moved_away.pth")  # prediction must not need the SAM file
    outputs = {}
    # the ablations' predictions share the code of these two (multi-level decoder; SAM decoder)
    for trainer, folds in [(TRAINER, ["0", "1"]), ("MammoSAMTrainer_tiny_FreezeEncoder", ["0"])]:
        outputs[(trainer, tuple(folds))] = root / f"pred_{trainer}_{'_'.join(folds)}"
        _run([_bin("nnUNetv2_predict"), "-i", raw / "imagesTs", "-o", outputs[(trainer, tuple(folds))], "-d",
              DATASET, "-c", "2d", "-f", *folds, "-tr", trainer, "-device", "cpu", *PREDICT_ON_CPU], env, root)
    scores = root / "bench.json"
    _run([sys.executable, "-m", "nnunet_ext.methods.mammo_sam.bench", "--model", _model(env, TRAINER), "--fold", 0,
          "--set", "in_domain", raw, "--set", "shifted", digital, "-o", scores], env, root)
    return {"env": env, "root": root, "raw": raw, "digital": digital, "outputs": outputs,
            "moved": root / "moved_away.pth", "scores": json.loads(scores.read_text())}


def _model(env, trainer: str) -> Path:
    return next(Path(env["nnUNet_results"]).glob(f"Dataset{DATASET}_*/{trainer}__nnUNetPlans__2d"))


def test_exported_encoder_is_the_pretrained_one(mammo_run):
    pretrained = torch.load(_model(mammo_run["env"], PRETRAIN) / "fold_0" / "checkpoint_final.pth",
                            map_location="cpu", weights_only=False)["network_weights"]
    exported = torch.load(mammo_run["moved"], weights_only=True)
    assert set(exported) == {k for k in pretrained if k.startswith("image_encoder.")}
    np.testing.assert_allclose(exported["image_encoder.patch_embed.proj.weight"].sum(1, keepdim=True).numpy(),
                               pretrained["image_encoder.patch_embed.proj.weight"].numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("trainer", [TRAINER, *ABLATIONS])
def test_training_started_from_the_file_and_kept_the_encoder_frozen(mammo_run, trainer):
    fold = _model(mammo_run["env"], trainer) / "fold_0"
    record = json.loads((fold / "sam_weights.json").read_text())
    assert Path(record["path"]).name == "sam_tiny.pth" and record["parts"] == ["image_encoder"]
    exported = torch.load(mammo_run["moved"], weights_only=True)
    trained = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    for key, value in exported.items():
        if key != "image_encoder.patch_embed.proj.weight":
            assert torch.equal(trained[key], value), key
    assert any(key.startswith("adapters.") for key in trained) == (not trainer.endswith(("NoAdapter",
                                                                                         "FreezeEncoder")))
    assert any(key.startswith("mask_decoder.") for key in trained) == trainer.endswith(("SAMDecoder",
                                                                                         "FreezeEncoder"))


def test_predictions_and_the_fold_ensemble_are_label_maps_of_the_input_geometry(mammo_run):
    for output in mammo_run["outputs"].values():
        for reference_path in sorted((mammo_run["raw"] / "labelsTs").iterdir()):
            prediction, prediction_geometry = read_image(output / reference_path.name)
            reference, reference_geometry = read_image(reference_path)
            assert prediction.shape == reference.shape
            np.testing.assert_allclose(prediction_geometry, reference_geometry)
            assert set(np.unique(prediction)) <= {0, 1}


def test_bench_means_are_the_means_of_the_cases(mammo_run):
    scores = mammo_run["scores"]
    assert set(scores["per_case"]) == {"test_0000", "test_0001"}
    for name in ("in_domain", "shifted"):
        for metric in ("Dice", "IoU", "precision", "recall"):
            values = [case[f"{name}_{metric}"] for case in scores["per_case"].values()]
            assert not np.isnan(values).any()  # every image has a mass: all four metrics are defined
            assert scores[f"{name}_{metric}"] == pytest.approx(np.mean(values))
    tiny = torch.load(_model(mammo_run["env"], TRAINER) / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                      weights_only=False)["network_weights"]
    trainable = sum(v.numel() for k, v in tiny.items() if k.split(".")[0] in ("adapters", "decoder")
                    and not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert scores["trainable_params"] == trainable


def test_bench_camouflaged_dice_covers_exactly_the_cases_with_a_camouflaged_mass(mammo_run):
    for name, raw in (("in_domain", mammo_run["raw"]), ("shifted", mammo_run["digital"])):
        expected = {case for case in mammo_run["scores"]["per_case"]
                    if read_image(raw / "extrasTs" / f"{case}_camouflaged.nii.gz")[0].any()}
        got = {case for case, values in mammo_run["scores"]["per_case"].items()
               if f"{name}_camouflaged_Dice" in values}
        assert got == expected
