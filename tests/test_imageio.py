"""Tests of nnunet_ext.imageio: (z, y, x) round trip and one-line errors for missing, corrupt or truncated files."""
import numpy as np
import pytest

from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import read_image, write_image


@pytest.mark.parametrize("name, shape, spacing", [("a.nii.gz", (4, 6, 8), (2.5, 0.7, 0.8)),
                                                  ("b.nrrd", (4, 6, 8), (1.0, 2.0, 3.0)),
                                                  ("c.nii.gz", (6, 8), (0.5, 0.25))])
def test_round_trip_keeps_axis_order_and_spacing(tmp_path, name, shape, spacing):
    array = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    write_image(tmp_path / name, array, spacing)
    back, back_spacing = read_image(tmp_path / name)
    np.testing.assert_array_equal(back, array)
    assert back_spacing == pytest.approx(spacing)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_gzip_image_is_refused_not_zero_filled(tmp_path, keep):
    """SimpleITK alone returns zeros for the missing part of a cut .nii.gz."""
    path = tmp_path / "cut.nii.gz"
    write_image(path, np.random.default_rng(1).normal(size=(4, 16, 16)).astype(np.float32), (1.0, 1.0, 1.0))
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(UserInputError, match=r"cannot read image .*cut\.nii\.gz: truncated or corrupt gzip data"):
        read_image(path)


@pytest.mark.parametrize("content, message", [(None, "missing file"), (b"not an image" * 10, "cannot read image")])
def test_missing_or_garbage_file(tmp_path, content, message):
    path = tmp_path / "x.nii.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserInputError, match=message) as info:
        read_image(path)
    assert "\n" not in str(info.value)
