"""FFPN Eq. 1 (elliptic Fourier descriptors) against pyefd, an analytic ellipse, and mask round trips."""
import numpy as np
import pytest
import torch

from nnunet_ext.methods.ffpn import fourier


def fill_polygon(points, shape):
    """Pixels whose centres lie inside the closed (x, y) polygon (skimage's even-odd fill)."""
    from skimage.draw import polygon2mask

    return polygon2mask(tuple(shape), np.asarray(points, dtype=float)[:, ::-1])

pyefd = pytest.importorskip("pyefd", reason="pyefd is the independent reference for Eq. 1 (pip install '.[test]')")


def star_polygon(seed: int, points: int = 60) -> np.ndarray:
    """A random smooth star-shaped closed polygon (x, y), not closed explicitly."""
    rng = np.random.default_rng(seed)
    theta = np.linspace(0, 2 * np.pi, points, endpoint=False)
    radius = 20 + sum(rng.uniform(-3, 3) * np.cos(k * theta + rng.uniform(0, 6.3)) for k in range(1, 5))
    return np.stack([50 + radius * np.cos(theta), 40 + radius * np.sin(theta)], axis=1)


def closed(contour: np.ndarray) -> np.ndarray:
    return np.vstack([contour, contour[:1]])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("order", [1, 7, 12])
def test_eq1_coefficients_match_pyefd(seed, order):
    contour = star_polygon(seed)
    _, ours = fourier.encode(contour, order)
    kuhl_giardina = pyefd.elliptic_fourier_descriptors(closed(contour), order=order, normalize=False)
    # FFPN's (a, b, c, d) multiply (sin, cos, sin, cos); Kuhl-Giardina's multiply (cos, sin, cos, sin).
    np.testing.assert_allclose(ours, kuhl_giardina[:, [1, 0, 3, 2]], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 3])
def test_eq1_centre_is_kuhl_giardina_dc_term(seed):
    contour = star_polygon(seed, points=37)
    centre, _ = fourier.encode(contour)
    np.testing.assert_allclose(centre, pyefd.calculate_dc_coefficients(closed(contour)), rtol=1e-9)


@pytest.mark.parametrize("order,num_points", [(3, 16), (7, 64)])
def test_eq1_decoding_matches_pyefd_reconstruction(order, num_points):
    contour = star_polygon(4)
    centre, coefficients = fourier.encode(contour, order)
    ours = fourier.decode(torch.from_numpy(centre), torch.from_numpy(coefficients), num_points).numpy()
    reference = pyefd.reconstruct_contour(coefficients[:, [1, 0, 3, 2]], locus=centre, num_points=num_points + 1)
    np.testing.assert_allclose(ours, reference[:-1], atol=1e-9)


def test_circle_is_exactly_the_first_harmonic():
    """Analytic case: a circle x = L_x + r cos, y = L_y + r sin is b_1 = c_1 = r and nothing else; E_1 = (2r, 2r)."""
    theta = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    contour = np.stack([30 + 9 * np.cos(theta), 20 + 9 * np.sin(theta)], axis=1)
    centre, coefficients = fourier.encode(contour, order=4)
    np.testing.assert_allclose(centre, [30, 20], atol=1e-9)
    np.testing.assert_allclose(coefficients[0], [0, 9, 9, 0], atol=1e-5)
    np.testing.assert_allclose(coefficients[1:], 0, atol=1e-9)
    np.testing.assert_allclose(fourier.harmonic_ellipse_size(coefficients)[0], [18, 18], rtol=1e-6)


def test_ellipse_symmetry_and_reconstruction():
    """An axis-aligned ellipse started on +x is even in x and odd in y about t = 0: a_n = d_n = 0, and its point
    symmetry removes the even harmonics. Twelve harmonics reproduce it within 0.05 pixel."""
    theta = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    contour = np.stack([30 + 12 * np.cos(theta), 20 + 5 * np.sin(theta)], axis=1)
    centre, coefficients = fourier.encode(contour, order=12)
    np.testing.assert_allclose(coefficients[:, [0, 3]], 0, atol=1e-9)
    np.testing.assert_allclose(coefficients[1::2], 0, atol=1e-9)
    points = fourier.decode(torch.from_numpy(centre), torch.from_numpy(coefficients), 256).numpy()
    residual = ((points[:, 0] - 30) / 12) ** 2 + ((points[:, 1] - 20) / 5) ** 2 - 1
    assert np.abs(residual).max() * 5 / 2 < 0.05  # |residual| / 2 * semi-minor axis bounds the radial error


