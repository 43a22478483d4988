"""SimSiam baseline views (Sect. 3: blurring, flipping, Gaussian noising, scaling): shapes, seeds, each transform."""
from __future__ import annotations

import pytest
import torch

from nnunet_ext.methods.contrastive.augment import simsiam_view

NONE = {"p_blur": 0.0, "p_flip": 0.0, "p_noise": 0.0, "p_scale": 0.0}


def _patch(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3 + 1


def _view(patch, seed, **probabilities):
    return simsiam_view(patch, torch.Generator().manual_seed(seed), **{**NONE, **probabilities})


@pytest.mark.parametrize("shape", [(2, 1, 8, 10, 12), (3, 2, 6, 6, 6), (1, 1, 4, 9, 5)])
def test_shape_kept_and_input_untouched(shape):
    patch = _patch(shape)
    before = patch.clone()
    view = simsiam_view(patch, torch.Generator().manual_seed(1), 1.0, 1.0, 1.0, 1.0)
    assert view.shape == patch.shape and view.dtype == patch.dtype
    torch.testing.assert_close(patch, before, rtol=0, atol=0)


def test_same_seed_same_view_other_seed_other_view():
    patch = _patch((4, 2, 6, 8, 8))
    first = simsiam_view(patch, torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, simsiam_view(patch, torch.Generator().manual_seed(3)), rtol=0, atol=0)
    assert not torch.allclose(first, simsiam_view(patch, torch.Generator().manual_seed(4)))


def test_nothing_changes_with_all_probabilities_zero():
    patch = _patch((3, 1, 6, 7, 8))
    torch.testing.assert_close(_view(patch, 0), patch, rtol=0, atol=0)


@pytest.mark.parametrize("transform", ["p_blur", "p_flip", "p_noise", "p_scale"])
def test_each_transform_changes_every_sample(transform):
    patch = _patch((4, 1, 8, 8, 8))
    view = _view(patch, 2, **{transform: 1.0})
    assert all(not torch.allclose(v, p, atol=1e-3) for v, p in zip(view, patch))


def test_flips_are_the_two_in_plane_axes():
    patch = _patch((2, 2, 5, 6, 7))
    torch.testing.assert_close(_view(patch, 0, p_flip=1.0), patch.flip(-1).flip(-2), rtol=0, atol=0)


def test_blur_smooths_and_keeps_constants():
    """Blurring: a Gaussian (sigma 0.5-1 voxel) lowers the variance of noise, keeps the mean and constant patches."""
    patch = _patch((3, 1, 10, 10, 10))
    view = _view(patch, 0, p_blur=1.0)
    assert (view.flatten(1).var(1) < 0.7 * patch.flatten(1).var(1)).all()
    torch.testing.assert_close(view.mean((1, 2, 3, 4)), patch.mean((1, 2, 3, 4)), rtol=0, atol=0.1)
    constant = torch.full((2, 1, 6, 6, 6), 4.0)
    torch.testing.assert_close(_view(constant, 0, p_blur=1.0, p_scale=1.0), constant)


def test_noise_amplitude_is_at_most_a_tenth_of_the_std():
    patch = _patch((4, 1, 12, 12, 12))
    difference = _view(patch, 5, p_noise=1.0) - patch
    ratio = difference.flatten(1).std(1) / patch.flatten(1).std(1)
    assert ((ratio > 0) & (ratio < 0.1 * 1.1)).all()


def test_scaling_zooms_about_the_centre():
    """Scaling read as a spatial zoom: a centred cube grows or shrinks with the factor (0.75 to 1.25)."""
    patch = torch.zeros((6, 1, 16, 16, 16))
    patch[:, :, 4:12, 4:12, 4:12] = 1.0
    view = _view(patch, 7, p_scale=1.0)
    volume = (view > 0.5).flatten(1).sum(1).float() / 8 ** 3
    assert ((volume > 0.75 ** 3 * 0.6) & (volume < 1.25 ** 3 * 1.4)).all()
    assert (volume - 1).abs().max() > 0.1  # at least one sample visibly zoomed
    torch.testing.assert_close(view, view.flip(-1).flip(-2).flip(-3), rtol=0, atol=1e-5)  # still centred


def test_bad_shape():
    with pytest.raises(ValueError, match="B, C"):
        simsiam_view(torch.zeros(1, 4, 4, 4), torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_with_a_cpu_generator():
    patch = _patch((2, 1, 8, 8, 8))
    on_cpu = simsiam_view(patch, torch.Generator().manual_seed(0), 1.0, 1.0, 1.0, 1.0)
    on_gpu = simsiam_view(patch.cuda(), torch.Generator().manual_seed(0), 1.0, 1.0, 1.0, 1.0)
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-4)
