"""Tests for nnunet_ext.methods.dca.transform: pull-back warping, one-hot label warping, scaling and squaring."""
import numpy as np
import pytest
import torch

from nnunet_ext.methods.dca.transform import (
    SpatialTransformer,
    identity_grid,
    integrate_velocity,
    warp,
    warp_labels_one_hot,
)

SHAPES = {2: (9, 11), 3: (5, 6, 7)}


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def constant_field(ndim, vector, batch=2, dtype=torch.float64):
    shape = SHAPES[ndim]
    return torch.tensor(vector, dtype=dtype).view(1, ndim, *([1] * ndim)).expand(batch, ndim, *shape).clone()


def test_identity_grid():
    grid = identity_grid((2, 3))
    assert grid.shape == (2, 2, 3)
    assert torch.equal(grid[0], torch.tensor([[0.0, 0, 0], [1, 1, 1]]))
    assert torch.equal(grid[1], torch.tensor([[0.0, 1, 2], [0, 1, 2]]))


@pytest.mark.parametrize("ndim", [2, 3])
def test_zero_field_returns_input(ndim):
    shape = SHAPES[ndim]
    image = randn(2, 3, *shape)
    transformer = SpatialTransformer(shape).to(torch.float64)
    zero = torch.zeros(2, ndim, *shape, dtype=torch.float64)
    assert torch.equal(transformer(image, zero, mode="nearest"), image)
    # linear interpolation at the voxel centres: exact up to round-off in grid_sample's coordinate maps
    torch.testing.assert_close(transformer(image, zero), image, rtol=0, atol=1e-12)
    image32 = image.float()
    torch.testing.assert_close(warp(image32, zero.float()), image32, rtol=0, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_constant_integer_displacement_is_a_shift(ndim, mode):
    """u = (+1 along axis 0, -2 along the last axis) pulls image[x0 + 1, ..., x_last - 2]."""
    shape = SHAPES[ndim]
    image = randn(2, 3, *shape)
    vector = [0.0] * ndim
    vector[0], vector[-1] = 1.0, -2.0
    warped = SpatialTransformer(shape, mode=mode)(image, constant_field(ndim, vector))
    expected = torch.roll(image, shifts=(-1, 2), dims=(2, 1 + ndim))
    interior = (Ellipsis, slice(0, shape[0] - 1)) + (slice(None),) * (ndim - 2) + (slice(2, None),)
    torch.testing.assert_close(warped[interior], expected[interior], rtol=0, atol=1e-12)
    outside = (Ellipsis, shape[0] - 1) + (slice(None),) * (ndim - 1)
    assert torch.all(warped[outside] == 0)  # zero padding


@pytest.mark.parametrize("ndim", [2, 3])
def test_fractional_displacement_interpolates_linearly(ndim):
    shape = SHAPES[ndim]
    ramp = identity_grid(shape, torch.float64)[-1].expand(1, 1, *shape)  # value = index along the last axis
    vector = [0.0] * (ndim - 1) + [0.25]
    warped = warp(ramp, constant_field(ndim, vector, batch=1))
    torch.testing.assert_close(warped[..., :-1], ramp[..., :-1] + 0.25, rtol=0, atol=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
def test_nearest_and_one_hot_warps_keep_the_label_set(ndim):
    shape = SHAPES[ndim]
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (2, 1, *shape), generator=generator)
    labels[labels == 2] = 3  # labels {0, 1, 3}: a missing class must not appear
    displacement = 1.5 * randn(2, ndim, *shape, seed=1)
    nearest = warp(labels.double(), displacement, mode="nearest")
    assert set(nearest.unique().tolist()) <= {0.0, 1.0, 3.0}
    assert torch.equal(nearest, nearest.round())
    one_hot = warp_labels_one_hot(labels, displacement, num_classes=4)
    assert one_hot.shape == labels.shape and one_hot.dtype == labels.dtype
    assert set(one_hot.unique().tolist()) <= {0, 1, 3}
    assert torch.equal(warp_labels_one_hot(labels, torch.zeros_like(displacement), 4), labels)


@pytest.mark.parametrize("ndim", [2, 3])
def test_integrate_velocity_zero_and_translation(ndim):
    shape = SHAPES[ndim]
    assert torch.equal(integrate_velocity(torch.zeros(1, ndim, *shape)), torch.zeros(1, ndim, *shape))
    velocity = constant_field(ndim, [0.3, -0.7, 0.45][:ndim])
    torch.testing.assert_close(integrate_velocity(velocity), velocity, rtol=0, atol=1e-12)  # exp(translation)
    torch.testing.assert_close(integrate_velocity(velocity, steps=0), velocity)


@pytest.mark.parametrize("ndim", [2, 3])
def test_integrate_velocity_agrees_with_numpy_version(ndim):
    from nnunet_ext.synth._shapes import integrate_velocity as integrate_numpy
    from nnunet_ext.synth._shapes import smooth_random_field

    shape = SHAPES[ndim]
    rng = np.random.default_rng(0)
    velocity = np.stack([2.0 * smooth_random_field(rng, shape, 2.0) for _ in range(ndim)])
    expected = integrate_numpy(velocity, steps=5)
    got = integrate_velocity(torch.from_numpy(velocity)[None], steps=5)[0].numpy()
    assert np.abs(expected).max() > 0.5  # a real deformation, not a near-identity
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_input_checks():
    with pytest.raises(ValueError, match="displacement must have shape"):
        warp(randn(1, 1, 4, 5), torch.zeros(1, 3, 4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="mode"):
        warp(randn(1, 1, 4, 5), torch.zeros(1, 2, 4, 5, dtype=torch.float64), mode="bicubic-ish")
    with pytest.raises(ValueError, match="transformer size"):
        SpatialTransformer((4, 4))(randn(1, 1, 4, 5), torch.zeros(1, 2, 4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="steps"):
        integrate_velocity(torch.zeros(1, 2, 4, 4), steps=-1)
    with pytest.raises(ValueError, match="velocity"):
        integrate_velocity(torch.zeros(1, 3, 4, 4))
