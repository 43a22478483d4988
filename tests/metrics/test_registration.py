"""Tests of nnunet_ext.metrics.registration: analytic fields (identity, affine, folds), Learn2Reg's SDlogJ recipe
recomputed by hand, the Learn2Reg file layout, per-label overlap vs the segmentation module, and (when installed)
NDV vs the ``digital-diffeomorphism`` package of Liu et al."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nnunet_ext.metrics.registration import (dice_per_label, disp_from_learn2reg, disp_to_learn2reg, hd95_per_label,
                                             jacobian_determinant, negative_jacobian_percent,
                                             non_diffeomorphic_volume_map, non_diffeomorphic_volume_percent,
                                             registration_metrics, sdlogj, warp_labels)
from nnunet_ext.metrics.segmentation import dice, hd95

SHAPES = {"2d": (9, 11), "3d": (7, 8, 9)}
AFFINES = {  # det(A) > 0 and close to I: no fold anywhere, not even against the edge-padded border
    "2d": np.array([[1.2, 0.1], [-0.2, 0.9]]),
    "3d": np.array([[1.1, 0.2, 0.0], [0.1, 0.9, 0.05], [0.0, -0.1, 1.2]]),
}


def _grid(shape):
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))


def _affine_disp(matrix, shape):
    """u(x) = (A - I) x on voxel index coordinates."""
    return np.tensordot(matrix - np.eye(len(shape)), _grid(shape), axes=1)


def _smooth_random_disp(shape, seed, amplitude):
    rng = np.random.default_rng(seed)
    return np.stack([amplitude * ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) for _ in shape])


# Fold along axis 0 only: u_0(k) = PROFILE[k]. np.gradient gives det J = 1 + du_0/dk = [1, 1, -0.5, -2, -0.5, 1, 1, 1]
# (central (f[k+1] - f[k-1]) / 2 inside, one-sided at both ends): 3 of 8 slices folded.
FOLD_PROFILE = np.array([0.0, 0.0, 0.0, -3.0, -6.0, -6.0, -6.0, -6.0])
FOLD_JACDET = np.array([1.0, 1.0, -0.5, -2.0, -0.5, 1.0, 1.0, 1.0])
# NDV by hand: for a field varying along one axis every simplex determinant is a positive multiple of a 1D edge
# length 1 + f[k+1] - f[k] = [1, 1, -2, -2, 1, 1, 1]; the simplices tile space twice, so the folded volume per unit
# cross-section is the summed negative edge length 2 + 2 = 4 of the 8 voxels: 50 %.
FOLD_NDV_PERCENT = 100.0 * 4.0 / 8.0


# Learn2Reg's SDlogJ keeps slices 2..5 after its 2-voxel crop: std(log(det J + 3)) = std(log([2.5, 1, 2.5, 4])).
FOLD_SDLOGJ = float(np.std(np.log(FOLD_JACDET[2:6] + 3.0)))


def _fold_disp(ndim):
    shape = (8,) + (6,) * (ndim - 1)
    disp = np.zeros((ndim,) + shape)
    disp[0] = FOLD_PROFILE.reshape((8,) + (1,) * (ndim - 1))
    return disp


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_identity_field_is_perfectly_regular(dim):
    """u = 0: J = I everywhere (analytic)."""
    disp = np.zeros((len(SHAPES[dim]),) + SHAPES[dim])
    np.testing.assert_array_equal(jacobian_determinant(disp), np.ones(SHAPES[dim]))
    assert sdlogj(disp) == pytest.approx(0.0, abs=1e-12)  # std of a constant log(4): 0 up to rounding
    assert sdlogj(disp, offset=0.0) == 0.0
    assert negative_jacobian_percent(disp) == 0.0
    assert non_diffeomorphic_volume_percent(disp) == 0.0


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_affine_field_has_constant_jacobian_det_a(dim):
    """u(x) = (A - I) x: J = A, det J = det(A) (analytic); one-sided border differences are exact for linear u."""
    matrix, shape = AFFINES[dim], SHAPES[dim]
    disp = _affine_disp(matrix, shape)
    np.testing.assert_allclose(jacobian_determinant(disp), np.linalg.det(matrix), rtol=1e-12)
    assert sdlogj(disp) == pytest.approx(0.0, abs=1e-12)
    assert sdlogj(disp, offset=0.0) == pytest.approx(0.0, abs=1e-12)
    assert negative_jacobian_percent(disp) == 0.0
    np.testing.assert_array_equal(non_diffeomorphic_volume_map(disp), 0.0)  # the edge-padded border folds nothing


@pytest.mark.parametrize("ndim", [2, 3])
def test_fold_along_one_axis(ndim):
    """Hand-computed fold (FOLD_* above): det J < 0 exactly on the folded slices, 37.5 % negative, NDV 50 %."""
    disp = _fold_disp(ndim)
    jacdet = jacobian_determinant(disp)
    expected = np.broadcast_to(FOLD_JACDET.reshape((8,) + (1,) * (ndim - 1)), jacdet.shape)
    np.testing.assert_allclose(jacdet, expected, rtol=1e-12)
    np.testing.assert_array_equal(jacdet < 0, expected < 0)
    assert negative_jacobian_percent(disp) == pytest.approx(100.0 * 3 / 8)
    assert non_diffeomorphic_volume_percent(disp) == pytest.approx(FOLD_NDV_PERCENT)
    assert sdlogj(disp) == pytest.approx(FOLD_SDLOGJ, rel=1e-12)


def test_masks_restrict_the_field_metrics():
    """Inside a mask of the unfolded slices nothing is folded; inside the folded slices everything is; Learn2Reg's
    masked SDlogJ over slices 2 and 3 is std(log([2.5, 1])) = log(2.5) / 2."""
    disp = _fold_disp(3)
    folded = np.zeros(disp.shape[1:], dtype=bool)
    folded[2:5] = True
    assert negative_jacobian_percent(disp, mask=~folded) == 0.0
    assert negative_jacobian_percent(disp, mask=folded) == 100.0
    slices_2_3 = np.zeros(disp.shape[1:], dtype=bool)
    slices_2_3[2:4] = True
    assert sdlogj(disp, mask=slices_2_3) == pytest.approx(np.log(2.5) / 2, rel=1e-12)
    # NDV per voxel of slices 2, 3, 4 = mean negative length of its two edges: (0 + 2) / 2, (2 + 2) / 2, (2 + 0) / 2
    assert non_diffeomorphic_volume_percent(disp, mask=folded) == pytest.approx(100.0 * 4 / 3)
    with pytest.raises(ValueError, match="no voxel left"):
        sdlogj(np.zeros((3, 8, 4, 8)))  # 4 voxels along y: nothing left after cropping 2 from each side


def _l2r_sdlogj_by_hand(field_xyz3, offset=3.0, crop=2):
    """Learn2Reg's LogJacDetStd (MDL-UzL/L2R evaluation/utils.py + evaluation.py) written independently: on the
    file layout [X, Y, Z, 3], central differences (f[i+1] - f[i-1]) / 2 on the cropped interior only,
    J[comp, axis] = delta + du_comp/dx_axis, np.linalg.det, log(clip(det + 3, 1e-9, 1e9)), population std."""
    n_axes = field_xyz3.ndim - 1
    inner = [slice(crop, n - crop) for n in field_xyz3.shape[:-1]]
    jacobian = np.zeros(tuple(n - 2 * crop for n in field_xyz3.shape[:-1]) + (n_axes, n_axes))
    for axis in range(n_axes):
        ahead, behind = list(inner), list(inner)
        ahead[axis] = slice(crop + 1, field_xyz3.shape[axis] - crop + 1)
        behind[axis] = slice(crop - 1, field_xyz3.shape[axis] - crop - 1)
        jacobian[..., :, axis] = (field_xyz3[tuple(ahead)] - field_xyz3[tuple(behind)]) / 2.0
    jacobian += np.eye(n_axes)
    return float(np.std(np.log(np.clip(np.linalg.det(jacobian) + offset, 1e-9, 1e9))))


@pytest.mark.parametrize("offset", [3.0, 0.0])
@pytest.mark.parametrize("amplitude", [0.5, 30.0])  # smooth, and folding (det J <= -3 somewhere: clipping in use)
def test_sdlogj_matches_learn2reg_recipe_by_hand(offset, amplitude):
    disp = _smooth_random_disp((10, 11, 12), seed=3, amplitude=amplitude)
    field = disp_to_learn2reg(disp, channel_axis=-1)  # the [X, Y, Z, 3] layout Learn2Reg evaluates
    if amplitude > 1.0:
        assert jacobian_determinant(disp)[2:-2, 2:-2, 2:-2].min() < -3.0
    assert sdlogj(disp, offset=offset) == pytest.approx(_l2r_sdlogj_by_hand(field, offset=offset), rel=1e-10)


def test_sdlogj_offset_compresses_the_spread():
    """Learn2Reg's +3 is not std(log J): for a positive field std(log(J + 3)) < std(log J)."""
    disp = _smooth_random_disp((10, 11, 12), seed=4, amplitude=0.5)
    jacdet = jacobian_determinant(disp)[2:-2, 2:-2, 2:-2]
    assert jacdet.min() > 0
    assert sdlogj(disp, offset=0.0) == pytest.approx(np.std(np.log(jacdet)), rel=1e-12)
    assert sdlogj(disp) < sdlogj(disp, offset=0.0)


