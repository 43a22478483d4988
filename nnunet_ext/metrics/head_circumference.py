"""HC18 challenge metric: head circumference (HC) in mm from a 2D fetal-head segmentation.

The HC18 challenge (van den Heuvel et al., PLoS ONE 2018) measures HC as the perimeter of an ellipse fitted to the
head outline, with Ramanujan's approximation for the perimeter. We fit the ellipse by least squares
(``skimage.measure.EllipseModel``) to the sub-pixel boundary of the largest connected object, and multiply by the
image's pixel size (isotropic in HC18, given per image in its CSV).
"""
from __future__ import annotations

import math

import numpy as np


def ellipse_perimeter(semi_a: float, semi_b: float) -> float:
    """Ramanujan's second approximation, ``pi (a + b) (1 + 3h / (10 + sqrt(4 - 3h)))`` with
    ``h = ((a - b) / (a + b))^2``; relative error below 1e-5 for axis ratios above 0.2."""
    a, b = abs(float(semi_a)), abs(float(semi_b))
    if a + b == 0:
        return 0.0
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def fit_ellipse(mask: np.ndarray) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Least-squares ellipse through the 0.5 iso-line of the largest object of a 2D mask.

    Returns ``((x_centre, y_centre), (semi_axis_1, semi_axis_2), theta)`` in pixels (x = column, y = row).
    Raises ValueError for an empty mask or an outline no ellipse fits.
    """
    from skimage import measure

    from nnunet_ext.metrics.segmentation import largest_object_outline

    outline = largest_object_outline(mask)
    model = measure.EllipseModel.from_estimate(outline)
    if not model:
        raise ValueError("head circumference: no ellipse fits the segmented outline")
    return tuple(model.center), tuple(model.axis_lengths), float(model.theta)


def head_circumference_mm(mask: np.ndarray, pixel_size_mm: float) -> float:
    """HC in mm: perimeter of the ellipse fitted to the mask's largest object times the pixel size."""
    if not pixel_size_mm > 0:
        raise ValueError(f"pixel size must be > 0 mm, got {pixel_size_mm}")
    _, (semi_a, semi_b), _ = fit_ellipse(mask)
    return ellipse_perimeter(semi_a, semi_b) * float(pixel_size_mm)
