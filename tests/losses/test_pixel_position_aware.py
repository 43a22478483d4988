"""Tests for nnunet_ext.losses.pixel_position_aware: F3Net's PPA loss (weighted BCE + weighted IoU)."""
import math

import numpy as np
import pytest
import torch

from nnunet_ext.losses.pixel_position_aware import (PixelPositionAwareLoss, one_vs_rest_logits, ppa_loss_binary,
                                                    position_aware_weights, weighted_bce, weighted_iou)

torch.set_num_threads(1)


def box_mean_loops(g: np.ndarray, size: int = 31) -> np.ndarray:
    """Mean over the size x size box around every pixel, the outside counted as zeros (count_include_pad=True)."""
    half = size // 2
    height, width = g.shape
    out = np.zeros((height, width))
    for i in range(height):
        for j in range(width):
            window = g[max(i - half, 0):i + half + 1, max(j - half, 0):j + half + 1]
            out[i, j] = window.sum() / size ** 2
    return out


def weights_numpy(g: np.ndarray) -> np.ndarray:
    return 1.0 + 5.0 * np.abs(box_mean_loops(g) - g)


def bce_numpy(z: float, g: float) -> float:
    """-g log sigmoid(z) - (1 - g) log(1 - sigmoid(z)) written as max(z, 0) - z g + log(1 + exp(-|z|))."""
    return max(z, 0.0) - z * g + math.log1p(math.exp(-abs(z)))


def ppa_terms_numpy(z: np.ndarray, g: np.ndarray):
    """Per-image weighted BCE and weighted IoU of one (H, W) image by explicit sums over the pixels."""
    w = weights_numpy(g)
    sum_w = sum_wbce = inter = sum_wpg = 0.0
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            p = 1.0 / (1.0 + math.exp(-z[i, j]))
            sum_w += w[i, j]
            sum_wbce += w[i, j] * bce_numpy(z[i, j], g[i, j])
            inter += w[i, j] * p * g[i, j]
            sum_wpg += w[i, j] * (p + g[i, j])
    return sum_wbce / sum_w, 1.0 - (inter + 1.0) / (sum_wpg - inter + 1.0)


