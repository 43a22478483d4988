"""``mammo_2d``: 2D mammogram-like projections (CC or MLO view) with masses; label 1 = mass.

Physical model (facts from /work/shared/PHANTOMS.md, "Mammography"):

* **Projection.** Each pixel is an X-ray line integral through the compressed breast,
  ``A = sum_i mu_i t_i`` with linear attenuation coefficients near 20 keV (Johns & Yaffe, Phys Med Biol 32:675,
  1987): fat 0.456 /cm, fibroglandular tissue 0.802 /cm, carcinoma 0.844 /cm; skin 0.80 /cm and pectoral muscle
  0.87 /cm. Compressed thickness ``T`` is 35-65 mm.
* **Outline.** The breast is a half ellipse against the chest wall (image column 0 before the random left/right
  flip). Its edge is rounded: at distance ``d`` inside the skin line the thickness is ``2 sqrt(d (T - d))`` for
  ``d < T / 2`` (a semicircular edge), and a 1.5 mm skin shell gives the bright skin line where rays run
  tangentially through it. In the MLO view a pectoral-muscle triangle with a slightly convex border fills the upper
  chest-wall corner. ``view`` is "CC", "MLO" or random.
* **Fibroglandular tissue.** The glandular fraction of the path is a multi-scale smooth random field (sigma 12, 4
  and 1.5 mm) plus a central prior, thresholded softly at the quantile that gives the BI-RADS density category's
  dense-area share (a fatty 0.10, b scattered 0.30, c heterogeneously dense 0.55, d extremely dense 0.80, +-0.05)
  and faded out in the subcutaneous and retromammary fat; the glandular share of the path peaks at 0.5-0.8 (a, b)
  or 0.75-0.95 (c, d). ``density`` is "a".."d" or random (frequencies 0.1, 0.4, 0.4, 0.1).
* **Masses.** 0 masses with probability ``no_mass_fraction`` (default 0.25), else 1 (85 %) or 2, centred with a
  preference (weight 0.3 + glandular fraction) for fibroglandular tissue, where cancers arise. Diameter 6-30 mm,
  shape round, oval, irregular (boundary radius modulated by a random Fourier series in angle) or spiculated
  (irregular core plus 8-20 thin radiating spicules, 0.5-1.5 radii long). A mass is an ellipsoid-like body whose
  path length is ``2 R sqrt(1 - rho^2)`` (capped by the breast thickness); it replaces the local fat/gland mix,
  adding ``t (mu_mass - mu_local)`` with ``mu_mass`` 1.00-1.06 times glandular, so masses in dense tissue are
  camouflaged. Margins are sharp (circumscribed) or blurred over 1-2 mm (obscured / ill-defined). The label is
  the mass body (``rho < 1``); spicules are not labelled (as in CBIS-DDSM ROI outlines).
* **Detector and display.** Quantum noise: Poisson counts ``N ~ Poisson(N0 exp(-A))`` with an automatic exposure
  ``N0`` giving 800-1500 counts under the median breast path, 0.6 px Gaussian unsharpness, then ``A = -ln(N / N0)``
  is shown through a film-like sigmoid characteristic curve (CBIS-DDSM is digitised film) into 12-bit values
  0..4095, bright = attenuating, direct exposure near 0.

The pixel size is ``fov_mm / shape[0]`` (default 200 mm field of view: 1.56 mm for the default 128 x 96 grid) so the
breast keeps its physical size at any grid size. Channel "MG" (z-score normalisation in nnU-Net).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.special import expit

from nnunet_ext.synth._shapes import ellipsoid_radius, radial_depth, rotate_in_plane, smooth_random_field
from nnunet_ext.synth.base import PhantomCase, PhantomKind, register
from nnunet_ext.synth.options import Choice, Number, Option, Shape

KIND = "mammo_2d"
DEFAULT_SHAPE = (128, 96)
LABELS = {"background": 0, "mass": 1}
MU_PER_MM = {"fat": 0.0456, "gland": 0.0802, "carcinoma": 0.0844, "skin": 0.080, "muscle": 0.087}
DENSITY_SHARE = {"a": 0.10, "b": 0.30, "c": 0.55, "d": 0.80}
MASS_SHAPES = ("round", "oval", "irregular", "spiculated")
SKIN_MM = 1.5
MAX_VALUE = 4095


@dataclass
class Mammogram:
    """A rendered view: 12-bit image, mass label, attenuation line integral ``A`` (noise free), glandular
    fraction, breast and pectoral masks and the drawn parameters (mass centres in mm from the top-left corner)."""

    image: np.ndarray
    label: np.ndarray
    attenuation: np.ndarray
    glandular: np.ndarray
    breast: np.ndarray
    pectoral: np.ndarray
    spacing: tuple[float, float]
    view: str
    density: str
    masses: list[dict] = field(default_factory=list)


def _rounded_edge_thickness(depth_mm: np.ndarray, thickness_mm: float) -> np.ndarray:
    """Path length through a compressed slab of thickness T whose edge is a half cylinder: ``2 sqrt(d (T - d))``
    within T / 2 of the edge, T beyond, 0 outside."""
    d = np.clip(depth_mm, 0.0, thickness_mm / 2)
    return 2.0 * np.sqrt(d * (thickness_mm - d))


def _angular_modulation(rng: np.random.Generator, angle: np.ndarray, amplitude: float) -> np.ndarray:
    """Random smooth radius modulation ``1 + sum_k c_k cos(k angle + p_k)`` (k = 2..7), max |.| ~ amplitude."""
    harmonics = np.arange(2, 8)
    coefficients = rng.normal(0, 1, size=harmonics.size) / harmonics
    phases = rng.uniform(0, 2 * math.pi, size=harmonics.size)
    series = sum(c * np.cos(k * angle + p) for k, c, p in zip(harmonics, coefficients, phases))
    return 1.0 + amplitude * series / max(np.abs(coefficients).sum(), 1e-9)


def _spicules(rng, coords: np.ndarray, centre, radius_mm: float, pixel_mm: float) -> np.ndarray:
    """Path length (mm) added by thin spicules radiating from the mass boundary."""
    thickness = np.zeros(coords.shape[1:])
    for _ in range(int(rng.integers(8, 21))):
        angle = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.5, 1.5) * radius_mm
        direction = np.array([math.sin(angle), math.cos(angle)])
        rel = np.stack([coords[0] - centre[0], coords[1] - centre[1]])
        along = rel[0] * direction[0] + rel[1] * direction[1]
        across = np.abs(rel[0] * direction[1] - rel[1] * direction[0])
        width = max(0.4, 0.35 * pixel_mm) * (1.0 - np.clip((along - 0.8 * radius_mm) / (length + 0.2 * radius_mm),
                                                           0, 1))
        on_spicule = (along > 0.8 * radius_mm) & (along < radius_mm + length) & (across < width)
        thickness = np.maximum(thickness, np.where(on_spicule, 2.0 * rng.uniform(0.6, 1.2), 0.0))
    return thickness


def render_mammogram(rng: np.random.Generator, shape=DEFAULT_SHAPE, view: str | None = None,
                     density: str | None = None, no_mass_fraction: float = 0.25, fov_mm: float = 200.0
                     ) -> Mammogram:
    """Render one mammogram; see the module docstring for the model. Option values are checked by
    :data:`OPTIONS` (``nnunet-ext synth`` validates before rendering)."""
    shape = tuple(int(n) for n in shape)
    texture_rng = np.random.default_rng(rng.integers(0, 2 ** 62, size=2))
    view = view or str(rng.choice(["CC", "MLO"]))
    density = density or str(rng.choice(list(DENSITY_SHARE), p=[0.1, 0.4, 0.4, 0.1]))
    pixel_mm = fov_mm / shape[0]
    spacing = (pixel_mm, pixel_mm)
    height_mm, width_mm = shape[0] * pixel_mm, shape[1] * pixel_mm

    # --- outline (chest wall at x = 0, nipple towards +x), coordinates in mm from the top-left corner
    y = (np.arange(shape[0]) + 0.5) * pixel_mm
    x = (np.arange(shape[1]) + 0.5) * pixel_mm
    coords = np.stack(np.meshgrid(y, x, indexing="ij"))
    compressed_mm = rng.uniform(35, 65)
    if view == "CC":
        centre = (height_mm * rng.uniform(0.45, 0.55), 0.0)
        radii = (height_mm * rng.uniform(0.36, 0.45), width_mm * rng.uniform(0.6, 0.85))
    else:  # MLO: breast reaches up into the axilla
        centre = (height_mm * rng.uniform(0.42, 0.5), 0.0)
        radii = (height_mm * rng.uniform(0.45, 0.52), width_mm * rng.uniform(0.65, 0.9))
    skin_depth = radial_depth(coords, centre, radii)
    breast = skin_depth > 0
    total_path = _rounded_edge_thickness(skin_depth, compressed_mm)
    inner_path = _rounded_edge_thickness(skin_depth - SKIN_MM, compressed_mm - 2 * SKIN_MM)
    skin_path = total_path - inner_path

    pectoral = np.zeros(shape, dtype=bool)
    muscle_share = np.zeros(shape)
    if view == "MLO":
        p_width, p_height = width_mm * rng.uniform(0.25, 0.45), height_mm * rng.uniform(0.4, 0.7)
        bulge = rng.uniform(-0.6, 0.0)
        s, t = coords[1] / p_width, coords[0] / p_height
        level = s + t + bulge * s * t  # < 1 inside; bulge < 0 makes the border convex towards the breast
        pectoral = level < 1
        # the muscle wedge thickens towards the corner: its share of the path ramps up over ~25 mm
        muscle_share = np.clip((1 - level) * min(p_width, p_height) / 25.0, 0, 1)
        breast |= pectoral
        total_path = np.where(pectoral & (total_path < compressed_mm), compressed_mm, total_path)
        inner_path = np.where(pectoral, np.maximum(inner_path, compressed_mm - 2 * SKIN_MM), inner_path)
        skin_path = total_path - inner_path

    # --- fibroglandular fraction
    sigma = lambda mm: mm / pixel_mm  # noqa: E731 - mm -> px
    parenchyma_field = (smooth_random_field(texture_rng, shape, sigma(12)) + 0.5 * smooth_random_field(
        texture_rng, shape, sigma(4)) + 0.25 * smooth_random_field(texture_rng, shape, max(sigma(1.5), 0.6)))
    prior = np.exp(-((coords[0] - centre[0]) / (0.7 * radii[0])) ** 2
                   - ((coords[1] - 0.4 * radii[1]) / (0.5 * radii[1])) ** 2)
    parenchyma_field = parenchyma_field + 1.2 * prior
    share = float(np.clip(DENSITY_SHARE[density] + rng.uniform(-0.05, 0.05), 0.03, 0.95))
    usable = breast & ~pectoral
    threshold = np.quantile(parenchyma_field[usable], 1 - share) if usable.any() else 0.0
    peak_fraction = rng.uniform(0.5, 0.8) if density in "ab" else rng.uniform(0.75, 0.95)
    fine_texture = smooth_random_field(texture_rng, shape, max(sigma(1.0), 0.6))
    glandular = peak_fraction * expit((parenchyma_field - threshold) / 0.35) * np.clip(
        0.8 + 0.2 * fine_texture, 0, 1)
    subcutaneous_fat, retromammary_fat = rng.uniform(4, 10), rng.uniform(5, 12)
    glandular *= np.clip((skin_depth - subcutaneous_fat) / 10.0, 0, 1)
    glandular *= np.clip((coords[1] - retromammary_fat) / 15.0, 0, 1) * (1 - muscle_share)
    glandular = np.where(usable, glandular, 0.0)

    mu_local = MU_PER_MM["fat"] * (1 - glandular) + MU_PER_MM["gland"] * glandular
    tissue_mu = (1 - muscle_share) * mu_local + muscle_share * MU_PER_MM["muscle"]
    attenuation = skin_path * MU_PER_MM["skin"] + inner_path * tissue_mu

    # --- masses
    label = np.zeros(shape, dtype=np.uint8)
    masses: list[dict] = []
    n_masses = 0 if rng.random() < no_mass_fraction else (1 if rng.random() < 0.85 else 2)
    for _ in range(n_masses):
        radius = rng.uniform(3, 15)
        kind = str(rng.choice(MASS_SHAPES))
        elongation = rng.uniform(0.9, 1.0) if kind == "round" else rng.uniform(0.55, 0.85)
        blur_mm = 0.0 if rng.random() < 0.5 else rng.uniform(1.0, 2.0)
        orientation = rng.uniform(0, math.pi)
        mu_mass = MU_PER_MM["gland"] * rng.uniform(1.0, 1.06)
        candidates = np.argwhere((skin_depth > radius + 4) & ~pectoral & (coords[1] > radius + 4))
        if len(candidates) == 0:
            continue
        # cancers arise in the fibroglandular tissue: prefer (not require) glandular positions
        weights = 0.3 + glandular[candidates[:, 0], candidates[:, 1]]
        row, column = candidates[rng.choice(len(candidates), p=weights / weights.sum())]
        mass_centre = coords[:, row, column]
        local = rotate_in_plane(coords - mass_centre.reshape(2, 1, 1), -orientation)
        rho = ellipsoid_radius(local, (0, 0), (radius, radius * elongation))
        if kind in ("irregular", "spiculated"):
            rho = rho / _angular_modulation(rng, np.arctan2(local[0], local[1]), rng.uniform(0.15, 0.3))
        body_path = np.minimum(2 * radius * elongation * np.sqrt(np.clip(1 - rho ** 2, 0, None)), inner_path)
        if kind == "spiculated":
            body_path = np.maximum(body_path, np.minimum(_spicules(rng, coords, mass_centre, radius, pixel_mm),
                                                         inner_path))
        if blur_mm > 0:
            body_path = ndimage.gaussian_filter(body_path, blur_mm / pixel_mm)
        attenuation = attenuation + body_path * (mu_mass - tissue_mu)
        label[rho < 1] = 1
        masses.append(dict(centre_mm=tuple(float(c) for c in mass_centre), radius_mm=radius, shape=kind,
                           blurred_margin=blur_mm > 0, mu_ratio=mu_mass / MU_PER_MM["gland"]))
    label[~breast] = 0

    # --- detector: blur, quantum noise, film-like characteristic curve to 12 bits
    transmitted = ndimage.gaussian_filter(np.exp(-attenuation), 0.6)
    counts_median = rng.uniform(800, 1500)
    incident = counts_median / max(float(np.median(transmitted[breast])) if breast.any() else 1.0, 1e-12)
    counts = np.maximum(texture_rng.poisson(incident * transmitted), 1)
    measured = -np.log(counts / incident)
    if breast.any():
        low, high = np.percentile(measured[breast], [2, 99.8])
    else:
        low, high = 0.0, 1.0
    middle, slope = (low + high) / 2, 4.0 / max(high - low, 1e-6)
    curve = expit(slope * (measured - middle))
    floor = expit(-slope * middle)
    image = MAX_VALUE * np.clip((curve - floor) / (1 - floor), 0, 1)
    image = np.round(image).astype(np.float32)
    if rng.random() < 0.5:  # left or right breast
        image, label, attenuation, glandular, breast, pectoral = (
            np.ascontiguousarray(a[:, ::-1]) for a in (image, label, attenuation, glandular, breast, pectoral))
        for mass in masses:
            mass["centre_mm"] = (mass["centre_mm"][0], width_mm - mass["centre_mm"][1])
    return Mammogram(image=image, label=label, attenuation=attenuation, glandular=glandular, breast=breast,
                     pectoral=pectoral, spacing=spacing, view=view, density=density, masses=masses)


def make_case(rng: np.random.Generator, shape=DEFAULT_SHAPE, **opts) -> PhantomCase:
    """One nnU-Net case: channel 0 = 12-bit mammogram, label 1 = mass (options as :func:`render_mammogram`)."""
    result = render_mammogram(rng, shape, **opts)
    return PhantomCase(images=[result.image], label=result.label, spacing=result.spacing)


# What ``nnunet-ext synth mammo_2d --option KEY=VALUE`` accepts (defaults as in :func:`render_mammogram`).
OPTIONS = (
    Option("shape", Shape(2, 16), DEFAULT_SHAPE, "rows x columns; the pixel size is fov_mm / rows"),
    Option("view", Choice(("CC", "MLO")), None, "projection; null: CC or MLO at random per case", optional=True),
    Option("density", Choice(tuple(DENSITY_SHARE)), None,
           "BI-RADS density category; null: drawn per case (a 10 %, b 40 %, c 40 %, d 10 %)", optional=True),
    Option("no_mass_fraction", Number(0.0, 1.0), 0.25, "share of images without a mass"),
    Option("fov_mm", Number(0.0, 1000.0, exclusive_minimum=True), 200.0, "image height in mm"),
)

register(PhantomKind(
    name=KIND, dataset_name="Mammo2D", channel_names={"0": "MG"}, labels=LABELS, make_case=make_case,
    description="2D mammogram (CC/MLO, density a-d) with round/oval/irregular/spiculated masses",
    option_specs=OPTIONS))
