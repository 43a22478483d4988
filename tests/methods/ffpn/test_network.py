"""FFPN network: harmonic split (Fig. 2c), output shapes, the torch rasteriser against skimage, the ring rule."""
import numpy as np
import pytest
import torch
from skimage.draw import polygon2mask

from nnunet_ext.methods.ffpn import network


def anchor_fractions(num_anchors=3, order=7):
    fractions = np.zeros((num_anchors, order, 4))
    fractions[:, 0, 1] = fractions[:, 0, 2] = np.linspace(0.1, 0.3, num_anchors)
    return fractions


@pytest.mark.parametrize("order,expected", [(7, [[0, 1, 2], [3, 4], [5, 6]]), (3, [[0], [1], [2]])])
def test_harmonic_split_puts_low_frequencies_on_the_coarse_level(order, expected):
    assert network.harmonic_split(order) == expected


def test_harmonic_split_needs_a_harmonic_per_level():
    with pytest.raises(ValueError, match="at least 3 harmonics"):
        network.harmonic_split(2)


@pytest.mark.parametrize("in_channels,num_classes", [(1, 1), (3, 3)])
def test_training_maps_and_eval_label_logits(in_channels, num_classes):
    torch.manual_seed(0)
    net = network.FFPN(in_channels, num_classes, anchor_fractions(), input_size=64, preset="tiny")
    x = torch.randn(2, in_channels, 40, 52)
    maps = net.train()(x)
    grid = 64 // network.FFPN.stride
    assert maps["fourier"].shape == (2, 3, 7, 4, grid, grid)
    assert maps["location"].shape == (2, 3, 2, grid, grid)
    assert maps["logits"].shape == (2, 3, num_classes, grid, grid)
    with torch.no_grad():
        logits = net.eval()(x)
    assert logits.shape == (2, num_classes + 1, 40, 52)
    assert torch.equal(logits.sum(1), torch.ones(2, 40, 52))  # one-hot label map


def test_fourier_offsets_are_concatenated_in_harmonic_order():
    """Zeroing the P3 head's output (highest harmonics) must change only harmonics 6-7 of the Fourier map."""
    torch.manual_seed(0)
    net = network.FFPN(1, 1, anchor_fractions(), input_size=64, preset="tiny").train()
    x = torch.randn(2, 1, 64, 64)
    before = net.forward_maps(x)["fourier"]
    with torch.no_grad():
        net.heads[2].predict.weight.zero_()
        net.heads[2].predict.bias.zero_()
    after = net.forward_maps(x)["fourier"]
    torch.testing.assert_close(after[:, :, :5], before[:, :, :5])
    assert torch.count_nonzero(after[:, :, 5:]) == 0 and torch.count_nonzero(before[:, :, 5:]) > 0


def test_bad_preset_and_input_size():
    with pytest.raises(ValueError, match="unknown FFPN preset"):
        network.FFPN(1, 1, anchor_fractions(), preset="vgg")
    with pytest.raises(ValueError, match="multiple of 32"):
        network.FFPN(1, 1, anchor_fractions(), input_size=100)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inside_polygon_matches_skimage(seed):
    rng = np.random.default_rng(seed)
    theta = np.sort(rng.uniform(0, 2 * np.pi, 25))
    radius = rng.uniform(4, 14, 25)
    points = np.stack([22 + radius * np.cos(theta), 17 + radius * np.sin(theta)], axis=1) + 0.123
    ours = network.inside_polygon(torch.from_numpy(points), 36, 47).numpy()
    assert np.array_equal(ours, polygon2mask((36, 47), points[:, ::-1]))


def test_inside_polygon_batches():
    square = torch.tensor([[1.5, 1.5], [5.5, 1.5], [5.5, 4.5], [1.5, 4.5]])
    batch = torch.stack([square, square + 2])[None]  # (1, 2, T, 2)
    inside = network.inside_polygon(batch, 10, 10)
    assert inside.shape == (1, 2, 10, 10)
    assert inside[0, 0].sum() == 4 * 3 and inside[0, 0, 2:5, 2:6].all()
    assert torch.equal(inside[0, 1, 2:, 2:], inside[0, 0, :-2, :-2])


def circle_points(cx, cy, r, count=64):
    t = torch.arange(count) / count * 2 * torch.pi
    return torch.stack([cx + r * torch.cos(t), cy + r * torch.sin(t)], dim=-1)


def test_ring_rule_paints_the_larger_filled_outline_first():
    """Myocardium (class 2) is trained as its filled outline; the cavity (class 1) inside must cut the ring out."""
    cavity, outline = circle_points(20, 20, 6), circle_points(20, 20, 10)
    logits = network.paint_label_logits(torch.stack([cavity, outline])[None], torch.tensor([[0.9, 0.9]]), (40, 40))
    label = logits.argmax(1)[0]
    assert label[20, 20] == 1 and label[20, 28] == 2 and label[20, 35] == 0
    ring = (label == 2).numpy()
    yy, xx = np.mgrid[:40, :40]
    assert ring.sum() == pytest.approx(np.pi * (10**2 - 6**2), rel=0.1)
    assert not ring[np.hypot(xx - 20, yy - 20) < 5.5].any()


def test_low_score_classes_are_not_painted():
    logits = network.paint_label_logits(circle_points(10, 10, 5)[None, None], torch.tensor([[0.2]]), (20, 20))
    assert (logits.argmax(1) == 0).all()
