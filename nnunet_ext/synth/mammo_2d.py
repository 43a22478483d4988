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
  or 0.75-0.95 (c, d). ``density`` is "a".."d" or random with the style's frequencies (:data:`DENSITY_FREQUENCIES`):
  film 0.1, 0.4, 0.4, 0.1 (the BI-RADS population figures); digital 0.33, 0.36, 0.24, 0.07, the ACR 1-4 counts
  136 / 147 / 99 / 28 of INbreast's 410 images as recalled from Moreira et al. (Acad Radiol 19:236, 2012; not
  re-checked against the paper here), i.e. a fattier mix than the film default.
* **Masses.** 0 masses with probability ``no_mass_fraction`` (default 0.25), else 1 (85 %) or 2, centred with a
  preference (weight 0.3 + glandular fraction) for fibroglandular tissue, where cancers arise. Diameter 6-30 mm,
  shape round, oval, irregular (boundary radius modulated by a random Fourier series in angle) or spiculated
  (irregular core plus 8-20 thin radiating spicules, 0.5-1.5 radii long). A mass is an ellipsoid-like body whose
  path length is ``2 R sqrt(1 - rho^2)`` (capped by the breast thickness); it replaces the local fat/gland mix,
  adding ``t (mu_mass - mu_local)`` with ``mu_mass`` 1.00-1.06 times glandular (``mass_contrast="natural"``: the
  carcinoma / gland ratio 0.844 / 0.802 = 1.05 plus spread), so masses in dense tissue are camouflaged.
  ``mass_contrast="conspicuous"`` draws 1.08-1.15 times glandular instead, the upper end of what a mass can be
  (dense desmoplastic or partly calcified lesions, up to the pectoral muscle's 1.085 and a little beyond): a
  source / pre-training set whose masses stand out; the same random draw is mapped to the other range, so the
  anatomy and the label do not change. Margins are sharp (circumscribed) or blurred over 1-2 mm (obscured /
  ill-defined). The label is the mass body (``rho < 1``); spicules are not labelled (as in CBIS-DDSM ROI outlines).
* **Camouflage** (Mammo-SAM: "many breast masses are camouflaged in normal glands") is a property of the anatomy,
  measured on the noise-free attenuation image ``A`` after all masses are in place (:func:`contrast_to_texture`):
  ``(mean A over the body - mean A over the ring) / std A over the ring``, the ring being ``1.2 <= rho <= 2``
  inside the breast and outside every labelled body. A mass is ``camouflaged`` when this ratio is below
  :data:`CAMOUFLAGE_THRESHOLD` = 0.84. For Gaussian texture a ratio ``r`` means that a share ``1 - Phi(r)`` of the
  surrounding normal tissue is brighter than the mass's mean; ``0.84 = Phi^-1(0.8)``: a mass is camouflaged when
  at least a fifth of the tissue around it is as bright as the mass itself. The ring's spread is mostly
  glandular texture (median std of ``A`` in the ring 0.32; the thickness fall-off towards the skin line alone
  gives ~0.04, the mass's own blurred margin or spicules ~0.003). Observed on the default 128 x 96 grid over 200
  training cases of seed 0 (163 masses; seed 1: 184 masses): ratio quartiles 0.62 / 0.95 / 1.41; camouflaged
  41 % (seed 1: 45 %) with default options, 30 % (36 %) with ``mass_contrast="conspicuous"``, 34 % (36 %) with
  ``style="digital"`` (through its fattier density prior); by density category a / b / c / d (default options,
  both seeds) 14 / 35 / 51 / 65 %. The acquisition does not enter the ratio; the grid does somewhat (coarse
  pixels smooth the texture). Each mass records ``contrast_to_texture`` (nan when a coarse grid leaves its body
  without a pixel or its ring with fewer than 2; such a mass is not camouflaged), ``camouflaged`` and its
  ``body`` and ``ring`` masks; :func:`make_case` returns ``extras["camouflaged"]``, the uint8 union of the
  camouflaged masses' labelled bodies (all zero if there is none), written to
  ``extrasTr|Ts/<case>_camouflaged.nii.gz``.
* **Detector and display** (``style``; only the acquisition changes, plus the density prior above).
  Quantum noise: Poisson counts ``N ~ Poisson(N0 exp(-A))`` with an automatic exposure ``N0`` giving a drawn
  number of counts under the median breast path, after Gaussian unsharpness of the transmitted fluence; the
  measured line integral is ``-ln(N / N0)`` (:attr:`Mammogram.measured`).

  - ``film`` (default; CBIS-DDSM is digitised film): 800-1500 counts, 0.6 px unsharpness (screen blur and the
    digitiser's spot), shown through a film-like sigmoid characteristic curve spanning the 2nd-99.8th percentile
    of the breast's measured values into 12-bit values 0..4095.
  - ``digital`` (full-field digital, a stand-in for INbreast): the detector is linear in exposure with 4x the
    counts (3200-6000: a higher detective quantum efficiency, half the relative quantum noise), 0.4 px
    unsharpness (direct-conversion detector), and the presented value is the log-transformed signal, i.e.
    proportional to the measured line integral, in the window ``[0, A_99.8]`` (99.8th percentile in the breast)
    into 14-bit values 0..16383: no sigmoid, so the contrast is spread linearly instead of concentrated around
    mid-grey.

  Both styles draw the same random numbers in the same order (a range per style is applied to the same draw), so
  for the same seed and a given ``density`` the anatomy, the masses, the label and the camouflage record are those
  of the film style; with a drawn density the digital prior may pick another (never a denser) category.
  Bright = attenuating, direct exposure near 0.

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
STYLES = ("film", "digital")
MAX_VALUES = {"film": 4095, "digital": 16383}  # 12-bit digitised film, 14-bit full-field digital detector
MAX_VALUE = MAX_VALUES["film"]
DENSITY_FREQUENCIES = {"film": (0.1, 0.4, 0.4, 0.1), "digital": (0.33, 0.36, 0.24, 0.07)}
COUNTS_UNDER_MEDIAN_PATH = {"film": (800.0, 1500.0), "digital": (3200.0, 6000.0)}
UNSHARPNESS_PX = {"film": 0.6, "digital": 0.4}
MU_RATIO_RANGE = {"natural": (1.0, 1.06), "conspicuous": (1.08, 1.15)}  # mu_mass / mu_gland
CAMOUFLAGE_THRESHOLD = 0.84  # contrast-to-texture ratio below which a mass is camouflaged (Phi^-1(0.8))
CAMOUFLAGE_RING = (1.2, 2.0)  # the surrounding ring, in units of the mass's (modulated) radius


@dataclass
class Mammogram:
    """A rendered view: image (12-bit film or 14-bit digital), mass label, attenuation line integral ``A`` (noise
    free, before blur), the measured line integral ``-ln(N / N0)`` (blurred, with quantum noise), glandular
    fraction, breast and pectoral masks, the camouflaged masses' bodies and the drawn parameters (mass centres in
    mm from the top-left corner; per mass also ``contrast_to_texture``, ``camouflaged`` and its ``body`` and
    ``ring`` masks, see the module docstring)."""

    image: np.ndarray
    label: np.ndarray
    attenuation: np.ndarray
    measured: np.ndarray
    glandular: np.ndarray
    breast: np.ndarray
    pectoral: np.ndarray
    camouflaged: np.ndarray
    spacing: tuple[float, float]
    view: str
    density: str
    style: str = "film"
    masses: list[dict] = field(default_factory=list)


def contrast_to_texture(attenuation: np.ndarray, body: np.ndarray, ring: np.ndarray) -> float:
    """Contrast-to-texture ratio of a mass in the noise-free attenuation image ``A``:

    ``(mean(A[body]) - mean(A[ring])) / std(A[ring])``

    Args:
        attenuation: ``A``, the X-ray line integral.
        body: the mass's labelled body.
        ring: the surrounding normal tissue (``1.2 <= rho <= 2`` in the breast, outside every mass body).

    Returns:
        The ratio; nan when ``body`` is empty or ``ring`` has fewer than 2 pixels (nothing to compare).
    """
    if not body.any() or np.count_nonzero(ring) < 2:
        return float("nan")
    surround = attenuation[ring]
    return float((attenuation[body].mean() - surround.mean()) / max(float(surround.std()), 1e-12))


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
                     density: str | None = None, no_mass_fraction: float = 0.25, fov_mm: float = 200.0,
                     style: str = "film", mass_contrast: str = "natural") -> Mammogram:
    """Render one mammogram; see the module docstring for the model. Option values are checked by
    :data:`OPTIONS` (``nnunet-ext synth`` validates before rendering)."""
    shape = tuple(int(n) for n in shape)
    texture_rng = np.random.default_rng(rng.integers(0, 2 ** 62, size=2))
    view = view or str(rng.choice(["CC", "MLO"]))
    # one uniform draw through the style's cumulative frequencies: a digital case is never denser than its film twin
    density = density or str(rng.choice(list(DENSITY_SHARE), p=list(DENSITY_FREQUENCIES[style])))
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
    bodies, rings = [], []
    n_masses = 0 if rng.random() < no_mass_fraction else (1 if rng.random() < 0.85 else 2)
    for _ in range(n_masses):
        radius = rng.uniform(3, 15)
        kind = str(rng.choice(MASS_SHAPES))
        elongation = rng.uniform(0.9, 1.0) if kind == "round" else rng.uniform(0.55, 0.85)
        blur_mm = 0.0 if rng.random() < 0.5 else rng.uniform(1.0, 2.0)
        orientation = rng.uniform(0, math.pi)
        mu_mass = MU_PER_MM["gland"] * rng.uniform(*MU_RATIO_RANGE[mass_contrast])
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
        bodies.append(rho < 1)
        rings.append((rho >= CAMOUFLAGE_RING[0]) & (rho <= CAMOUFLAGE_RING[1]))
        masses.append(dict(centre_mm=tuple(float(c) for c in mass_centre), radius_mm=radius, shape=kind,
                           blurred_margin=blur_mm > 0, mu_ratio=mu_mass / MU_PER_MM["gland"]))
    label[~breast] = 0

    # --- camouflage: each mass against the normal tissue around it, in the final noise-free attenuation image
    camouflaged = np.zeros(shape, dtype=bool)
    for mass, body, ring in zip(masses, bodies, rings):
        mass["body"], mass["ring"] = body & breast, ring & breast & (label == 0)
        mass["contrast_to_texture"] = contrast_to_texture(attenuation, mass["body"], mass["ring"])
        mass["camouflaged"] = bool(mass["contrast_to_texture"] < CAMOUFLAGE_THRESHOLD)  # nan: not camouflaged
        if mass["camouflaged"]:
            camouflaged |= mass["body"]

    # --- detector: blur, quantum noise, then the style's display (film curve to 12 bits or linear to 14 bits)
    transmitted = ndimage.gaussian_filter(np.exp(-attenuation), UNSHARPNESS_PX[style])
    counts_median = rng.uniform(*COUNTS_UNDER_MEDIAN_PATH[style])
    incident = counts_median / max(float(np.median(transmitted[breast])) if breast.any() else 1.0, 1e-12)
    counts = np.maximum(texture_rng.poisson(incident * transmitted), 1)
    measured = -np.log(counts / incident)
    display = _film_display if style == "film" else _digital_display
    image = np.round(display(measured, breast)).astype(np.float32)
    if rng.random() < 0.5:  # left or right breast
        image, label, attenuation, measured, glandular, breast, pectoral, camouflaged = (
            np.ascontiguousarray(a[:, ::-1])
            for a in (image, label, attenuation, measured, glandular, breast, pectoral, camouflaged))
        for mass in masses:
            mass["centre_mm"] = (mass["centre_mm"][0], width_mm - mass["centre_mm"][1])
            mass["body"], mass["ring"] = (np.ascontiguousarray(mass[key][:, ::-1]) for key in ("body", "ring"))
    return Mammogram(image=image, label=label, attenuation=attenuation, measured=measured, glandular=glandular,
                     breast=breast, pectoral=pectoral, camouflaged=camouflaged, spacing=spacing, view=view,
                     density=density, style=style, masses=masses)


def _film_display(measured: np.ndarray, breast: np.ndarray) -> np.ndarray:
    """Digitised film: a sigmoid characteristic curve over the 2nd-99.8th percentile of the breast's measured line
    integrals, rescaled so that direct exposure (``A = 0``) is 0, to 0..4095 (not yet rounded)."""
    if breast.any():
        low, high = np.percentile(measured[breast], [2, 99.8])
    else:
        low, high = 0.0, 1.0
    middle, slope = (low + high) / 2, 4.0 / max(high - low, 1e-6)
    curve = expit(slope * (measured - middle))
    floor = expit(-slope * middle)
    return MAX_VALUES["film"] * np.clip((curve - floor) / (1 - floor), 0, 1)


def _digital_display(measured: np.ndarray, breast: np.ndarray) -> np.ndarray:
    """Full-field digital: the log of the linear detector signal, i.e. a value proportional to the measured line
    integral, in the window ``[0, 99.8th percentile in the breast]``, to 0..16383 (not yet rounded)."""
    high = float(np.percentile(measured[breast], 99.8)) if breast.any() else 1.0
    return MAX_VALUES["digital"] * np.clip(measured / max(high, 1e-6), 0, 1)


def make_case(rng: np.random.Generator, shape=DEFAULT_SHAPE, **opts) -> PhantomCase:
    """One nnU-Net case: channel 0 = mammogram, label 1 = mass, ``extras["camouflaged"]`` = uint8 mask of the
    camouflaged masses' bodies (options as :func:`render_mammogram`)."""
    result = render_mammogram(rng, shape, **opts)
    return PhantomCase(images=[result.image], label=result.label, spacing=result.spacing,
                       extras={"camouflaged": result.camouflaged.astype(np.uint8)})


# What ``nnunet-ext synth mammo_2d --option KEY=VALUE`` accepts (defaults as in :func:`render_mammogram`).
OPTIONS = (
    Option("shape", Shape(2, 16), DEFAULT_SHAPE, "rows x columns; the pixel size is fov_mm / rows"),
    Option("view", Choice(("CC", "MLO")), None, "projection; null: CC or MLO at random per case", optional=True),
    Option("density", Choice(tuple(DENSITY_SHARE)), None,
           "BI-RADS density category; null: drawn per case with the style's frequencies (film: a 10 %, b 40 %, "
           "c 40 %, d 10 %; digital: 33, 36, 24, 7 %)", optional=True),
    Option("no_mass_fraction", Number(0.0, 1.0), 0.25, "share of images without a mass"),
    Option("fov_mm", Number(0.0, 1000.0, exclusive_minimum=True), 200.0, "image height in mm"),
    Option("style", Choice(STYLES), "film",
           "acquisition: film (digitised film, sigmoid curve, 12 bits; CBIS-DDSM-like) or digital (full-field "
           "digital, linear in A, 4x counts, 14 bits, fattier density prior; INbreast-like)"),
    Option("mass_contrast", Choice(tuple(MU_RATIO_RANGE)), "natural",
           "mass attenuation: natural (1.00-1.06 x glandular) or conspicuous (1.08-1.15 x glandular)"),
)

register(PhantomKind(
    name=KIND, dataset_name="Mammo2D", channel_names={"0": "MG"}, labels=LABELS, make_case=make_case,
    description="2D mammogram (CC/MLO, density a-d) with round/oval/irregular/spiculated masses",
    option_specs=OPTIONS))
