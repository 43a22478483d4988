"""FFPN anchors: k-means, the contour IoU (PolarIoU * BoxIoU), Eq. 2 offsets and anchor assignment."""
import numpy as np
import pytest
import torch
import torchvision

from nnunet_ext.methods.ffpn import anchors, fourier


def circle(radius: float, order: int = 3) -> torch.Tensor:
    """Eq. 1 coefficients of a circle of ``radius`` (b_1 = c_1 = r)."""
    coefficients = torch.zeros(order, 4, dtype=torch.float64)
    coefficients[0, 1] = coefficients[0, 2] = radius
    return coefficients


def ellipse(semi_x: float, semi_y: float, order: int = 3) -> torch.Tensor:
    coefficients = torch.zeros(order, 4, dtype=torch.float64)
    coefficients[0, 1], coefficients[0, 2] = semi_x, semi_y
    return coefficients


def decoded(centre, coefficients, points=128):
    return fourier.decode(torch.as_tensor(centre, dtype=torch.float64), coefficients, points)


def test_box_iou_matches_torchvision():
    generator = torch.Generator().manual_seed(0)
    low = torch.rand(6, 2, generator=generator) * 10
    boxes = torch.cat([low, low + 1 + torch.rand(6, 2, generator=generator) * 10], dim=1)
    expected = torchvision.ops.box_iou(boxes, boxes)
    ours = anchors.box_iou(boxes[:, None], boxes[None])
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("small,large", [(5.0, 10.0), (3.0, 4.0)])
def test_concentric_circles_polar_iou_is_radius_ratio(small, large):
    points_small, points_large = decoded([20, 20], circle(small)), decoded([20, 20], circle(large))
    centre = torch.tensor([20.0, 20.0], dtype=torch.float64)
    assert anchors.polar_iou(points_small, centre, points_large, centre).item() == pytest.approx(small / large)
    # Concentric: the boxes are nested squares, so BoxIoU = (r / R)^2 (up to the polygon sampling of the box).
    iou = anchors.contour_iou(points_small, centre, points_large, centre).item()
    assert iou == pytest.approx((small / large) ** 3, rel=1e-3)


def test_identical_contours_have_unit_iou_and_shifted_ones_lose_only_box_iou():
    coefficients = ellipse(9, 4)
    centre = torch.tensor([30.0, 30.0], dtype=torch.float64)
    points = decoded(centre, coefficients)
    assert anchors.contour_iou(points, centre, points, centre).item() == pytest.approx(1.0)
    shifted = points + torch.tensor([9.0, 0.0], dtype=torch.float64)
    # A shape moved by half its width keeps PolarIoU 1; its boxes overlap by 9 of 27 columns: IoU = 9 / 27.
    value = anchors.contour_iou(shifted, centre + torch.tensor([9.0, 0.0], dtype=torch.float64), points, centre)
    assert value.item() == pytest.approx(9 / 27, rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_eq2_offsets_round_trip_and_hand_computed_case(seed):
    generator = torch.Generator().manual_seed(seed)
    anchor = torch.randn(5, 3, 4, generator=generator, dtype=torch.float64) * 10
    target = torch.randn(5, 3, 4, generator=generator, dtype=torch.float64) * 10
    anchor_centre = torch.rand(5, 2, generator=generator, dtype=torch.float64) * 50
    target_centre = torch.rand(5, 2, generator=generator, dtype=torch.float64) * 50
    offsets = anchors.encode_offsets(target_centre, target, anchor_centre, anchor)
    centre, coefficients = anchors.decode_offsets(*offsets, anchor_centre, anchor)
    torch.testing.assert_close(centre, target_centre)
    torch.testing.assert_close(coefficients, target)


def test_eq2_hand_computed():
    """Anchor circle of radius 5 (E_1 = 10 x 10), target circle of radius 8 moved by (3, -4)."""
    centre_offsets, fourier_offsets = anchors.encode_offsets(
        torch.tensor([13.0, 6.0], dtype=torch.float64), circle(8), torch.tensor([10.0, 10.0], dtype=torch.float64),
        circle(5),
    )
    torch.testing.assert_close(centre_offsets, torch.tensor([0.3, -0.4], dtype=torch.float64))
    torch.testing.assert_close(fourier_offsets[0], torch.tensor([0.0, 0.3, 0.3, 0.0], dtype=torch.float64))
    # Harmonics 2-3 of a circle are flat: their E is the floor, and equal coefficients still give 0 offset.
    torch.testing.assert_close(fourier_offsets[1:], torch.zeros(2, 4, dtype=torch.float64))


def test_fit_anchors_recovers_separated_clusters_and_caps_k():
    rng = np.random.default_rng(0)
    small = np.stack([ellipse(10, 5).numpy() + rng.normal(0, 0.2, (3, 4)) for _ in range(20)])
    large = np.stack([ellipse(40, 30).numpy() + rng.normal(0, 0.2, (3, 4)) for _ in range(20)])
    fitted = anchors.fit_anchors(np.concatenate([large, small]), image_size=100, k=2)
    np.testing.assert_allclose(fitted[0, 0, 1:3], [0.10, 0.05], atol=0.01)  # sorted small first, fractions of 100
    np.testing.assert_allclose(fitted[1, 0, 1:3], [0.40, 0.30], atol=0.01)
    repeated = anchors.fit_anchors(np.stack([ellipse(10, 5).numpy()] * 4), image_size=100, k=9)
    assert repeated.shape == (9, 3, 4) and np.allclose(repeated, repeated[:1])
    with pytest.raises(ValueError, match=r"\(M, N, 4\)"):
        anchors.fit_anchors(np.zeros((0, 3, 4)), image_size=100)


def test_assignment_thresholds():
    """One target circle r = 10 on the cell centre (27.5, 27.5); anchor circles r = 10 and r = 2, stride 8."""
    locations = anchors.grid_centres(6, 6, stride=8)
    shapes = torch.stack([circle(10), circle(2)])
    matched, best = anchors.assign_anchors(
        locations, shapes, torch.tensor([[27.5, 27.5]], dtype=torch.float64), circle(10)[None]
    )
    centre_cell = int(((locations - 27.5).abs().sum(-1)).argmin())
    assert matched[centre_cell, 0] == 0 and best[centre_cell, 0] == pytest.approx(1.0)
    # r = 2 at the centre: PolarIoU 0.2, BoxIoU 0.04 -> negative.
    assert matched[centre_cell, 1] == -2
    far = int(((locations - torch.tensor([43.5, 3.5], dtype=torch.float64)).abs().sum(-1)).argmin())
    assert matched[far, 0] == -2
    ignored = (best >= anchors.NEGATIVE_IOU) & (best < anchors.POSITIVE_IOU)
    assert ignored.any() and (matched[ignored] == anchors.IGNORE).all()
    assert (matched[best >= anchors.POSITIVE_IOU] == 0).all()


def test_assignment_without_targets_is_all_negative():
    matched, best = anchors.assign_anchors(
        anchors.grid_centres(2, 3, 4), torch.stack([circle(3)]), torch.zeros(0, 2), torch.zeros(0, 3, 4)
    )
    assert matched.shape == (6, 1) and (matched == -2).all() and (best == 0).all()


def test_grid_centres_are_cell_centres():
    torch.testing.assert_close(
        anchors.grid_centres(2, 2, 4),
        torch.tensor([[1.5, 1.5], [5.5, 1.5], [1.5, 5.5], [5.5, 5.5]], dtype=torch.float64),
    )
