"""HCNet benchmark tools: HIPM scores (Sect. 3.2) pooled over cases against scikit-learn; the post + subtraction
reference dataset against the raw phases."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from sklearn.metrics import balanced_accuracy_score, jaccard_score

from nnunet_ext.imageio import read_image, write_image
from nnunet_ext.methods.hcnet.bench import hipm_scores, write_postsub_dataset


def test_hipm_scores_pool_the_cases_as_scikit_learn_would(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    truths, predictions = [], []
    for case in ("a", "b"):
        truth = rng.integers(0, 4, (3, 5, 5)).astype(np.uint8)
        predicted = np.where(rng.uniform(size=truth.shape) < 0.6, truth, rng.integers(0, 4, truth.shape)).astype(
            np.uint8)
        write_image(tmp_path / "ref" / f"{case}.nii.gz", truth, (1.0, 1.0, 1.0))
        write_image(tmp_path / "pred" / f"{case}.nii.gz", predicted, (1.0, 1.0, 1.0))
        truths.append(truth.ravel())
        predictions.append(predicted.ravel())
    scores = hipm_scores(tmp_path / "pred", tmp_path / "ref", n_clusters=3)
    truth, predicted = np.concatenate(truths), np.concatenate(predictions)
    assert scores["mean_accuracy"] == pytest.approx(balanced_accuracy_score(truth, predicted))
    assert scores["mean_iou"] == pytest.approx(jaccard_score(truth, predicted, average="macro"))
    assert scores["per_case"]["b"]["mean_iou"] == pytest.approx(
        jaccard_score(truths[1], predictions[1], average="macro"))


def test_postsub_is_post1_and_post1_minus_pre_of_the_labelled_cases(tmp_path):
    from nnunet_ext.synth.cli import synthesize

    synthesize("breast_dce", 71, cases=3, test_cases=1, raw=tmp_path, labeled_cases=2,
               options={"shape": (8, 16, 16)})
    source = tmp_path / "Dataset071_BreastDCE"
    out = write_postsub_dataset(str(source), 72)
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["case_0000.nii.gz", "case_0001.nii.gz"]
    assert json.loads((out / "dataset.json").read_text())["channel_names"] == {"0": "post1", "1": "sub"}
    for split, case in (("Tr", "case_0001"), ("Ts", "test_0000")):
        pre, _ = read_image(source / f"images{split}" / f"{case}_0000.nii.gz")
        post, _ = read_image(source / f"images{split}" / f"{case}_0001.nii.gz")
        np.testing.assert_array_equal(read_image(out / f"images{split}" / f"{case}_0000.nii.gz")[0], post)
        np.testing.assert_allclose(read_image(out / f"images{split}" / f"{case}_0001.nii.gz")[0], post - pre,
                                   rtol=1e-6)
        geometry = sitk.ReadImage(str(out / f"images{split}" / f"{case}_0001.nii.gz"))
        assert geometry.GetSpacing() == sitk.ReadImage(str(source / f"images{split}" / f"{case}_0000.nii.gz")
                                                       ).GetSpacing()
