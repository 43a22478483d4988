"""nnunet_ext.geometry: the same-grid check of converters, HCNet clustering and the breast-mask postprocess."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.geometry import DIRECTION_TOLERANCE, GEOMETRY_TOLERANCE_MM, fmt_vector, geometry_mismatch

ROTATED = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # 90 degrees about z


def _image(size=(6, 5, 4), spacing=(0.7, 0.7, 2.0), origin=(-10.0, 5.0, 3.0), direction=None):
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction or tuple(np.eye(3).ravel()))
    return image


@pytest.mark.parametrize("change,reason", [
    ({"size": (6, 5, 5)}, "size (6, 5, 5) instead of (6, 5, 4)"),
    ({"spacing": (0.7, 0.7, 2.5)}, "spacing (0.7, 0.7, 2.5) instead of (0.7, 0.7, 2)"),
    ({"origin": (-10.0, 5.0, 3.5)}, "origin (-10, 5, 3.5) instead of (-10, 5, 3)"),
    ({"direction": ROTATED}, "direction (0, -1, 0, 1, 0, 0, 0, 0, 1) instead of (1, 0, 0, 0, 1, 0, 0, 0, 1)"),
])
def test_the_first_difference_is_named(change, reason):
    assert geometry_mismatch(_image(), _image(**change)) == reason


def test_dimension_is_checked_before_anything_else():
    assert geometry_mismatch(_image(), sitk.Image([6, 5], sitk.sitkUInt8)) == "2D instead of 3D"


@pytest.mark.parametrize("scale,expected_equal", [(0.5, True), (2.0, False)])
def test_tolerances_are_the_documented_ones(scale, expected_equal):
    """Header rounding below the tolerances passes; anything above them is a mismatch."""
    mm, cosine = scale * GEOMETRY_TOLERANCE_MM, scale * DIRECTION_TOLERANCE
    for change in ({"spacing": (0.7 + mm, 0.7, 2.0)}, {"origin": (-10.0, 5.0 - mm, 3.0)},
                   {"direction": (1.0, cosine, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)}):
        assert (geometry_mismatch(_image(), _image(**change)) is None) is expected_equal, change


def test_fmt_vector_gives_plain_numbers():
    assert fmt_vector(np.array([1.5, -2.0, 1 / 3], dtype=np.float32)) == "(1.5, -2, 0.3333)"
    assert fmt_vector([123.456789], digits=6) == "(123.457)"
