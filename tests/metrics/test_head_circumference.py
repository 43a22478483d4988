"""HC18 head-circumference metric: Ramanujan's perimeter against the exact elliptic integral, ellipse fits on
rasterised ellipses, and the real HC18 annotations against their CSV values (skipped without ../shared/data)."""
import csv
import math

import numpy as np
import pytest
from scipy import ndimage, special

from nnunet_ext.metrics import head_circumference as hc
from tests.conftest import shared_data



def exact_perimeter(a: float, b: float) -> float:
    """4 a E(m), m = 1 - b^2 / a^2 (complete elliptic integral of the second kind, scipy's parameter convention)."""
    a, b = max(a, b), min(a, b)
    return 4 * a * special.ellipe(1 - (b / a) ** 2)


@pytest.mark.parametrize("a,b", [(10, 10), (10, 7), (10, 3), (120, 85)])
def test_ramanujan_perimeter_matches_the_elliptic_integral(a, b):
    assert hc.ellipse_perimeter(a, b) == pytest.approx(exact_perimeter(a, b), rel=1e-5)


def test_circle_perimeter_is_exact():
    assert hc.ellipse_perimeter(5, 5) == pytest.approx(2 * math.pi * 5, rel=1e-12)


def filled_ellipse(shape, centre, semi_a, semi_b, theta):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dx, dy = xx - centre[0], yy - centre[1]
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    return (u / semi_a) ** 2 + (v / semi_b) ** 2 <= 1


@pytest.mark.parametrize("semi_a,semi_b,theta", [(120, 85, 0.0), (200, 150, 0.7), (40, 33, -1.2)])
def test_fit_on_a_rasterised_ellipse(semi_a, semi_b, theta):
    mask = filled_ellipse((540, 800), (410.3, 262.8), semi_a, semi_b, theta)
    mask[10:20, 10:20] = True  # a small second object: only the largest counts
    (cx, cy), axes, _ = hc.fit_ellipse(mask)
    assert (cx, cy) == pytest.approx((410.3, 262.8), abs=0.2)
    assert sorted(axes) == pytest.approx(sorted([semi_a, semi_b]), abs=0.6)
    expected = exact_perimeter(semi_a, semi_b) * 0.12
    assert hc.head_circumference_mm(mask, 0.12) == pytest.approx(expected, rel=0.004)


@pytest.mark.parametrize("mask,pixel,message", [
    (np.zeros((8, 8)), 0.1, "empty"), (np.ones((2, 8, 8)), 0.1, "2D mask"), (np.ones((8, 8)), 0.0, "> 0 mm")])
def test_errors(mask, pixel, message):
    with pytest.raises(ValueError, match=message):
        hc.head_circumference_mm(mask, pixel)


def test_real_hc18_annotations_reproduce_the_csv_circumference():
    """The sonographers' outlines, filled, give the HC of the challenge CSV (the README's check: within +0.1..1 %)."""
    from PIL import Image

    HC18 = shared_data("hc18")
    with open(HC18 / "pixel_size_and_HC.csv", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    errors = []
    for name, pixel_size, circumference in rows[:12]:
        outline = np.asarray(Image.open(HC18 / "training_set" / name.replace(".png", "_Annotation.png"))) > 0
        measured = hc.head_circumference_mm(ndimage.binary_fill_holes(outline), float(pixel_size))
        errors.append(measured / float(circumference) - 1)
    assert np.abs(errors).max() < 0.015, errors
