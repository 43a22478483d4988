"""Tests of nnunet_ext.metrics.segmentation: analytic overlap cases, surface distances vs MONAI, empty masks."""
import math

import numpy as np
import pytest
from scipy import ndimage

from nnunet_ext.metrics.segmentation import (METRIC_NAMES, average_symmetric_surface_distance, binary_metrics,
                                             compute_case_metrics, confusion_counts, dice, distance_undefined,
                                             hd95, image_diagonal_mm, jaccard, precision, sensitivity,
                                             surface_distances, surface_voxels)


def _mask(shape, *voxels):
    mask = np.zeros(shape, dtype=bool)
    for voxel in voxels:
        mask[voxel] = True
    return mask


def _blob(shape, seed, sigma=2.0, foreground_fraction=0.4):
    """Seeded random blob shape: thresholded smoothed noise (often touching the array border)."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return noise > np.quantile(noise, 1.0 - foreground_fraction)


def _ball(shape, spacing, radius_mm):
    """Voxels whose centre lies within radius_mm (physical units) of the array centre."""
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum(g ** 2 for g in grids) <= radius_mm ** 2


SQUARE = (slice(1, 3), slice(1, 3))  # 4 voxels of a 4x6 image

# (reference, prediction, expected TP, FP, FN, Dice, IoU, PPV, SEN)
OVERLAP_CASES = {
    "identical": (_mask((4, 6), SQUARE), _mask((4, 6), SQUARE), 4, 0, 0, 1.0, 1.0, 1.0, 1.0),
    "half_found": (_mask((4, 6), SQUARE), _mask((4, 6), (1, 1), (1, 2)), 2, 0, 2, 2 / 3, 0.5, 1.0, 0.5),
    "shifted": (_mask((4, 6), SQUARE), _mask((4, 6), (slice(1, 3), slice(2, 4))), 2, 2, 2, 0.5, 1 / 3, 0.5, 0.5),
    "superset": (_mask((4, 6), (1, 1), (1, 2)), _mask((4, 6), (slice(0, 2), slice(0, 3))), 2, 4, 0,
                 0.5, 1 / 3, 1 / 3, 1.0),
    "disjoint": (_mask((4, 6), SQUARE), _mask((4, 6), (0, 5)), 0, 1, 4, 0.0, 0.0, 0.0, 0.0),
}


@pytest.mark.parametrize("case", OVERLAP_CASES.values(), ids=OVERLAP_CASES.keys())
def test_overlap_metrics_match_analytic_values(case):
    reference, prediction, tp, fp, fn, dice_, iou_, ppv_, sen_ = case
    assert confusion_counts(reference, prediction) == (tp, fp, fn, reference.size - tp - fp - fn)
    assert dice(reference, prediction) == pytest.approx(dice_)
    assert jaccard(reference, prediction) == pytest.approx(iou_)
    assert precision(reference, prediction) == pytest.approx(ppv_)
    assert sensitivity(reference, prediction) == pytest.approx(sen_)
    metrics = binary_metrics(reference, prediction, spacing=(1.0, 1.0))
    assert tuple(metrics) == METRIC_NAMES
    assert (metrics["TP"], metrics["FP"], metrics["FN"]) == (tp, fp, fn)
    assert (metrics["n_pred"], metrics["n_ref"], metrics["TN"]) == (tp + fp, tp + fn, reference.size - tp - fp - fn)
    assert [metrics[k] for k in ("Dice", "IoU", "PPV", "SEN")] == pytest.approx([dice_, iou_, ppv_, sen_])


# The surface of a mask is mask XOR erode(mask) and the distances are exact Euclidean, as in MONAI, so the two
# implementations must agree to float32 precision (MONAI computes in float32).
MONAI_CASES = [((16, 24, 24), (2.5, 0.7, 0.7), 0), ((16, 24, 24), (2.5, 0.7, 0.7), 1),
               ((12, 16, 20), (1.0, 1.0, 1.0), 2), ((40, 48), (0.5, 1.3), 3), ((40, 48), (1.0, 1.0), 4),
               ((32, 32), (0.7, 0.7), 5)]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecation notice inside get_mask_edges
@pytest.mark.parametrize("shape, spacing, seed", MONAI_CASES)
def test_hd95_and_asd_match_monai_on_random_blobs(shape, spacing, seed):
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    torch.set_num_threads(1)
    reference, prediction = _blob(shape, 2 * seed), _blob(shape, 2 * seed + 1)
    # MONAI takes one-hot (batch, class, ...) tensors, prediction first
    as_batch = lambda m: torch.from_numpy(m)[None, None]  # noqa: E731
    monai_hd95 = monai_metrics.compute_hausdorff_distance(as_batch(prediction), as_batch(reference),
                                                          include_background=True, percentile=95,
                                                          spacing=list(spacing)).item()
    monai_asd = monai_metrics.compute_average_surface_distance(as_batch(prediction), as_batch(reference),
                                                               include_background=True, symmetric=True,
                                                               spacing=list(spacing)).item()
    assert hd95(reference, prediction, spacing) == pytest.approx(monai_hd95, rel=1e-5)
    assert average_symmetric_surface_distance(reference, prediction, spacing) == pytest.approx(monai_asd, rel=1e-5)


@pytest.mark.parametrize("shape, spacing, r_ref, r_pred", [
    ((64, 64), (0.5, 0.5), 12.0, 8.0),
    ((80, 40), (0.4, 0.8), 9.0, 13.0),
    ((24, 48, 48), (1.5, 0.7, 0.7), 14.0, 10.0),
])
def test_concentric_balls_are_the_radius_difference_apart(shape, spacing, r_ref, r_pred):
    reference, prediction = _ball(shape, spacing, r_ref), _ball(shape, spacing, r_pred)
    # every point of one sphere is |r1 - r2| from the other; voxelization moves surfaces by < one voxel
    tolerance = max(spacing)
    assert hd95(reference, prediction, spacing) == pytest.approx(abs(r_ref - r_pred), abs=tolerance)
    assert average_symmetric_surface_distance(reference, prediction, spacing) == pytest.approx(abs(r_ref - r_pred),
                                                                                                abs=tolerance)


def test_single_voxels_are_their_physical_distance_apart():
    spacing = (2.5, 0.7, 0.7)
    reference, prediction = _mask((6, 5, 5), (1, 2, 3)), _mask((6, 5, 5), (4, 0, 3))
    expected = math.hypot(3 * 2.5, 2 * 0.7)
    assert hd95(reference, prediction, spacing) == pytest.approx(expected)
    assert average_symmetric_surface_distance(reference, prediction, spacing) == pytest.approx(expected)
    pred_to_ref, ref_to_pred = surface_distances(reference, prediction, spacing)
    assert pred_to_ref.tolist() == ref_to_pred.tolist() == pytest.approx([expected])


def test_hd95_is_the_larger_directed_percentile():
    # prediction = reference plus a 3-voxel outlier: 3 of 39 prediction surface voxels (> 5 %) but only 3 of the
    # 75 pooled distances (< 5 %), so the directed 95th percentile sees it and the pooled one does not
    spacing = (1.0, 1.0)
    reference = _mask((40, 40), (slice(5, 15), slice(5, 15)))
    prediction = reference | _mask((40, 40), (35, slice(30, 33)))
    pred_to_ref, ref_to_pred = surface_distances(reference, prediction, spacing)
    assert not ref_to_pred.any()
    assert hd95(reference, prediction, spacing) == pytest.approx(np.percentile(pred_to_ref, 95))
    assert np.percentile(np.concatenate([pred_to_ref, ref_to_pred]), 95) == 0.0
    assert hd95(reference, prediction, spacing) > 20.0


def test_surface_includes_array_border_and_full_connectivity_is_thicker():
    full_square = np.ones((4, 4), dtype=bool)
    assert surface_voxels(full_square).sum() == 12  # the ring along the array border
    ball = _ball((15, 15, 15), (1.0, 1.0, 1.0), 6.0)
    face_surface, full_surface = surface_voxels(ball, connectivity=1), surface_voxels(ball, connectivity=3)
    assert (face_surface <= full_surface).all() and full_surface.sum() > face_surface.sum()


EMPTY = np.zeros((6, 6), dtype=bool)
FILLED = _mask((6, 6), (slice(2, 4), slice(2, 4)))


@pytest.mark.parametrize("reference, prediction, expected", [
    (EMPTY, EMPTY, {"Dice": math.nan, "IoU": math.nan, "PPV": math.nan, "SEN": math.nan, "HD95": 0.0, "ASD": 0.0}),
    (FILLED, EMPTY, {"Dice": 0.0, "IoU": 0.0, "PPV": math.nan, "SEN": 0.0, "HD95": math.nan, "ASD": math.nan}),
    (EMPTY, FILLED, {"Dice": 0.0, "IoU": 0.0, "PPV": 0.0, "SEN": math.nan, "HD95": math.nan, "ASD": math.nan}),
], ids=["both_empty", "prediction_empty", "reference_empty"])
def test_empty_mask_conventions(reference, prediction, expected):
    metrics = binary_metrics(reference, prediction, spacing=(1.0, 2.0))
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, nan_ok=True), name
    assert hd95(reference, prediction, (1.0, 2.0)) == pytest.approx(expected["HD95"], nan_ok=True)
    assert average_symmetric_surface_distance(reference, prediction, (1.0, 2.0)) == pytest.approx(expected["ASD"],
                                                                                                 nan_ok=True)


@pytest.mark.parametrize("reference, prediction, undefined", [
    (EMPTY, EMPTY, False), (FILLED, EMPTY, True), (EMPTY, FILLED, True), (FILLED, FILLED, False)])
def test_undefined_distance_penalty_and_flag(reference, prediction, undefined):
    spacing = (1.0, 2.0)
    diagonal = image_diagonal_mm(reference.shape, spacing)
    assert diagonal == pytest.approx(math.hypot(5 * 1.0, 5 * 2.0))  # corner voxel centres of a 6x6 image
    plain = binary_metrics(reference, prediction, spacing)
    penalised = binary_metrics(reference, prediction, spacing, undefined_distance=diagonal)
    assert distance_undefined(plain) == undefined
    for name in ("HD95", "ASD"):
        if undefined:  # only the undefined case changes, to the penalty
            assert math.isnan(plain[name]) and penalised[name] == pytest.approx(diagonal)
        else:
            assert penalised[name] == plain[name]
    assert {k: v for k, v in penalised.items() if k not in ("HD95", "ASD")} == pytest.approx(
        {k: v for k, v in plain.items() if k not in ("HD95", "ASD")}, nan_ok=True)


def test_compute_case_metrics_per_label():
    reference = np.zeros((4, 8, 8), dtype=np.uint8)
    prediction = np.zeros_like(reference)
    reference[1:3, 1:4, 1:4] = 1
    prediction[1:3, 1:4, 1:4] = 1
    reference[1:3, 5:7, 5:7] = 2
    prediction[1:3, 5:7, 4:6] = 2
    result = compute_case_metrics(reference, prediction, [1, 2, 3], spacing=(3.0, 0.5, 0.5))
    assert set(result) == {1, 2, 3}
    assert result[1]["Dice"] == 1.0 and result[1]["HD95"] == 0.0 and result[1]["ASD"] == 0.0
    assert result[2]["Dice"] == pytest.approx(0.5) and result[2]["TP"] == 4 and result[2]["FP"] == 4
    assert math.isnan(result[3]["Dice"]) and result[3]["TN"] == reference.size and result[3]["HD95"] == 0.0


@pytest.mark.parametrize("reference, prediction, spacing, message", [
    (np.zeros((4, 4)), np.zeros((4, 5)), (1.0, 1.0), "shapes differ"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1.0, 1.0, 1.0), "spacing"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1.0, 0.0), "positive"),
])
def test_bad_arguments_raise_value_error(reference, prediction, spacing, message):
    with pytest.raises(ValueError, match=message):
        compute_case_metrics(reference, prediction, [1], spacing)


def test_dice_on_real_brain_pair_matches_documented_reference():
    """Real data (../shared/data/brain_mri_pair): unregistered mean Dice over voxelmorph's 30 labels is 0.5224."""
    from tests.conftest import shared_data

    folder = shared_data("brain_mri_pair")
    labels = [int(v) for v in np.load(folder / "labels.npz")["labels"]]
    a = np.load(folder / "subject_vxm.npz")["seg"].astype(np.int32)
    b = np.load(folder / "subject_l2r_seg.npz")["vol_data"].astype(np.int32)
    dice = [2 * np.logical_and(a == l, b == l).sum() / ((a == l).sum() + (b == l).sum()) for l in labels]
    from nnunet_ext.metrics.segmentation import compute_case_metrics
    ours = compute_case_metrics(a, b, labels, (1.0, 1.0, 1.0))
    assert np.mean([ours[l]["Dice"] for l in labels]) == pytest.approx(np.mean(dice)) == pytest.approx(0.5224, abs=5e-5)


def test_largest_object_outline_fills_back_into_the_object():
    from skimage.draw import polygon2mask

    from nnunet_ext.metrics.segmentation import largest_object_outline

    mask = np.zeros((30, 40), bool)
    mask[0:12, 5:25] = True  # touches the border: the outline must still close
    mask[20:23, 30:33] = True  # smaller object: ignored
    outline = largest_object_outline(mask)
    assert outline[:, 0].min() >= 4 and outline[:, 0].max() <= 25  # (x, y): x spans the columns
    assert np.array_equal(polygon2mask(mask.shape, outline[:, ::-1]), mask & (np.arange(30)[:, None] < 15))
    with pytest.raises(ValueError, match="empty"):
        largest_object_outline(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="2D mask"):
        largest_object_outline(np.zeros((2, 4, 4)))
