"""The contrastive method through nnU-Net's real commands on a tiny bilateral breast_dce phantom with the SUB channel
(CPU): synth -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train TumorBgPretrainTrainer_small (fold 0) ->
TumorBgFusionTrainer_small (fold 0, finds the pretraining by the documented results path) -> nnUNetv2_predict; and
the one-line refusal of a missing pretraining checkpoint (the other refusals: test_trainers.py). ResFusion's nnU-Net
run is in tests/methods/resfusion/test_integration.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import PREDICT_ON_CPU, nnunet_bin as _bin, run_command as _run, tiny_schedule_env

pytestmark = pytest.mark.slow
DCE_ID = 471
PRETRAIN, FUSION = "TumorBgPretrainTrainer_small", "TumorBgFusionTrainer_small"


def _train(env, cwd, trainer, fold=0, ok=True):
    return _run([_bin("nnUNetv2_train"), DCE_ID, "3d_fullres", fold, "-tr", trainer, "-device", "cpu"], env, cwd,
                ok=ok)


@pytest.fixture(scope="module")
def dce_run(tmp_path_factory):
    from nnunet_ext.synth.cli import synthesize

    root = tmp_path_factory.mktemp("contrastive")
    env = tiny_schedule_env(root / "ws")
    (dce,) = synthesize("breast_dce", DCE_ID, cases=6, test_cases=2, seed=0, raw=env["nnUNet_raw"],
                        options={"shape": (16, 24, 48), "n_post": 1, "bilateral": True, "subtraction": True})
    _run([_bin("nnUNetv2_plan_and_preprocess"), "-d", DCE_ID, "-c", "3d_fullres", "-np", 1, "-npfp", 1], env, root)
    for trainer in (PRETRAIN, FUSION):
        _train(env, root, trainer)
    return {"env": env, "root": root, "dce": dce, "results": Path(env["nnUNet_results"])}


def _checkpoint(run, trainer, fold=0) -> Path:
    return next(run["results"].glob(f"Dataset{DCE_ID}_*/{trainer}__*/fold_{fold}/checkpoint_final.pth"))


def test_pretraining_records_its_cases_and_the_fusion_carries_both_encoders(dce_run):
    pretrain = torch.load(_checkpoint(dce_run, PRETRAIN), map_location="cpu", weights_only=False)
    cases = pretrain["pretraining_cases"]
    assert cases and json.loads((_checkpoint(dce_run, PRETRAIN).parent / "pretraining_cases.json").read_text())[
        "cases"] == cases
    fusion = torch.load(_checkpoint(dce_run, FUSION), map_location="cpu", weights_only=False)["network_weights"]
    encoder = {k[len("encoder."):]: v for k, v in pretrain["network_weights"].items() if k.startswith("encoder.")}
    for key, value in encoder.items():  # the frozen copy is the pretrained encoder, unchanged by training
        assert torch.equal(fusion["frozen_encoder." + key], value), key
    log = next(_checkpoint(dce_run, PRETRAIN).parent.glob("training_log_*.txt")).read_text()
    assert "Eq. 1 terms (train): positive_term" in log and "cos_real_neg" in log


def test_fusion_trainer_predicts_with_nnunet(dce_run, tmp_path):
    env = {k: v for k, v in dce_run["env"].items() if k != "nnUNet_ext_contrastive_checkpoint"}
    _run([_bin("nnUNetv2_predict"), "-i", dce_run["dce"] / "imagesTs", "-o", tmp_path / "pred", "-d", DCE_ID, "-c",
          "3d_fullres", "-f", 0, "-tr", FUSION, "-device", "cpu", "--disable_tta", *PREDICT_ON_CPU], env,
         tmp_path)
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz")) == ["test_0000.nii.gz", "test_0001.nii.gz"]


def test_missing_pretraining_is_a_one_line_error(dce_run, tmp_path):
    env = {**dce_run["env"], "nnUNet_results": str(tmp_path / "results")}
    proc = _train(env, tmp_path, "SimSiamInitTrainer_small", ok=False)
    assert proc.returncode != 0
    message = proc.stderr + proc.stdout
    assert "pretrained encoder checkpoint not found" in message and "-tr SimSiamPretrainTrainer_small" in message