@pytest.mark.parametrize("channel_axis", [0, -1])
@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_learn2reg_layout_round_trip(channel_axis, dim):
    """Ours (n, Z, Y, X) with components (z, y, x) <-> Learn2Reg [n, X, Y, Z] / [X, Y, Z, n] with (x, y, z)."""
    shape = SHAPES[dim]
    n = len(shape)
    disp = np.random.default_rng(5).standard_normal((n,) + shape)
    field = disp_to_learn2reg(disp, channel_axis=channel_axis)
    channels_first = np.moveaxis(field, channel_axis, 0)
    assert channels_first.shape == (n,) + shape[::-1]
    index = (2, 1, 3)[:n]  # an arbitrary voxel (z, y, x) / (y, x)
    for component in range(n):
        assert channels_first[(n - 1 - component,) + index[::-1]] == disp[(component,) + index]
    np.testing.assert_array_equal(disp_from_learn2reg(field, channel_axis=channel_axis), disp)
    assert disp_from_learn2reg(field.astype(np.float16), channel_axis).dtype == np.float32


def test_learn2reg_layout_warps_like_learn2reg():
    """Learn2Reg warps with map_coordinates(moving_xyz, identity + field.transpose(3, 0, 1, 2), order=0); the
    converted field pulls the (z, y, x) array to the same labels."""
    rng = np.random.default_rng(6)
    moving_zyx = rng.integers(0, 4, size=(6, 7, 8))
    disp = np.round(_smooth_random_disp((6, 7, 8), seed=7, amplitude=8.0))  # integer shifts: no rounding ties
    assert all(np.any(component != 0) for component in disp)
    field = disp_to_learn2reg(disp, channel_axis=-1)
    moving_xyz = moving_zyx.transpose(2, 1, 0)
    identity = np.stack(np.meshgrid(*[np.arange(n) for n in moving_xyz.shape], indexing="ij"))
    warped_xyz = ndimage.map_coordinates(moving_xyz, identity + field.transpose(3, 0, 1, 2), order=0)
    np.testing.assert_array_equal(warp_labels(moving_zyx, disp), warped_xyz.transpose(2, 1, 0))