def rectangles_mask(shape, seed: int, count: int = 3) -> np.ndarray:
    """(B, 1, H, W) binary masks made of a few random rectangles per image."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape)
    for b in range(shape[0]):
        for _ in range(count):
            top, left = rng.integers(0, shape[2]), rng.integers(0, shape[3])
            mask[b, 0, top:top + rng.integers(2, 12), left:left + rng.integers(2, 12)] = 1.0
    return mask


def square_image(rows, cols, size=64) -> np.ndarray:
    g = np.zeros((size, size))
    g[rows[0]:rows[1], cols[0]:cols[1]] = 1.0
    return g


@pytest.mark.parametrize("g", [square_image((12, 52), (8, 48)), square_image((0, 20), (44, 64)),
                               square_image((0, 64), (0, 64)), np.zeros((64, 64)), square_image((5, 9), (30, 31))],
                         ids=["inner_square", "corner_square", "full", "empty", "small_bar"])
def test_weights_match_uniform_filter_with_zero_padding(g):
    ndimage = pytest.importorskip("scipy.ndimage")
    w = position_aware_weights(torch.from_numpy(g).float()[None, None])[0, 0].double().numpy()
    # uniform_filter with mode='constant' (cval 0) divides by 31 * 31 everywhere, like count_include_pad=True.
    expected = 1.0 + 5.0 * np.abs(ndimage.uniform_filter(g, size=31, mode="constant") - g)
    np.testing.assert_allclose(w, expected, atol=1e-5, rtol=0)  # every pixel, edges included
    np.testing.assert_allclose(w, weights_numpy(g), atol=1e-5, rtol=0)
    assert w.min() >= 1.0 - 1e-6 and w.max() <= 6.0 + 1e-6


def test_weights_analytic_values():
    inner = position_aware_weights(torch.from_numpy(square_image((12, 52), (8, 48))).float()[None, None])[0, 0]
    assert inner[0, 63].item() == 1.0 and inner[63, 63].item() == 1.0  # no mass in the box: far from the edge
    assert inner[32, 28].item() == pytest.approx(1.0, abs=1e-6)  # box entirely inside the mass
    assert inner[12, 8].item() > 1.0 and inner[11, 8].item() > 1.0  # both sides of the boundary
    assert torch.equal(position_aware_weights(torch.zeros(2, 1, 40, 50)), torch.ones(2, 1, 40, 50))
    # count_include_pad=True: an all-foreground image still gets weights at its border; in the corner the box
    # holds 16 x 16 image pixels out of 31 x 31.
    full = position_aware_weights(torch.ones(1, 1, 64, 64))[0, 0]
    assert full[0, 0].item() == pytest.approx(1.0 + 5.0 * (1.0 - 256.0 / 961.0), rel=1e-6)
    assert full[32, 32].item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("shape,seed", [((2, 1, 20, 24), 0), ((3, 1, 33, 17), 1), ((1, 1, 9, 40), 2)])
def test_terms_match_bruteforce_numpy(shape, seed):
    g = rectangles_mask(shape, seed)
    z = 3.0 * np.random.default_rng(seed + 10).standard_normal(shape)
    z_t, g_t = torch.from_numpy(z).float(), torch.from_numpy(g).float()
    z = z_t.double().numpy()  # the float32-rounded logits the loss sees
    reference = [ppa_terms_numpy(z[b, 0], g[b, 0]) for b in range(shape[0])]
    weights = position_aware_weights(g_t)
    bce = weighted_bce(z_t, g_t, weights)
    iou = weighted_iou(z_t, g_t, weights)
    assert bce.shape == iou.shape == shape[:2]
    for b, (bce_ref, iou_ref) in enumerate(reference):
        assert bce[b, 0].item() == pytest.approx(bce_ref, rel=1e-5)
        assert iou[b, 0].item() == pytest.approx(iou_ref, rel=1e-5)
    total = np.mean([r[0] for r in reference]) + np.mean([r[1] for r in reference])
    assert ppa_loss_binary(z_t, g_t).item() == pytest.approx(total, rel=1e-5)


def test_iou_analytic_cases():
    g = torch.from_numpy(square_image((12, 40), (20, 30))).float()[None, None]
    w_g = float((weights_numpy(g[0, 0].double().numpy()) * g[0, 0].double().numpy()).sum())
    weights = position_aware_weights(g)
    perfect = weighted_iou(40.0 * (2 * g - 1), g, weights).item()
    assert 0.0 <= perfect < 1e-6
    all_background = weighted_iou(torch.full_like(g, -40.0), g, weights).item()
    assert all_background == pytest.approx(1.0 - 1.0 / (w_g + 1.0), rel=1e-6)

    empty = torch.zeros(1, 1, 16, 20)
    confident = ppa_loss_binary(torch.full_like(empty, -40.0), empty)
    assert torch.isfinite(confident) and 0.0 <= confident.item() < 1e-6
    undecided_iou = weighted_iou(torch.zeros_like(empty), empty, position_aware_weights(empty)).item()
    assert undecided_iou == pytest.approx(1.0 - 1.0 / (0.5 * 16 * 20 + 1.0), rel=1e-6)
    assert ppa_loss_binary(torch.zeros_like(empty), empty).item() == pytest.approx(
        math.log(2.0) + 1.0 - 1.0 / (0.5 * 16 * 20 + 1.0), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_quirk_uses_the_plain_mean_bce(seed):
    shape = (2, 1, 24, 28)
    g = rectangles_mask(shape, seed)
    z = 2.0 * np.random.default_rng(seed + 20).standard_normal(shape)
    z_t, g_t = torch.from_numpy(z).float(), torch.from_numpy(g).float()
    z = z_t.double().numpy()
    plain_bce = np.mean([bce_numpy(zz, gg) for zz, gg in zip(z.ravel(), g.ravel())])
    iou = np.mean([ppa_terms_numpy(z[b, 0], g[b, 0])[1] for b in range(shape[0])])
    quirk = ppa_loss_binary(z_t, g_t, reference_quirk=True).item()
    assert quirk == pytest.approx(plain_bce + iou, rel=1e-5)
    assert abs(quirk - ppa_loss_binary(z_t, g_t).item()) > 1e-3  # the weights matter on a non-uniform mask

    empty = torch.zeros(shape)
    torch.testing.assert_close(ppa_loss_binary(z_t, empty, reference_quirk=True), ppa_loss_binary(z_t, empty))


def random_logits(shape, seed, scale=2.0):
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def random_labels(shape, seed, num_classes):
    return torch.randint(0, num_classes, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_one_vs_rest_logits_reproduce_softmax(num_classes):
    logits = random_logits((2, num_classes, 5, 6), seed=num_classes).double()
    z = one_vs_rest_logits(logits)
    assert z.shape == (2, num_classes - 1, 5, 6)
    torch.testing.assert_close(torch.sigmoid(z), torch.softmax(logits, 1)[:, 1:])
    if num_classes == 2:
        torch.testing.assert_close(z[:, 0], logits[:, 1] - logits[:, 0])


def test_two_class_loss_is_the_binary_loss_on_the_logit_difference():
    logits = random_logits((2, 2, 20, 22), seed=3)
    target = torch.from_numpy(rectangles_mask((2, 1, 20, 22), seed=4)).float()  # labels 0/1 as a float map
    loss = PixelPositionAwareLoss()(logits, target)
    torch.testing.assert_close(loss, ppa_loss_binary(logits[:, 1:2] - logits[:, 0:1], target))
    # softmax is unchanged by adding the same (per-pixel) value to both channels, and so is the loss
    shift = random_logits((2, 1, 20, 22), seed=5, scale=10.0)
    torch.testing.assert_close(PixelPositionAwareLoss()(logits + shift, target), loss)
    torch.testing.assert_close(PixelPositionAwareLoss()(logits + 3.0, target), loss)
    # a (B, H, W) target is accepted too
    torch.testing.assert_close(PixelPositionAwareLoss()(logits, target[:, 0]), loss)


def test_gradient_flows_to_both_channels():
    logits = random_logits((2, 2, 16, 16), seed=6).requires_grad_(True)
    target = torch.from_numpy(rectangles_mask((2, 1, 16, 16), seed=7))
    PixelPositionAwareLoss()(logits, target).backward()
    grad = logits.grad
    assert torch.isfinite(grad).all()
    assert grad[:, 0].abs().sum() > 0 and grad[:, 1].abs().sum() > 0
    torch.testing.assert_close(grad[:, 0], -grad[:, 1])  # the loss depends on logits_1 - logits_0 only


@pytest.mark.parametrize("num_classes,quirk", [(2, False), (3, False), (4, False), (3, True)])
def test_multi_class_is_the_mean_of_one_vs_rest_losses(num_classes, quirk):
    logits = random_logits((2, num_classes, 18, 21), seed=8)
    labels = random_labels((2, 1, 18, 21), seed=9, num_classes=num_classes)
    probabilities = torch.softmax(logits.double(), 1)
    expected = []
    for c in range(1, num_classes):
        p_c = probabilities[:, c:c + 1]
        z_c = torch.log(p_c) - torch.log1p(-p_c)  # logit of the softmax probability
        expected.append(ppa_loss_binary(z_c, (labels == c).float(), reference_quirk=quirk))
    loss = PixelPositionAwareLoss(reference_quirk=quirk)(logits, labels.float())
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


@pytest.mark.parametrize("num_classes,quirk", [(2, False), (2, True), (3, False)])
def test_ignored_pixels_do_not_change_the_loss(num_classes, quirk):
    logits = random_logits((2, num_classes, 20, 20), seed=10)
    labels = random_labels((2, 1, 20, 20), seed=11, num_classes=num_classes)
    labels[:, :, 3:9, 5:15] = 255
    labels[1, :, 15:, :] = 255
    ignored = labels == 255
    loss_fn = PixelPositionAwareLoss(reference_quirk=quirk, ignore_label=255)
    loss = loss_fn(logits, labels.float())
    changed = torch.where(ignored, random_logits(logits.shape, seed=12, scale=20.0), logits)
    torch.testing.assert_close(loss_fn(changed, labels), loss)
    assert torch.isfinite(loss)
    # the ignored pixels count as background in the box mean and get weight 0 in both terms
    if num_classes == 2:
        background = torch.where(ignored, torch.zeros_like(labels), labels).float()
        expected = ppa_loss_binary(logits[:, 1:2] - logits[:, 0:1], background, quirk, valid=~ignored)
        torch.testing.assert_close(loss, expected)


def test_fully_ignored_image_scores_zero():
    logits = random_logits((1, 2, 8, 8), seed=13)
    labels = torch.full((1, 1, 8, 8), 255.0)
    for quirk in (False, True):
        loss = PixelPositionAwareLoss(reference_quirk=quirk, ignore_label=255)(logits, labels)
        assert loss.item() == 0.0


def test_non_2d_and_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="2D"):
        PixelPositionAwareLoss()(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="2D"):
        PixelPositionAwareLoss()(torch.zeros(1, 2, 8), torch.zeros(1, 1, 8))
    with pytest.raises(ValueError, match="2D"):
        ppa_loss_binary(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        ppa_loss_binary(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="target"):
        PixelPositionAwareLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="at least 2 channels"):
        PixelPositionAwareLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        position_aware_weights(torch.zeros(1, 1, 4, 4), kernel_size=4)


def test_half_precision_inputs_are_computed_in_float32():
    logits = random_logits((2, 2, 24, 24), seed=14, scale=8.0).half().requires_grad_(True)
    labels = torch.from_numpy(rectangles_mask((2, 1, 24, 24), seed=15)).half()
    for quirk in (False, True):
        loss = PixelPositionAwareLoss(reference_quirk=quirk)(logits, labels)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        expected = PixelPositionAwareLoss(reference_quirk=quirk)(logits.detach().float(), labels.float())
        torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad.dtype == torch.float16 and torch.isfinite(logits.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_loss = PixelPositionAwareLoss()(logits.detach().float(), labels)
    assert autocast_loss.dtype == torch.float32
    torch.testing.assert_close(autocast_loss, PixelPositionAwareLoss()(logits.detach().float(), labels))
