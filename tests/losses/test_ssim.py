"""Tests for nnunet_ext.losses.ssim: the global-statistics SSIM term of DKM Eq. 7."""
import numpy as np
import pytest
import torch

from nnunet_ext.losses.ssim import SSIMLoss, global_ssim

torch.set_num_threads(1)


def eq7_numpy(s: np.ndarray, g: np.ndarray, data_range: float = 1.0, k1: float = 0.01, k2: float = 0.03) -> float:
    """Plain transcription of the SSIM fraction of Eq. 7 with whole-image (population) statistics."""
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_s, mu_g = s.mean(), g.mean()
    phi_s2, phi_g2 = s.var(), g.var()
    phi_sg = ((s - mu_s) * (g - mu_g)).mean()
    return ((2 * mu_s * mu_g + c1) * (2 * phi_sg + c2)) / ((mu_s ** 2 + mu_g ** 2 + c1) * (phi_s2 + phi_g2 + c2))


def random_maps(shape, seed):
    rng = np.random.default_rng(seed)
    s = rng.random(shape)
    g = np.clip(s + 0.3 * rng.standard_normal(shape), 0, 1)
    return s, g


@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (1, 2, 6, 7, 8)])
def test_global_ssim_matches_numpy_transcription(shape):
    s, g = random_maps(shape, seed=0)
    ssim = global_ssim(torch.from_numpy(s), torch.from_numpy(g)).numpy()
    assert ssim.shape == shape[:2]
    for b in range(shape[0]):
        for c in range(shape[1]):
            assert ssim[b, c] == pytest.approx(eq7_numpy(s[b, c], g[b, c]), rel=1e-10)
    # data_range scales both constants: C = (k L)^2.
    assert global_ssim(torch.from_numpy(s), torch.from_numpy(g), data_range=2.0)[0, 0].item() == pytest.approx(
        eq7_numpy(s[0, 0], g[0, 0], data_range=2.0), rel=1e-10)


@pytest.mark.parametrize("shape", [(9, 9), (7, 7, 7)])
def test_global_ssim_matches_skimage_with_whole_image_window(shape):
    """skimage with an odd window as large as the image has a single valid (interior) position, the centre, whose
    uniform window covers the whole image exactly: its SSIM is the global SSIM (population moments because
    use_sample_covariance=False)."""
    metrics = pytest.importorskip("skimage.metrics")
    s, g = random_maps(shape, seed=1)
    mssim, ssim_map = metrics.structural_similarity(s, g, win_size=shape[0], gaussian_weights=False,
                                                    use_sample_covariance=False, data_range=1.0, full=True)
    centre = tuple(size // 2 for size in shape)
    assert mssim == pytest.approx(ssim_map[centre], rel=1e-12)  # the mean runs over that single interior value
    ours = global_ssim(torch.from_numpy(s)[None, None], torch.from_numpy(g)[None, None])[0, 0].item()
    assert ours == pytest.approx(mssim, rel=1e-8)
    assert ours == pytest.approx(eq7_numpy(s, g), rel=1e-10)


def test_global_ssim_mask_restricts_statistics():
    s, g = random_maps((1, 1, 6, 8), seed=2)
    s_t, g_t = torch.from_numpy(s), torch.from_numpy(g)
    torch.testing.assert_close(global_ssim(s_t, g_t, mask=torch.ones(1, 1, 6, 8)), global_ssim(s_t, g_t))
    mask = torch.zeros(1, 1, 6, 8, dtype=torch.bool)
    mask[..., 1:4, 2:7] = True
    expected = eq7_numpy(s[0, 0, 1:4, 2:7], g[0, 0, 1:4, 2:7])
    assert global_ssim(s_t, g_t, mask=mask).item() == pytest.approx(expected, rel=1e-10)


def labels_3d(seed=0, num_classes=3, shape=(2, 1, 8, 8, 8)):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes, shape, generator=generator)


@pytest.mark.parametrize("shape", [(2, 1, 8, 8, 8), (3, 1, 10, 12)])
def test_loss_vanishes_for_a_perfect_prediction(shape):
    target = labels_3d(shape=shape)
    one_hot = torch.zeros(shape[0], 3, *shape[2:]).scatter_(1, target, 1.0)
    loss = SSIMLoss()(40.0 * one_hot, target.float())  # nnU-Net passes float label maps
    assert 0.0 <= loss.item() < 1e-6
    assert SSIMLoss()(-40.0 * one_hot, target).item() > 0.5


def test_loss_matches_definition_on_foreground_classes():
    target = labels_3d(seed=1)
    logits = torch.randn(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    probabilities = torch.softmax(logits, 1)
    one_hot = torch.zeros_like(logits).scatter_(1, target, 1.0)
    expected = 1 - global_ssim(probabilities[:, 1:], one_hot[:, 1:]).mean()
    torch.testing.assert_close(SSIMLoss()(logits, target), expected)
    with_background = 1 - global_ssim(probabilities, one_hot).mean()
    torch.testing.assert_close(SSIMLoss(include_background=True)(logits, target), with_background)


def test_loss_ignore_label_excludes_voxels():
    target = labels_3d(seed=4, num_classes=2, shape=(1, 1, 6, 6, 6))
    ignored = target.clone()
    ignored[..., :2] = 7
    logits = torch.randn(1, 2, 6, 6, 6, generator=torch.Generator().manual_seed(5))
    loss = SSIMLoss(ignore_label=7)(logits, ignored)
    cropped = SSIMLoss()(logits[..., 2:], target[..., 2:])
    torch.testing.assert_close(loss, cropped)


def test_gradient_flows_to_logits():
    target = labels_3d(seed=6)
    logits = torch.randn(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(7), requires_grad=True)
    SSIMLoss()(logits, target).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_empty_class_in_both_maps_scores_one():
    zeros = torch.zeros(1, 1, 4, 4)
    assert global_ssim(zeros, zeros).item() == pytest.approx(1.0)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        global_ssim(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="target"):
        SSIMLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
