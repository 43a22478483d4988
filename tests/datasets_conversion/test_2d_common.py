"""Tests of nnunet_ext.datasets_conversion._2d_common's ``--max-size`` downsampling (used by cbis_ddsm and inbreast),
against independent references: the numpy block mean for integer factors, the conserved sum for the others."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_ext.datasets_conversion._2d_common import (area_resize, area_weights, check_max_size, output_shape,
                                                       shrink_image, shrink_mask)
from nnunet_ext.errors import UserInputError


def block_mean(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Reference for integer factors: the mean of each (f_y x f_x) block, by reshape."""
    f_y, f_x = array.shape[0] // shape[0], array.shape[1] // shape[1]
    return array.astype(np.float64).reshape(shape[0], f_y, shape[1], f_x).mean(axis=(1, 3))


# ----------------------------------------------------------------------------------------------------------------------
# the long side at most max_size


@pytest.mark.parametrize("shape, max_size, expected", [
    ((40, 30), 16, (16, 12)),
    ((30, 40), 20, (15, 20)),
    ((30, 40), 16, (12, 16)),
    ((40, 30), 0, (40, 30)),     # 0 = full resolution
    ((40, 30), 64, (40, 30)),    # fits already
    ((40, 30), 40, (40, 30)),
    ((10, 5), 4, (4, 2)),
    ((10, 5), 5, (5, 3)),        # 2.5 rounds up (floor(x + 0.5)), not to even
    ((1000, 1), 10, (10, 1)),    # at least one pixel
    ((1, 1000), 10, (1, 10)),
])
def test_output_shape_scales_the_long_side_to_max_size(shape, max_size, expected):
    assert output_shape(shape, max_size) == expected


@pytest.mark.parametrize("value", [0, 1, 1024])
def test_check_max_size_accepts_zero_and_positive_ints(value):
    assert check_max_size(value) == value


@pytest.mark.parametrize("value", [-1, True, 2.5, "1024", None])
def test_check_max_size_refuses_the_rest(value):
    with pytest.raises(UserInputError, match=r"^--max-size must be 0 \(full resolution\) or a positive number of "
                                             r"pixels, got "):
        check_max_size(value)


# ----------------------------------------------------------------------------------------------------------------------
# area averaging


@pytest.mark.parametrize("n_in, n_out", [(40, 16), (30, 12), (7, 3), (10, 10), (5, 1), (3, 2)])
def test_area_weights_rows_are_means_and_every_input_pixel_counts_once(n_in, n_out):
    weights = area_weights(n_in, n_out).toarray()
    assert weights.shape == (n_out, n_in) and (weights >= 0).all()
    assert np.allclose(weights.sum(axis=1), 1)  # a mean
    assert np.allclose(weights.sum(axis=0), n_out / n_in)  # each input pixel weighs 1 / s in total


@pytest.mark.parametrize("shape_in, shape_out", [((40, 30), (20, 15)), ((40, 30), (10, 10)), ((12, 12), (4, 6)),
                                                 ((9, 6), (3, 2)), ((8, 8), (8, 4)), ((6, 4), (1, 1))])
def test_area_resize_with_integer_factors_is_the_block_mean(shape_in, shape_out):
    array = np.random.default_rng(1).uniform(0, 100, shape_in)
    out = area_resize(array, shape_out)
    assert out.dtype == np.float64 and out.shape == shape_out
    assert np.allclose(out, block_mean(array, shape_out))


@pytest.mark.parametrize("shape_in, shape_out", [((40, 30), (16, 12)), ((7, 10), (3, 4)), ((30, 43), (12, 11)),
                                                 ((5, 5), (2, 3))])
def test_area_resize_with_other_factors_conserves_the_sum(shape_in, shape_out):
    array = np.random.default_rng(2).uniform(0, 100, shape_in)
    out = area_resize(array, shape_out)
    s_y, s_x = shape_in[0] / shape_out[0], shape_in[1] / shape_out[1]
    assert s_y * s_x * out.sum() == pytest.approx(array.sum())
    assert array.min() <= out.min() and out.max() <= array.max()  # means stay within the input's range
    assert np.allclose(area_resize(np.full(shape_in, 7.0), shape_out), 7.0)


