"""HCNet through nnU-Net's real commands on a tiny breast_dce phantom (CPU): synth (pre + 4 post phases, breast masks)
-> nnunet-ext hcnet cluster -> plan -> nnUNetv2_train HIPM (fold all) -> nnUNetv2_train HCNet (folds 0 and 1) ->
nnUNetv2_predict on pre-contrast-only images (one fold and the 2-fold ensemble) -> nnunet-ext evaluate; and the
refusals of a missing HIPM, a HIPM of another K and a HIPM of differently preprocessed images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_ext.imageio import read_image
from tests.conftest import PREDICT_ON_CPU, nnunet_bin as _bin, run_command as _run, tiny_schedule_env

pytestmark = pytest.mark.slow
DCE_ID, PRE_ID, MAP_ID = 331, 332, 333
TRAINER, HIPM = "HCNetTrainer_small", "HCNetHIPMTrainer_small"


@pytest.fixture(scope="module")
def hcnet_run(tmp_path_factory):
    from nnunet_ext.synth.cli import synthesize

    root = tmp_path_factory.mktemp("hcnet")
    env = tiny_schedule_env(root / "ws")
    dce, pre = synthesize("breast_dce", DCE_ID, cases=5, test_cases=2, seed=0, raw=env["nnUNet_raw"],
                          pre_only_id=PRE_ID, options={"shape": (16, 32, 32), "n_post": 4, "masks_in_extras": True})
    _run([_bin("nnunet-ext"), "hcnet", "cluster", "-d", DCE_ID, "-o", MAP_ID, "-K", 10, "--preset", "small"], env,
         root)
    _run([_bin("nnUNetv2_plan_and_preprocess"), "-d", MAP_ID, PRE_ID, "-c", "3d_fullres", "-np", 1, "-npfp", 1],
         env, root)
    _run([_bin("nnUNetv2_train"), MAP_ID, "3d_fullres", "all", "-tr", HIPM, "-device", "cpu"], env, root)
    env["nnUNet_ext_hcnet_map_dataset"] = str(MAP_ID)
    for fold in (0, 1):
        _run([_bin("nnUNetv2_train"), PRE_ID, "3d_fullres", fold, "-tr", TRAINER, "-device", "cpu"], env, root)
    return {"env": env, "root": root, "dce": dce, "pre": pre,
            "map": next(Path(env["nnUNet_raw"]).glob(f"Dataset{MAP_ID}_*"))}


def test_cluster_writes_the_map_dataset_and_its_figures(hcnet_run):
    folder = hcnet_run["map"]
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "pre"} and len(meta["labels"]) == 11
    assert meta["hcnet_clustering"]["source_dataset"] == hcnet_run["dce"].name
    for name in ("clustering.json", "vqvae.pt", "cluster_curves.png", "cluster_shares.png"):
        assert (folder / "clustering" / name).stat().st_size > 0, name
    label, _ = read_image(folder / "labelsTr" / "case_0000.nii.gz")
    breast, _ = read_image(hcnet_run["dce"] / "extrasTr" / "case_0000_breast.nii.gz")
    assert np.array_equal(label > 0, breast > 0) and label.max() <= 10  # clusters 1..K inside the ROI only
    image = (folder / "imagesTr" / "case_0000_0000.nii.gz").read_bytes()
    assert image == (hcnet_run["dce"] / "imagesTr" / "case_0000_0000.nii.gz").read_bytes()  # the pre image itself


def test_hcnet_checkpoint_carries_the_frozen_hipm(hcnet_run):
    results = Path(hcnet_run["env"]["nnUNet_results"])
    hcnet = torch.load(next(results.glob(f"Dataset{PRE_ID}_*/{TRAINER}__*/fold_0/checkpoint_final.pth")),
                       map_location="cpu", weights_only=False)["network_weights"]
    hipm = torch.load(next(results.glob(f"Dataset{MAP_ID}_*/{HIPM}__*/fold_all/checkpoint_final.pth")),
                      map_location="cpu", weights_only=False)["network_weights"]
    for key, value in hipm.items():  # frozen: identical to the trained HIPM after HCNet training
        assert torch.equal(hcnet["hipm." + key], value), key


@pytest.mark.parametrize("folds", [["0"], ["0", "1"]])
def test_predict_from_pre_contrast_only_and_evaluate(hcnet_run, tmp_path, folds):
    inputs = hcnet_run["pre"] / "imagesTs"
    assert sorted(p.name for p in inputs.iterdir()) == ["test_0000_0000.nii.gz", "test_0001_0000.nii.gz"]
    env = {k: v for k, v in hcnet_run["env"].items() if not k.startswith("nnUNet_ext_hcnet")}  # needs no HIPM file
    _run([_bin("nnUNetv2_predict"), "-i", inputs, "-o", tmp_path / "pred", "-d", PRE_ID, "-c", "3d_fullres", "-f",
          *folds, "-tr", TRAINER, "-device", "cpu", "--disable_tta", *PREDICT_ON_CPU], env, tmp_path)
    _run([_bin("nnunet-ext"), "evaluate", "-ref", hcnet_run["pre"] / "labelsTs", "-pred", tmp_path / "pred", "-o",
          tmp_path / "metrics.json"], env, tmp_path)
    per_case = json.loads((tmp_path / "metrics.json").read_text())
    assert "test_0000" in json.dumps(per_case)


def _train_with_hipm(hcnet_run, tmp_path, checkpoint: Path) -> str:
    env = {**hcnet_run["env"], "nnUNet_results": str(tmp_path / "results"),
           "nnUNet_ext_hcnet_hipm_checkpoint": str(checkpoint)}
    proc = _run([_bin("nnUNetv2_train"), PRE_ID, "3d_fullres", 0, "-tr", TRAINER, "-device", "cpu"], env, tmp_path,
                ok=False)
    assert proc.returncode != 0
    return proc.stderr + proc.stdout


def _edited_hipm(hcnet_run, tmp_path, edit) -> Path:
    results = Path(hcnet_run["env"]["nnUNet_results"])
    checkpoint = torch.load(next(results.glob(f"Dataset{MAP_ID}_*/{HIPM}__*/fold_all/checkpoint_final.pth")),
                            map_location="cpu", weights_only=False)
    edit(checkpoint["init_args"])
    path = tmp_path / "hipm.pth"
    torch.save(checkpoint, path)
    return path


def test_missing_hipm_is_a_clear_error(hcnet_run, tmp_path):
    assert "HIPM checkpoint not found" in _train_with_hipm(hcnet_run, tmp_path, tmp_path / "none.pth")


def test_hipm_of_another_k_is_refused(hcnet_run, tmp_path):
    def three_clusters(init_args):
        init_args["dataset_json"]["labels"] = {"background": 0, "a": 1, "b": 2, "c": 3}

    message = _train_with_hipm(hcnet_run, tmp_path, _edited_hipm(hcnet_run, tmp_path, three_clusters))
    assert "predicts K = 3 clusters" in message and "expects K = 10" in message


def test_hipm_of_other_preprocessing_is_refused(hcnet_run, tmp_path):
    def other_spacing(init_args):
        init_args["plans"]["configurations"]["3d_fullres"]["spacing"] = [1.0, 1.0, 1.0]

    message = _train_with_hipm(hcnet_run, tmp_path, _edited_hipm(hcnet_run, tmp_path, other_spacing))
    assert "saw differently preprocessed images" in message and "target spacing" in message
