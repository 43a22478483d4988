"""DKM enhancement analysis: analytic cases of the lesion-restricted agreement, and the folder reader."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import write_image
from nnunet_ext.methods.dkm.analysis import analyze_folder, enhancement_agreement
from nnunet_ext.methods.dkm.inference import zscore


def _images(seed=0, shape=(6, 10, 12)):
    rng = np.random.default_rng(seed)
    pre = rng.normal(0, 1, shape)
    lesion = np.zeros(shape, np.uint8)
    lesion[2:4, 3:7, 4:9] = 1
    post = pre + 2.0 * lesion * rng.uniform(0.5, 1.5, shape) + rng.normal(0, 0.1, shape)
    return pre, post, lesion


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (0.5, 0.2), (3.0, -1.0)])
def test_enhancement_linear_in_the_truth_has_correlation_one(scale, offset):
    pre, post, lesion = _images()
    synthesized = pre + scale * (post - pre) + offset
    result = enhancement_agreement(pre, post, synthesized, lesion)
    assert result["lesion_enhancement_corr"] == pytest.approx(1.0)
    assert result["n_lesion_voxels"] == int(lesion.sum())


def test_perfect_synthesis_and_identity_psnr():
    pre, post, lesion = _images(1)
    result = enhancement_agreement(pre, post, post.copy(), lesion)
    assert result["lesion_PSNR"] == math.inf and result["lesion_enhancement_corr"] == pytest.approx(1.0)
    data_range = post.max() - post.min()
    expected = 10 * math.log10(data_range ** 2 / np.mean((pre - post) ** 2))
    assert result["identity_PSNR"] == pytest.approx(expected)


def test_correlation_matches_scipy_on_noisy_estimate():
    pre, post, lesion = _images(2)
    noisy = post + np.random.default_rng(3).normal(0, 0.5, post.shape)
    result = enhancement_agreement(pre, post, noisy, lesion)
    mask = lesion > 0
    expected = sps.pearsonr((noisy - pre)[mask], (post - pre)[mask]).statistic
    assert result["lesion_enhancement_corr"] == pytest.approx(expected)
    assert 0 < result["lesion_enhancement_corr"] < 1
    psnr = 10 * math.log10((post.max() - post.min()) ** 2 / np.mean((noisy - post)[mask] ** 2))
    assert result["lesion_PSNR"] == pytest.approx(psnr)


@pytest.mark.parametrize("case", ["no lesion", "no predicted enhancement"])
def test_undefined_correlation_is_nan(case):
    pre, post, lesion = _images(4)
    if case == "no lesion":
        lesion[:] = 0
        synthesized = post
    else:
        synthesized = pre.copy()  # the estimate "post = pre" predicts no enhancement anywhere
    result = enhancement_agreement(pre, post, synthesized, lesion)
    assert math.isnan(result["lesion_enhancement_corr"])
    if case == "no lesion":
        assert math.isnan(result["lesion_PSNR"]) and result["n_lesion_voxels"] == 0


def test_shapes_must_agree():
    pre, post, lesion = _images()
    with pytest.raises(ValueError, match="shapes differ"):
        enhancement_agreement(pre, post, post[:-1], lesion)


def test_analyze_folder_reads_nnunet_layout(tmp_path):
    images, labels, synthesized = (tmp_path / n for n in ("imagesTs", "labelsTs", "synth"))
    for folder in (images, labels, synthesized):
        folder.mkdir()
    spacing = (2.0, 1.0, 1.0)
    for i in range(2):
        pre, post, lesion = _images(10 + i)
        case = f"test_{i:04d}"
        write_image(images / f"{case}_0000.nii.gz", pre.astype(np.float32), spacing)
        write_image(images / f"{case}_0001.nii.gz", ((pre + post) / 2).astype(np.float32), spacing)
        write_image(images / f"{case}_0002.nii.gz", post.astype(np.float32), spacing)
        write_image(labels / f"{case}.nii.gz", lesion, spacing)
        estimate = zscore(post.astype(np.float32)) if i == 0 else zscore(pre.astype(np.float32))
        write_image(synthesized / f"{case}.nii.gz", estimate.astype(np.float32), spacing)
    result = analyze_folder(images, labels, synthesized, {"test_0000": {"PSNR": 30.0}, "test_0001": {"PSNR": 20.0}})
    assert result["n_cases"] == 2 and set(result["per_case"]) == {"test_0000", "test_0001"}
    assert result["per_case"]["test_0000"]["lesion_enhancement_corr"] == pytest.approx(1.0, abs=1e-5)
    second = result["per_case"]["test_0001"]["lesion_enhancement_corr"]       # post = pre: no real signal
    assert abs(second) < 0.3
    assert result["lesion_enhancement_corr"] == pytest.approx((1.0 + second) / 2, abs=1e-5)
    assert result["PSNR"] == pytest.approx(25.0)
    (synthesized / "test_0001.nii.gz").unlink()
    with pytest.raises(UserInputError, match="missing .*test_0001.nii.gz"):
        analyze_folder(images, labels, synthesized)
