"""BHSD through nnU-Net's real commands on a tiny head_ct_ich phantom (CPU): ``nnunet-ext plan_and_preprocess -pl
BHSDCPUPlanner`` (the paper's CT window), ``nnUNetv2_train -tr BHSDTrainer_allneg`` / ``-tr CPSTrainer`` (fold 0,
unlabeled pool from ``synth --labeled_cases``) / two ``BHSDSingleClassTrainer_X`` models, ``nnUNetv2_predict``
(``--save_probabilities`` for the one-class models) and ``nnunet-ext bhsd merge``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_ext.imageio import read_image
from tests.conftest import PREDICT_ON_CPU, nnunet_bin as _bin, run_command as _run, tiny_schedule_env

pytestmark = pytest.mark.slow
DATASET = 343
PLANS = "nnUNetPlansBHSDCPU"
TRAINERS = ("BHSDTrainer_allneg", "CPSTrainer", "BHSDSingleClassTrainer_IPH", "BHSDSingleClassTrainer_SDH")


@pytest.fixture(scope="module")
def bhsd_run(tmp_path_factory):
    from nnunet_ext.synth.cli import synthesize

    root = tmp_path_factory.mktemp("bhsd")
    env = tiny_schedule_env(root / "ws")
    # 10 scans, the last 3 without labels (the CPS pool); about half of the rest without bleeding (negatives)
    (raw,) = synthesize("head_ct_ich", DATASET, cases=10, test_cases=2, seed=3, raw=env["nnUNet_raw"],
                        labeled_cases=7, options={"shape": (16, 32, 32), "negative_fraction": 0.5})
    _run([_bin("nnunet-ext"), "plan_and_preprocess", "-d", DATASET, "-pl", "BHSDCPUPlanner", "-c", "3d_fullres"],
         env, root)
    for trainer in TRAINERS:
        _run([_bin("nnUNetv2_train"), DATASET, "3d_fullres", 0, "-tr", trainer, "-p", PLANS, "-device", "cpu"],
             env, root)
        extra = ["--save_probabilities"] if "SingleClass" in trainer else []
        _run([_bin("nnUNetv2_predict"), "-i", raw / "imagesTs", "-o", root / trainer, "-d", DATASET, "-c",
              "3d_fullres", "-f", 0, "-tr", trainer, "-p", PLANS, "-device", "cpu", *PREDICT_ON_CPU,
              "--disable_tta", *extra], env, root)
    _run([_bin("nnunet-ext"), "bhsd", "merge", "-i", root / TRAINERS[2], root / TRAINERS[3], "-o", root / "merged"],
         env, root)
    return {"env": env, "root": root, "raw": raw}


def _model(run, trainer: str) -> Path:
    return next(Path(run["env"]["nnUNet_results"]).glob(f"Dataset{DATASET}_*/{trainer}__{PLANS}__3d_fullres"))


def test_plans_hold_the_papers_window_and_preprocessing_applies_it(bhsd_run):
    import blosc2

    preprocessed = next(Path(bhsd_run["env"]["nnUNet_preprocessed"]).glob(f"Dataset{DATASET}_*"))
    plans = json.loads((preprocessed / f"{PLANS}.json").read_text())
    stats = plans["foreground_intensity_properties_per_channel"]["0"]
    assert (stats["percentile_00_5"], stats["percentile_99_5"], stats["mean"], stats["std"]) == (-40, 120, 40, 80)
    assert plans["configurations"]["3d_fullres"]["normalization_schemes"] == ["CTNormalization"]
    hu, _ = read_image(bhsd_run["raw"] / "imagesTr" / "case_0000_0000.nii.gz")
    data = blosc2.open(str(preprocessed / f"{PLANS}_3d_fullres" / "case_0000.b2nd"), mode="r")[:]
    # one spacing for all phantom scans and no zero voxels in CT: nothing is resampled or cropped (only transposed)
    expected = np.transpose((np.clip(hu, -40, 120) - 40) / 80, plans["transpose_forward"])
    np.testing.assert_allclose(data[0], expected, atol=1e-5)


def test_training_split_keeps_negatives_and_leaves_unlabeled_scans_out(bhsd_run):
    raw_json = json.loads((bhsd_run["raw"] / "dataset.json").read_text())
    unlabeled = set(raw_json["unlabeled_cases"])
    assert len(unlabeled) == 3
    for trainer, all_negatives in (("BHSDTrainer_allneg", True), ("CPSTrainer", False)):
        split = json.loads((_model(bhsd_run, trainer) / "fold_0" / "bhsd_split.json").read_text())
        assert not unlabeled & set(split["train"]) and not unlabeled & set(split["val"])
        assert split["unlabeled"] == sorted(unlabeled)
        assert len(split["negatives"]) == (split["available_negatives"] if all_negatives else 0)
        assert set(split["train"]) == set(split["bleeding"]) | set(split["negatives"])


def test_cps_checkpoint_holds_two_differently_initialised_networks(bhsd_run):
    weights = torch.load(_model(bhsd_run, "CPSTrainer") / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["network_weights"]
    a = {k[2:]: v for k, v in weights.items() if k.startswith("a.")}
    b = {k[2:]: v for k, v in weights.items() if k.startswith("b.")}
    assert a and a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    log = next((_model(bhsd_run, "CPSTrainer") / "fold_0").glob("training_log_*.txt")).read_text()
    assert "CPS weight" in log


@pytest.mark.parametrize("output", [*TRAINERS, "merged"])
def test_predictions_are_label_maps_of_the_input_geometry(bhsd_run, output):
    raw = bhsd_run["raw"]
    allowed = {"BHSDSingleClassTrainer_IPH": {0, 1}, "BHSDSingleClassTrainer_SDH": {0, 1}, "merged": {0, 2, 5}}
    for reference_path in sorted((raw / "labelsTs").iterdir()):
        prediction, spacing = read_image(bhsd_run["root"] / output / reference_path.name)
        reference, reference_spacing = read_image(reference_path)
        assert prediction.shape == reference.shape and np.allclose(spacing, reference_spacing)
        assert set(np.unique(prediction)) <= allowed.get(output, set(range(6)))


def test_one_class_models_record_their_class_and_the_merge_uses_it(bhsd_run):
    root = bhsd_run["root"]
    for trainer, value in (("BHSDSingleClassTrainer_IPH", 2), ("BHSDSingleClassTrainer_SDH", 5)):
        dataset_json = json.loads((root / trainer / "dataset.json").read_text())
        assert dataset_json["nnunet_ext_single_class"]["value"] == value
        assert dataset_json["labels"] == {"background": 0, dataset_json["nnunet_ext_single_class"]["name"]: 1}
    for name in sorted(p.name for p in (root / "merged").glob("*.nii.gz")):
        merged, _ = read_image(root / "merged" / name)
        iph, _ = read_image(root / "BHSDSingleClassTrainer_IPH" / name)
        sdh, _ = read_image(root / "BHSDSingleClassTrainer_SDH" / name)
        assert ((merged != 0) == ((iph != 0) | (sdh != 0))).all()  # every claimed voxel keeps a class
        assert (merged[(iph != 0) & (sdh == 0)] == 2).all() and (merged[(sdh != 0) & (iph == 0)] == 5).all()