def test_pull_convention_on_a_translation():
    """u = +1 along axis 0: warped(z) = moving(z + 1), background past the end."""
    moving = np.arange(5)[:, None] * np.ones((5, 3), dtype=int)
    disp = np.zeros((2, 5, 3))
    disp[0] = 1.0
    np.testing.assert_array_equal(warp_labels(moving, disp)[:, 0], [1, 2, 3, 4, 0])


FIXED = np.zeros((6, 8, 8), dtype=np.uint8)
FIXED[1:4, 1:4, 1:4] = 1
FIXED[2:5, 4:7, 4:7] = 2
FIXED[0, 7, 0] = 4  # only in the fixed map: Dice 0, HD95 NaN
WARPED = np.zeros_like(FIXED)
WARPED[1:4, 1:4, 1:4] = 1  # identical
WARPED[2:5, 5:8, 4:7] = 2  # shifted by one voxel along y
WARPED[5, 0, 0] = 3  # only in the warped map


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8)])
def test_per_label_overlap_uses_the_segmentation_module(spacing):
    dice_values = dice_per_label(FIXED, WARPED)
    hd95_values = hd95_per_label(FIXED, WARPED, spacing)
    assert list(dice_values) == [1, 2, 3, 4] and list(hd95_values) == [1, 2, 3, 4]
    for label in (1, 2, 3, 4):
        assert dice_values[label] == dice(FIXED == label, WARPED == label)
        np.testing.assert_equal(hd95_values[label], hd95(FIXED == label, WARPED == label, spacing))
    assert dice_values[1] == 1.0 and dice_values[2] == pytest.approx(2 / 3) and dice_values[4] == 0.0
    assert hd95_values[1] == 0.0 and hd95_values[2] == pytest.approx(spacing[1]) and np.isnan(hd95_values[4])
    assert list(dice_per_label(FIXED, WARPED, labels=[2, 5])) == [2, 5] and np.isnan(
        dice_per_label(FIXED, WARPED, labels=[5])[5])


