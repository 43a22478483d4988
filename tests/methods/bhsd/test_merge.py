"""Merging one-class predictions into a multi-class map (BHSD Table 3): rules on hand-made maps, folders, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.errors import UserInputError
from nnunet_ext.methods.bhsd.merge import merge_by_priority, merge_by_probability, merge_folders


def test_probability_rule_takes_the_most_confident_class_above_one_half():
    p = {1: np.array([0.9, 0.6, 0.2, 0.4]), 3: np.array([0.7, 0.8, 0.1, 0.5])}
    # voxel 0: both fire, class 1 more confident; voxel 1: class 3; voxel 2: none; voxel 3: 0.5 is not > 0.5
    assert merge_by_probability(p).tolist() == [1, 3, 0, 0]


def test_priority_rule_gives_overlaps_to_the_first_listed_class():
    maps = {2: np.array([1, 1, 0, 0]), 5: np.array([1, 0, 1, 0])}
    assert merge_by_priority(maps, [5, 2]).tolist() == [5, 2, 5, 0]
    assert merge_by_priority(maps, [2, 5]).tolist() == [2, 2, 5, 0]


def _prediction_folder(root, label, masks, probabilities=None, spacing=(5.0, 0.5, 0.5)):
    """An nnUNetv2_predict-like folder of a BHSDSingleClassTrainer model of class ``label`` (maps of 0/1)."""
    folder = root / f"class{label}"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, f"c{label}": 1},
                                                     "nnunet_ext_single_class": {"name": f"c{label}", "value": label}}))
    for case, mask in masks.items():
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.SetSpacing(tuple(reversed(spacing)))
        sitk.WriteImage(image, str(folder / f"{case}.nii.gz"))
        if probabilities is not None:
            np.savez_compressed(folder / f"{case}.npz", probabilities=probabilities[case].astype(np.float16))
    return folder


@pytest.fixture
def two_models(tmp_path):
    shape = (2, 3, 3)
    mask_a, mask_b = np.zeros(shape, bool), np.zeros(shape, bool)
    mask_a[0, :2, :2] = True
    mask_b[0, 1:, 1:] = True  # overlaps mask_a at [0, 1, 1]
    prob_a = np.where(mask_a, 0.9, 0.1)
    prob_b = np.where(mask_b, 0.6, 0.1)
    prob_b[0, 1, 1] = 0.95     # class 4 is surer at the overlap
    # softmax export of a binary model: background and foreground channels
    a = _prediction_folder(tmp_path, 2, {"case1": mask_a}, {"case1": np.stack([1 - prob_a, prob_a])})
    b = _prediction_folder(tmp_path, 4, {"case1": mask_b}, {"case1": np.stack([1 - prob_b, prob_b])})
    return a, b, mask_a, mask_b


@pytest.mark.parametrize("rule,overlap", [("probability", 4), ("priority", 2)])
def test_merge_folders_writes_multi_class_maps_with_the_inputs_geometry(tmp_path, two_models, rule, overlap):
    a, b, mask_a, mask_b = two_models
    names = merge_folders([a, b], tmp_path / "merged", rule=rule)
    assert names == ["case1.nii.gz"]
    image = sitk.ReadImage(str(tmp_path / "merged" / "case1.nii.gz"))
    merged = sitk.GetArrayFromImage(image)
    assert image.GetSpacing() == pytest.approx((0.5, 0.5, 5.0))
    assert merged[0, 1, 1] == overlap
    assert (merged[mask_a & ~mask_b] == 2).all() and (merged[mask_b & ~mask_a] == 4).all()
    assert (merged[~mask_a & ~mask_b] == 0).all()
    assert json.loads((tmp_path / "merged" / "merge.json").read_text())["rule"] == rule


@pytest.mark.parametrize("problem,message", [
    ("same_class", "two folders hold the same class"),
    ("no_npz", "needs .*case1.npz"),
    ("other_cases", "hold different cases"),
    ("one_folder", "at least two"),
    ("bad_priority", "must list each class"),
    ("no_dataset_json", "has no dataset.json"),
    ("region_of_two_labels", "region .* of several labels"),
])
def test_merge_errors_name_the_problem_and_write_nothing(tmp_path, two_models, problem, message):
    a, b, mask_a, _ = two_models
    inputs, kwargs = [a, b], {}
    if problem == "same_class":
        (b / "dataset.json").write_text((a / "dataset.json").read_text())
    elif problem == "no_npz":
        (b / "case1.npz").unlink()
    elif problem == "other_cases":
        (b / "case1.nii.gz").rename(b / "case2.nii.gz")
    elif problem == "one_folder":
        inputs = [a]
    elif problem == "bad_priority":
        kwargs = {"rule": "priority", "priority": [2, 3]}
    elif problem == "no_dataset_json":
        (a / "dataset.json").unlink()
    elif problem == "region_of_two_labels":
        (a / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "bleed": [1, 2]}}))
    with pytest.raises(UserInputError, match=message):
        merge_folders(inputs, tmp_path / "merged", **kwargs)
    assert not (tmp_path / "merged").exists()


def test_reference_adds_each_one_class_models_own_dice(tmp_path, two_models):
    a, b, mask_a, mask_b = two_models
    reference = tmp_path / "ref"
    reference.mkdir()
    truth = np.zeros(mask_a.shape, np.uint8)
    truth[mask_a] = 2                   # class 2 exactly as its model predicts
    truth[0, 0, 2] = 4                  # class 4: one true voxel outside its model's 3 voxels
    image = sitk.GetImageFromArray(truth)
    image.SetSpacing((0.5, 0.5, 5.0))
    sitk.WriteImage(image, str(reference / "case1.nii.gz"))
    merge_folders([a, b], tmp_path / "merged", reference=reference)
    record = json.loads((tmp_path / "merged" / "merge.json").read_text())
    # class 2: the model's 4 voxels vs the 4 reference voxels -> 1; class 4: 0 overlap -> 0
    assert record["Dice_1class_c2"] == pytest.approx(1.0) and record["Dice_1class_c4"] == pytest.approx(0.0)
    assert record["per_case"]["case1"] == {"Dice_1class_c2": pytest.approx(1.0), "Dice_1class_c4": 0.0}


def test_reference_without_the_case_is_refused(tmp_path, two_models):
    a, b, _, _ = two_models
    (tmp_path / "ref").mkdir()
    with pytest.raises(UserInputError, match="no reference case1.nii.gz"):
        merge_folders([a, b], tmp_path / "merged", reference=tmp_path / "ref")
    assert not (tmp_path / "merged").exists()
