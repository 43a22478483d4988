"""DKM through nnU-Net's real commands on a tiny breast_dce phantom (CPU): DM on the DCE dataset (fold all),
SM on the pre-contrast-only dataset (folds 0 and 1), nnUNetv2_predict on pre-contrast-only inputs (single fold and
the 2-fold ensemble), nnunet-ext dkm synthesize-post."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_ext.imageio import read_image
from tests.conftest import PREDICT_ON_CPU, nnunet_bin as _bin, run_command as _run, tiny_schedule_env

pytestmark = pytest.mark.slow
DCE_ID, PRE_ID = 321, 322


@pytest.fixture(scope="module")
def dkm_run(tmp_path_factory):
    from nnunet_ext.synth.cli import synthesize

    root = tmp_path_factory.mktemp("dkm")
    env = tiny_schedule_env(root / "ws", final_validation=True)
    dce, pre = synthesize("breast_dce", DCE_ID, cases=5, test_cases=2, seed=0, raw=env["nnUNet_raw"],
                          pre_only_id=PRE_ID, options={"shape": (16, 32, 32)})
    _run([_bin("nnUNetv2_plan_and_preprocess"), "-d", DCE_ID, PRE_ID, "-c", "3d_fullres", "-np", 1, "-npfp", 1],
         env, root)
    _run([_bin("nnUNetv2_train"), DCE_ID, "3d_fullres", "all", "-tr", "DKMDiffusionTrainer_small", "-device", "cpu"],
         env, root)
    for fold in (0, 1):  # the DM's validation (post synthesis) is tested; the SMs' is plain nnU-Net's: skipped
        _run([_bin("nnUNetv2_train"), PRE_ID, "3d_fullres", fold, "-tr", "DKMTrainer_small", "-device", "cpu"],
             {**env, "nnUNet_ext_skip_final_validation": "1"}, root)
    return {"env": env, "root": root, "dce": dce, "pre": pre}


def test_dm_validation_reports_post_synthesis(dkm_run):
    summary = next(Path(dkm_run["env"]["nnUNet_results"]).glob(
        "Dataset321_*/DKMDiffusionTrainer_small__nnUNetPlans__3d_fullres/fold_all/validation/summary.json"))
    mean = json.loads(summary.read_text())["post_synthesis_mean"]
    assert np.isfinite(mean["PSNR"]) and -1 <= mean["SSIM"] <= 1


def test_sm_checkpoint_carries_the_frozen_dm(dkm_run):
    results = Path(dkm_run["env"]["nnUNet_results"])
    sm = torch.load(next(results.glob("Dataset322_*/DKMTrainer_small__*/fold_0/checkpoint_final.pth")),
                    map_location="cpu", weights_only=False)["network_weights"]
    dm = torch.load(next(results.glob("Dataset321_*/DKMDiffusionTrainer_small__*/fold_all/checkpoint_final.pth")),
                    map_location="cpu", weights_only=False)["network_weights"]
    for key, value in dm.items():  # frozen: identical to the pretrained DM after SM training
        assert torch.equal(sm["dm." + key], value), key


@pytest.mark.parametrize("folds", [["0"], ["0", "1"]])
def test_predict_from_pre_contrast_only(dkm_run, tmp_path, folds):
    inputs = dkm_run["pre"] / "imagesTs"
    assert sorted(p.name for p in inputs.iterdir()) == ["test_0000_0000.nii.gz", "test_0001_0000.nii.gz"]
    _run([_bin("nnUNetv2_predict"), "-i", inputs, "-o", tmp_path / "pred", "-d", PRE_ID, "-c", "3d_fullres", "-f",
          *folds, "-tr", "DKMTrainer_small", "-device", "cpu", "--disable_tta", *PREDICT_ON_CPU],
         dkm_run["env"], tmp_path)
    for case in ("test_0000", "test_0001"):
        pred, _ = read_image(tmp_path / "pred" / f"{case}.nii.gz")
        ref, _ = read_image(dkm_run["pre"] / "labelsTs" / f"{case}.nii.gz")
        assert pred.shape == ref.shape and set(np.unique(pred)) <= {0, 1}


def test_synthesize_post_cli(dkm_run, tmp_path):
    _run([_bin("nnunet-ext"), "dkm", "synthesize-post", "-i", dkm_run["dce"] / "imagesTs", "-o", tmp_path / "post",
          "-d", DCE_ID, "-p", "nnUNetPlans", "--reference", dkm_run["dce"] / "imagesTs"], dkm_run["env"], tmp_path)
    post, _ = read_image(tmp_path / "post" / "test_0000.nii.gz")
    pre, _ = read_image(dkm_run["dce"] / "imagesTs" / "test_0000_0000.nii.gz")
    assert post.shape == pre.shape and np.isfinite(post).all()
    assert set(json.loads((tmp_path / "post" / "metrics.json").read_text())["per_case"]) == {"test_0000", "test_0001"}


def test_missing_dm_checkpoint_is_a_clear_error(dkm_run, tmp_path):
    env = {**dkm_run["env"], "nnUNet_results": str(tmp_path), "nnUNet_ext_dkm_dm_checkpoint": str(tmp_path / "no.pth")}
    proc = _run([_bin("nnUNetv2_train"), PRE_ID, "3d_fullres", 0, "-tr", "DKMTrainer_small", "-device", "cpu"],
                env, tmp_path, ok=False)
    assert proc.returncode != 0 and "diffusion module checkpoint not found" in proc.stderr + proc.stdout


def test_diffusion_trainer_refuses_single_channel_dataset(dkm_run, tmp_path):
    env = {**dkm_run["env"], "nnUNet_results": str(tmp_path)}
    proc = _run([_bin("nnUNetv2_train"), PRE_ID, "3d_fullres", 0, "-tr", "DKMDiffusionTrainer_small", "-device",
                 "cpu"], env, tmp_path, ok=False)
    assert proc.returncode != 0 and "needs a DCE dataset" in proc.stderr + proc.stdout