def test_registration_metrics_in_one_call():
    disp = _fold_disp(3)
    fixed = np.zeros((8, 6, 6), dtype=np.uint8)
    fixed[1:3, 1:3, 1:3] = 1
    metrics = registration_metrics(disp, fixed, fixed, (1.0, 1.0, 1.0))
    assert set(metrics) == {"dice_mean", "hd95_mean", "dice", "hd95", "sdlogj", "negative_jacobian_percent",
                            "ndv_percent"}
    assert metrics["dice"] == {1: 1.0} and metrics["dice_mean"] == 1.0 and metrics["hd95_mean"] == 0.0
    assert metrics["negative_jacobian_percent"] == pytest.approx(37.5)
    assert metrics["ndv_percent"] == pytest.approx(FOLD_NDV_PERCENT)
    assert metrics["sdlogj"] == pytest.approx(FOLD_SDLOGJ, rel=1e-12)
    identity = registration_metrics(np.zeros((3, 6, 8, 8)), FIXED, WARPED, (1.0, 1.0, 1.0), labels=[1, 2])
    assert identity["dice_mean"] == pytest.approx((1.0 + 2 / 3) / 2) and identity["sdlogj"] < 1e-12
    assert identity["negative_jacobian_percent"] == 0.0 and identity["ndv_percent"] == 0.0


@pytest.mark.parametrize("bad_shape", [(3, 4, 5), (2, 4, 5, 6), (3, 1, 5, 6)])
def test_field_shape_is_checked(bad_shape):
    with pytest.raises(ValueError):
        jacobian_determinant(np.zeros(bad_shape))


def _digital_diffeomorphism():
    try:
        import digital_diffeomorphism
    except Exception as error:  # not installed, or its torch / nibabel imports fail
        pytest.skip(f"digital-diffeomorphism (Liu et al.'s reference NDV package) not importable: {error}")
    return digital_diffeomorphism


@pytest.mark.parametrize("case", ["smooth", "folding", "fold_along_axis"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_ndv_matches_digital_diffeomorphism(case, ndim):
    """Reference: digital_diffeomorphism.ndv / nda (H, W[, D], n) deformation, float32 torch; is_disp adds x."""
    package = _digital_diffeomorphism()
    shape = (10, 11, 9)[:ndim]
    if case == "fold_along_axis":
        disp = _fold_disp(ndim)
    else:
        disp = _smooth_random_disp(shape, seed=8, amplitude=1.0 if case == "smooth" else 8.0)
    reference = (package.ndv if ndim == 3 else package.nda)(np.moveaxis(disp, 0, -1).copy(), is_disp=True)
    ours = non_diffeomorphic_volume_percent(disp)
    assert ours == pytest.approx(float(reference[1]), rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(non_diffeomorphic_volume_map(disp), reference[2], rtol=1e-4, atol=1e-5)
    if case != "smooth":
        assert ours > 0.0
