"""Tests for nnunet_ext.methods.dca.syn: the ANTs SyN baseline and the conversion of ANTs' field to ours.

The tests that run ANTs skip when antspyx (the benchmark-only extra ``registration-bench``) is not installed; the
conversion arithmetic and the missing-package error are tested without it.
"""
import sys

import numpy as np
import pytest

from nnunet_ext.errors import UserInputError
from nnunet_ext.methods.dca.syn import SyNSettings, ants_field_to_voxels, import_ants, syn_register
from nnunet_ext.metrics.registration import warp_labels

SKIP_REASON = "antspyx (extra registration-bench) is not installed"


@pytest.fixture
def ants():
    return pytest.importorskip("ants", reason=SKIP_REASON)


def blob(shape, centre, spacing, radius=5.0):
    """A Gaussian blob of ``radius`` mm around ``centre`` (voxels) on a grid of ``spacing`` mm."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    squared = sum(((grid[a] - centre[a]) * spacing[a]) ** 2 for a in range(len(shape)))
    return np.exp(-squared / (2 * radius ** 2)).astype(np.float32)


# ------------------------------------------------------------------ conversion arithmetic (no ANTs needed)
def test_ants_field_to_voxels_reverses_axes_and_components_and_divides_by_the_spacing():
    shape_xyz, spacing_xyz = (4, 5, 6), (1.0, 2.0, 4.0)
    vectors = np.zeros(shape_xyz + (3,))
    vectors[1, 2, 3] = (1.0, 2.0, 4.0)  # physical mm, components (x, y, z): one voxel along every axis
    vectors[0, 0, 0] = (3.0, 0.0, 0.0)
    field = ants_field_to_voxels(vectors, spacing_xyz, np.eye(3))
    assert field.shape == (3, 6, 5, 4) and field.dtype == np.float32
    np.testing.assert_allclose(field[:, 3, 2, 1], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(field[:, 0, 0, 0], [0.0, 0.0, 3.0])  # an x displacement is our last component
    # a direction that swaps the physical x and y axes: index i moves along physical y
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])
    planar = np.zeros((3, 2, 2))
    planar[..., 1] = 2.0  # 2 mm along physical y = 2 / s_i voxels along index i (= our last axis x)
    np.testing.assert_allclose(ants_field_to_voxels(planar, (0.5, 1.0), swap)[:, 0, 0], [0.0, 4.0])
    with pytest.raises(ValueError, match="expected an ANTs field"):
        ants_field_to_voxels(np.zeros((3, 3, 3, 2)), (1, 1, 1), np.eye(3))


def test_a_missing_antspyx_is_a_one_line_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ants", None)  # makes "import ants" raise ImportError
    with pytest.raises(UserInputError, match=r"antspyx.*nnunet-ext\[registration-bench\]") as info:
        import_ants()
    assert "\n" not in str(info.value)
    with pytest.raises(UserInputError, match="registration-bench"):
        syn_register(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32))


@pytest.mark.parametrize("changes, message", [
    ({"syn_metric": "MI"}, "syn_metric must be one of"),
    ({"reg_iterations": (0, 0)}, "SyN iterations"),
    ({"reg_iterations": (10, -1)}, "SyN iterations"),
    ({"threads": 0}, "threads must be an integer >= 1"),
    ({"grad_step": 0.0}, "grad_step must be a finite number > 0"),
    ({"flow_sigma": float("nan")}, "flow_sigma"),
    ({"seed": -1}, "seed must be"),
])
def test_bad_settings_are_refused(changes, message):
    import dataclasses

    with pytest.raises(UserInputError, match=message):
        dataclasses.replace(SyNSettings(), **changes).check()


# ------------------------------------------------------------------ with ANTs
@pytest.mark.parametrize("shape, spacing, fixed_centre, moving_centre", [
    ((24, 24, 24), (1.0, 1.0, 1.0), (12.0, 12.0, 12.0), (11.0, 13.0, 10.0)),
    ((20, 24, 28), (2.0, 1.5, 1.0), (10.0, 12.0, 14.0), (9.0, 13.0, 12.0)),
    ((30, 26), (1.5, 0.8), (15.0, 13.0), (13.0, 15.0)),
], ids=["3d-isotropic", "3d-anisotropic", "2d-anisotropic"])
def test_our_label_warp_with_the_converted_field_reproduces_ants_nearest_neighbour(ants, shape, spacing, fixed_centre,
                                                                                    moving_centre):
    fixed, moving = blob(shape, fixed_centre, spacing), blob(shape, moving_centre, spacing)
    labels = ((moving > 0.3).astype(np.uint8) + (moving > 0.7)).astype(np.uint8)

    result = syn_register(fixed, moving, spacing, moving_labels=labels)

    assert result.displacement.shape == (len(shape),) + shape and result.displacement.dtype == np.float32
    assert result.warped.shape == shape and result.warped_labels.shape == shape
    assert result.warped_labels.dtype == np.uint8 and set(np.unique(result.warped_labels)) <= {0, 1, 2}
    assert np.count_nonzero(result.warped_labels != labels) > 50  # ANTs moved the labels: not a trivial check
    ours = warp_labels(labels, result.displacement)
    assert np.mean(ours == result.warped_labels) > 0.999
    # fixed(x) = moving(x + (moving_centre - fixed_centre)): the field points that way inside the blob
    inside = fixed > 0.5
    shift = np.subtract(moving_centre, fixed_centre)
    mean = result.displacement[:, inside].mean(axis=1)
    assert np.all(np.sign(mean[shift != 0]) == np.sign(shift[shift != 0]))
    assert np.all(np.abs(mean - shift) < 0.6)
    assert np.abs(result.warped - fixed).mean() < 0.5 * np.abs(moving - fixed).mean()
    assert result.seconds > 0 and result.settings["type_of_transform"] == "SyNOnly"


def test_one_thread_gives_bitwise_identical_fields(ants):
    spacing = (1.0, 1.0, 1.0)
    fixed, moving = blob((24, 24, 24), (12.0, 12.0, 12.0), spacing), blob((24, 24, 24), (11.0, 13.0, 12.0), spacing)
    first = syn_register(fixed, moving, spacing, SyNSettings(threads=1))
    second = syn_register(fixed, moving, spacing, SyNSettings(threads=1))
    assert np.array_equal(first.displacement, second.displacement)
    assert np.array_equal(first.warped, second.warped)


def test_bad_inputs_are_refused(ants):
    with pytest.raises(ValueError, match="one shape"):
        syn_register(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="spacing must have 2 positive entries"):
        syn_register(np.zeros((8, 8)), np.zeros((8, 8)), (1.0, 0.0))