def test_area_resize_to_the_same_shape_is_a_float_copy():
    array = np.arange(12, dtype=np.uint16).reshape(3, 4)
    out = area_resize(array, (3, 4))
    assert out.dtype == np.float64 and np.array_equal(out, array) and out is not array


# ----------------------------------------------------------------------------------------------------------------------
# images and masks


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_shrink_image_rounds_the_block_mean_back_to_the_dtype(dtype):
    rng = np.random.default_rng(3)
    low, high = (-1000, 1000) if dtype == np.int16 else (0, 250)
    array = rng.uniform(low, high, (40, 30)).astype(dtype)
    out = shrink_image(array, (20, 15))
    assert out.dtype == dtype and out.shape == (20, 15)
    means = block_mean(array, (20, 15))
    expected = means.astype(dtype) if dtype == np.float32 else np.rint(means).astype(dtype)
    assert np.array_equal(out, expected)
    assert shrink_image(array, (40, 30)) is array


def test_shrink_image_rounds_half_to_even_and_stays_in_range():
    array = np.array([[0, 1, 2, 3], [255, 255, 255, 255]], np.uint8)  # pairs: means 0.5 and 2.5, then 255
    assert np.array_equal(shrink_image(array, (2, 2)), [[0, 2], [255, 255]])


@pytest.mark.parametrize("dtype", [bool, np.uint8])
def test_shrink_mask_is_foreground_where_at_least_half_the_area_was(dtype):
    mask = np.zeros((4, 6), dtype)
    mask[0:2, 0:2] = 1       # block 0, 0: 4 of 4 -> 1
    mask[0, 2:4] = 1         # block 0, 1: 2 of 4 (exactly half) -> 1
    mask[0, 4] = 1           # block 0, 2: 1 of 4 -> 0
    mask[2:4, 0:2] = [[1, 1], [1, 0]]  # block 1, 0: 3 of 4 -> 1
    out = shrink_mask(mask, (2, 3))
    assert out.dtype == np.uint8
    assert np.array_equal(out, [[1, 1, 0], [1, 0, 0]])
    assert np.array_equal(out, block_mean(mask, (2, 3)) >= 0.5)


@pytest.mark.parametrize("shape_out", [(20, 15), (16, 12), (13, 7), (40, 30)])
def test_shrink_mask_thresholds_the_area_mean(shape_out):
    mask = np.random.default_rng(4).uniform(size=(40, 30)) > 0.6
    out = shrink_mask(mask, shape_out)
    assert out.dtype == np.uint8 and out.shape == shape_out and set(np.unique(out)) <= {0, 1}
    assert np.array_equal(out, area_resize(mask, shape_out) >= 0.5)
    if shape_out == (20, 15):
        assert np.array_equal(out, block_mean(mask, shape_out) >= 0.5)


@pytest.mark.parametrize("spacing_tag,photometric", [("PixelSpacing", "MONOCHROME2"),
                                                     ("ImagerPixelSpacing", "MONOCHROME1"), (None, "MONOCHROME2")])
def test_read_dicom_2d_spacing_and_inversion(tmp_path, spacing_tag, photometric):
    import pydicom

    from nnunet_ext.datasets_conversion._2d_common import read_dicom_2d
    from tests.datasets_conversion.test_inbreast import SPACING, write_dicom

    stored = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    path = tmp_path / "image.dcm"
    write_dicom(path, stored, spacing_tag or "PixelSpacing", photometric)
    if spacing_tag is None:
        ds = pydicom.dcmread(path)
        del ds.PixelSpacing
        ds.save_as(path, enforce_file_format=True)
    pixels, spacing, source, read_photometric = read_dicom_2d(path)
    expected = stored if photometric == "MONOCHROME2" else (1 << 14) - 1 - stored  # BitsStored 14
    assert np.array_equal(pixels, expected) and read_photometric == photometric
    assert (spacing, source) == (((SPACING, SPACING), spacing_tag) if spacing_tag else (None, None))


def test_read_dicom_2d_refuses_an_unreadable_file_in_one_line(tmp_path):
    from nnunet_ext.datasets_conversion._2d_common import read_dicom_2d

    path = tmp_path / "broken.dcm"
    path.write_bytes(b"not a DICOM file" * 10)
    with pytest.raises(UserInputError, match=r"cannot read DICOM file .*broken\.dcm: InvalidDicomError") as info:
        read_dicom_2d(path)
    assert "\n" not in str(info.value)
