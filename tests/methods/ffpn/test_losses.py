"""FFPN Eq. 3 terms on hand-made cases, the classification mix against a closed-form numpy reference."""
import numpy as np
import pytest
import torch

from nnunet_ext.methods.ffpn import anchors, fourier, losses


def numpy_classification_reference(logits: np.ndarray, labels: np.ndarray) -> float:
    """0.25 BCE + 0.75 focal (alpha 0.25, gamma 2, Lin et al. 2017) written out from the formulas."""
    used = labels >= 0
    z, y = logits[used], labels[used].astype(float)
    p = 1 / (1 + np.exp(-z))
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    p_true = np.where(y == 1, p, 1 - p)
    alpha = np.where(y == 1, 0.25, 0.75)
    focal = alpha * (1 - p_true) ** 2 * bce
    return 0.25 * bce.mean() + 0.75 * focal.mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_loss_matches_formula_and_skips_ignored(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, 40)
    labels = rng.choice([-1, 0, 1], 40)
    ours = losses.classification_loss(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    assert ours == pytest.approx(numpy_classification_reference(logits, labels), rel=1e-10)


def test_classification_loss_all_ignored_is_zero_with_gradient():
    logits = torch.randn(5, requires_grad=True)
    value = losses.classification_loss(logits, torch.full((5,), -1))
    value.backward()
    assert value.item() == 0 and logits.grad is not None


def _case(num_positive=3, order=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    anchor_coefficients = torch.zeros(num_positive, order, 4, dtype=torch.float64)
    anchor_coefficients[:, 0, 1] = anchor_coefficients[:, 0, 2] = 6.0
    anchor_coefficients[:, 1:] = torch.randn(num_positive, order - 1, 4, generator=generator, dtype=torch.float64)
    target_coefficients = anchor_coefficients + torch.randn(anchor_coefficients.shape, generator=generator,
                                                            dtype=torch.float64)
    anchor_centres = torch.rand(num_positive, 2, generator=generator, dtype=torch.float64) * 40
    target_centres = anchor_centres + torch.randn(num_positive, 2, generator=generator, dtype=torch.float64)
    return anchor_centres, anchor_coefficients, target_centres, target_coefficients


def test_identical_contours_give_zero_contour_loss():
    anchor_c, anchor_k, target_c, target_k = _case()
    points = fourier.decode(target_c, target_k, 64)
    assert losses.contour_loss(points, target_c, points, target_c).item() == pytest.approx(0, abs=1e-9)


def test_perfect_offsets_leave_only_the_classification_term():
    anchor_c, anchor_k, target_c, target_k = _case()
    centre_goal, fourier_goal = anchors.encode_offsets(target_c, target_k, anchor_c, anchor_k)
    labels = torch.tensor([1, 1, 1])
    terms = losses.ffpn_loss(centre_goal, fourier_goal, torch.tensor([5.0, 5.0, 5.0]), labels,
                             anchor_c, anchor_k, target_c, target_k)
    for name in ("loc", "fourier", "contour"):
        assert terms[name].item() == pytest.approx(0, abs=1e-9), name
    assert terms["total"].item() == pytest.approx(terms["cls"].item())


def test_regression_terms_use_positives_only_and_are_smooth_l1():
    anchor_c, anchor_k, target_c, target_k = _case(num_positive=4)
    centre_goal, fourier_goal = anchors.encode_offsets(target_c, target_k, anchor_c, anchor_k)
    centre_prediction = centre_goal.clone()
    centre_prediction[0] += 0.5  # inside Smooth L1's quadratic zone: 0.5 * 0.5^2 per element
    centre_prediction[3] += 100.0  # anchor 3 is negative: must not count
    labels = torch.tensor([1, 1, 1, 0])
    terms = losses.ffpn_loss(centre_prediction, fourier_goal, torch.zeros(4), labels, anchor_c, anchor_k,
                             target_c, target_k)
    assert terms["loc"].item() == pytest.approx(2 * 0.5 * 0.25 / (3 * 2))
    assert terms["fourier"].item() == pytest.approx(0, abs=1e-9)
    assert 0 < terms["contour"].item() < 1


def test_no_positives_gives_zero_regression_with_gradient():
    anchor_c, anchor_k, target_c, target_k = _case(num_positive=2)
    centre = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    coefficients = torch.zeros(2, 3, 4, dtype=torch.float64, requires_grad=True)
    terms = losses.ffpn_loss(centre, coefficients, torch.zeros(2, dtype=torch.float64), torch.tensor([0, -1]),
                             anchor_c, anchor_k, target_c, target_k)
    terms["total"].backward()
    assert terms["loc"].item() == terms["contour"].item() == 0
    assert centre.grad is not None and coefficients.grad is not None


def test_contour_loss_gradient_moves_prediction_towards_target():
    anchor_c, anchor_k, target_c, target_k = _case(num_positive=2, seed=3)
    centre = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    coefficients = torch.zeros(2, 3, 4, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.SGD([centre, coefficients], lr=0.05)
    labels = torch.tensor([1, 1])
    first = None
    for _ in range(30):
        optimiser.zero_grad()
        terms = losses.ffpn_loss(centre, coefficients, torch.zeros(2, dtype=torch.float64), labels,
                                 anchor_c, anchor_k, target_c, target_k)
        terms["contour"].backward()
        optimiser.step()
        first = terms["contour"].item() if first is None else first
    assert terms["contour"].item() < 0.5 * first