def test_decoding_is_differentiable():
    centre = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    coefficients = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, k: fourier.decode(c, k, 8), (centre, coefficients))


def test_harmonic_ellipse_size_numpy_and_torch_agree_and_floor():
    coefficients = np.array([[3.0, 4.0, 0.0, 0.0]])
    np.testing.assert_allclose(fourier.harmonic_ellipse_size(coefficients), [[10.0, 1e-3]])
    np.testing.assert_allclose(fourier.harmonic_ellipse_size(torch.from_numpy(coefficients)).numpy(), [[10.0, 1e-3]])


@pytest.mark.parametrize("shift", [0, 7, 33])
@pytest.mark.parametrize("reverse", [False, True])
def test_canonical_contour_fixes_start_point_and_direction(shift, reverse):
    contour = star_polygon(5)
    variant = np.roll(contour, shift, axis=0)
    variant = variant[::-1] if reverse else variant
    reference = fourier.encode(fourier.canonical_contour(contour))
    result = fourier.encode(fourier.canonical_contour(variant))
    for ours, expected in zip(result, reference):
        np.testing.assert_allclose(ours, expected, atol=1e-9)
    assert fourier.signed_area(fourier.canonical_contour(variant)) > 0


def _shapes():
    yy, xx = np.mgrid[:96, :96]
    disk = (xx - 40) ** 2 + (yy - 50) ** 2 <= 20**2
    ellipse = ((xx - 48) / 30.0) ** 2 + ((yy - 44) / 14.0) ** 2 <= 1
    u, v = (xx - 50) * np.cos(0.6) + (yy - 48) * np.sin(0.6), -(xx - 50) * np.sin(0.6) + (yy - 48) * np.cos(0.6)
    rotated = (u / 28.0) ** 2 + (v / 12.0) ** 2 <= 1
    angle = np.arctan2(yy - 48, xx - 48)
    blob = np.hypot(xx - 48, yy - 48) <= 25 + 3 * np.cos(2 * angle) + 2 * np.sin(3 * angle)
    border = ((xx - 10) / 25.0) ** 2 + ((yy - 48) / 20.0) ** 2 <= 1  # cut by the image edge
    return {"disk": disk, "ellipse": ellipse, "rotated_ellipse": rotated, "blob": blob, "border": border}


@pytest.mark.parametrize("name", sorted(_shapes()))
def test_mask_descriptor_mask_round_trip(name):
    """The issue's acceptance test: mask -> Eq. 1 descriptors (N = 7) -> mask keeps Dice > 0.98 on smooth shapes."""
    mask = _shapes()[name]
    centre, coefficients = fourier.encode(fourier.contour_from_mask(mask), fourier.DEFAULT_ORDER)
    points = fourier.decode(torch.from_numpy(centre), torch.from_numpy(coefficients), 128).numpy()
    assert dice(fill_polygon(points, mask.shape), mask) > 0.98


def test_contour_from_mask_keeps_the_largest_object_and_returns_exact_polygon():
    mask = np.zeros((40, 40), bool)
    mask[5:25, 8:30] = True
    mask[30:33, 30:33] = True
    contour = fourier.contour_from_mask(mask)
    assert np.array_equal(fill_polygon(contour, mask.shape), mask & (np.arange(40)[:, None] < 28))
    assert contour[:, 0].min() >= 7 and contour[:, 0].max() <= 30


@pytest.mark.parametrize(
    "mask,message",
    [(np.zeros((8, 8)), "empty"), (np.ones((2, 8, 8)), "2D mask")],
)
def test_contour_from_mask_errors(mask, message):
    with pytest.raises(ValueError, match=message):
        fourier.contour_from_mask(mask)


@pytest.mark.parametrize(
    "contour,message",
    [(np.zeros((5, 3)), r"\(K, 2\)"), (np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), "at least 3")],
)
def test_encode_rejects_degenerate_contours(contour, message):
    with pytest.raises(ValueError, match=message):
        fourier.encode(contour)


def test_encode_rejects_zero_harmonics():
    with pytest.raises(ValueError, match="harmonics"):
        fourier.encode(star_polygon(0), order=0)
