"""Breast DCE-MRI phantom (``nnunet-ext synth breast_dce``): one pre-contrast and ``n_post`` post-contrast phases.

Each case is a tissue model whose signal is computed from physics (facts: /work/shared/PHANTOMS.md, "Breast DCE-MRI";
kinetics in :mod:`nnunet_ext.synth.kinetics`):

1. **Anatomy** (axial slices; array axes (z, y, x) = (inferior-superior, anterior-posterior, right-left); anterior is
   row 0). Default shape (32, 96, 96) on a 96 x 134.4 x 134.4 mm field of view, i.e. spacing (3.0, 1.4, 1.4) mm;
   other shapes keep the field of view (``field_of_view_mm``). One breast (``bilateral=True``: two, on a field of
   view twice as wide) shaped as a half-ellipsoid on a curved chest wall: semi-axes 0.36-0.45 (right-left) and
   0.36-0.46 (inferior-superior) of the field of view, depth 0.38-0.55 of the anterior-posterior field of view,
   with a smooth +-2.5 mm outline perturbation. Layers: skin (1.5-2.5 mm), subcutaneous/retromammary fat,
   fibroglandular tissue (FGT: two-scale smooth random field, Gaussian sigma 6 and 2.5 mm, with a central trend,
   thresholded at a breast density of 15-60 % of the glandular zone, soft edges = partial volume), pectoral muscle
   (8-15 mm), low-signal thorax behind it, air outside. 2-5 vessels: tapered tubes (radius 0.7-1.8 mm) along
   curved paths from the chest wall into the breast. Bilateral breasts lie one in each half of the x axis; the
   breast mask joins them by the thin subcutaneous layer in front of the sternum.
2. **Lesion** (label 1; ``subregions=True``: labels 1 and 2, item 7): one, with probability
   ``second_lesion_probability`` (0.2) two, irregular lobulated ellipsoids (union of a main ellipsoid and 0-3 lobes,
   axis ratios 0.7-1, margin perturbation 6-18 % of the radius), diameter log-uniform in ``lesion_diameter_mm``
   (8-30 mm), centred in FGT and wrapped in a 2-6 mm envelope of FGT (tumours arise in glandular tissue, so on
   pre-contrast images they are surrounded by tissue of similar intensity). Heterogeneous subregions from the depth
   below the lesion surface (perturbed by a smooth field): enhancing rim (2-4.5 mm thick), mixed zone, and (lesions
   with depth > rim + 1.5 mm, probability 0.75) a necrotic core deeper than 55-75 % of the maximal depth. Voxel
   time-intensity curves therefore form a few clusters (what HCNet's clustering recovers). A lesion lies in one
   breast; with ``bilateral=True`` a second lesion may land in the other one (a bilateral case).
3. **Kinetics** (extended Tofts, Parker AIF, Hct 0.42); per-case draws, per-voxel jitter in tumours and BPE:

   ================  ============  ===========  ============  ============  =========
   tissue            K_trans /min  v_e          v_p           T10 s         M0
   ================  ============  ===========  ============  ============  =========
   fat               0.005-0.015   0.10         0.005         0.30-0.40     1.00
   FGT (BPE field)   0.02-0.15     0.25-0.40    0.003-0.01    1.20-1.40     0.85
   skin              0.01-0.02     0.20         0.005         0.95-1.05     0.80
   pectoral muscle   0.06-0.12     0.10-0.15    0.02-0.04     0.85-1.00     0.75
   thorax            0             -            0             1.2           0.12
   vessel (blood)    0             -            1 - Hct       1.40-1.55     0.90
   benign focus      0.08-0.15     0.50-0.70    0.005-0.015   as FGT        0.85
   tumour rim        0.40-1.00     0.20-0.50    0.02-0.10     see below     0.85
   tumour mixed      0.06-0.15     0.40-0.60    0.01-0.02     see below     0.85
   necrotic core     0.005-0.03    0.60-0.80    0.001-0.004   see below     0.85
   ================  ============  ===========  ============  ============  =========

   BPE K_trans varies smoothly (sigma 8 mm) between 0.02 and a per-case level of 0.04-0.15 /min. Result: rim
   fast + washout, mixed zone medium/fast + persistent/plateau, core slow + persistent, fat < 10 %, vessels fast
   (> 200 %) + washout, benign foci medium + persistent.
4. **Signal**: spoiled gradient echo (TR 5 ms, flip 12 degrees, r1 4.5 /s/mM); each voxel is a partial-volume
   mixture of compartments (tumour, vessel, focus, skin, muscle, thorax, FGT, fat, air) whose signals add, each
   with its textured M0 (item 5). The
   pre-contrast phase has C = 0; post phases are at ``post_times_min`` minutes of the Parker AIF time axis
   (default 1.5 and 6.5 min for ``n_post=2``, evenly spaced in [1.5, 6.5] otherwise). Then a slight blur
   (Gaussian sigma 0.3/0.5/0.5 voxel), one smooth multiplicative coil bias field shared by all phases (+-5-15 %),
   and Rician noise with sigma = (mean pure-FGT pre-contrast signal) / SNR, SNR uniform in ``snr`` (20-40;
   ``snr=None`` gives noise-free images). Intensities are arbitrary units (FGT ~ 300, fat ~ 800 on pre-contrast).
5. **Tissue micro-structure texture** (every tissue, all phases): below the lesion scale, breast tissue is not
   homogeneous - fibroglandular strands interleave with fat, fat lobules are separated by thin fibrous septa, the
   pectoral muscle is made of fibre bundles, the dermis holds glands and follicles. Each compartment's proton
   density is ``M0(x) = M0 * (1 + a_tissue * g(x))``, g a zero-mean, unit-variance Gaussian random field whose
   autocorrelation falls to 1/e at l = {texture_mm} mm (white noise convolved with a Gaussian of sigma l / 2), the
   same field for every compartment (no texture edge at tissue borders). Relative amplitudes a_tissue, uniform
   per-case draws:

   {texture_amplitudes}

   The muscle has its own field, correlated over {fibre_mm} mm along its fibres (right-left) and l across them.
   The amplitudes are voxel-level standard deviations at the default voxel ({reference_voxel} mm); a voxel of
   volume V averages about V / l^3 independent micro-domains, so other grids scale them by
   sqrt({reference_volume} mm^3 / max(V, l^3)) (coarser voxels, smoother tissue). The acquisition blur adds its
   own correlation. Only M0 is textured: at the default TR and flip angle a relative native-T1 change d of
   FGT-like tissue (T1 {t1_sensitivity_range} s) changes the pre-contrast signal by {t1_sensitivity} d, so a T1
   texture would look like an M0 texture. Benign foci take the FGT amplitude; the tumour's follows its kinetics
   (item 6).
6. **Pre-contrast cues** (what a pre-contrast-only method such as DKM can exploit), scaled by
   ``pre_contrast_conspicuity`` = c (default {default_c:g}; 0 makes the tumour indistinguishable from FGT on
   pre-contrast apart from its FGT envelope: same native T1, same M0, same texture field and amplitude):

   - native T1 of tumour tissue ``T10 = T10_FGT(x) - c * {t1_per_k:g} s min * (K_trans(x) - {k_ref:g} /min)``,
     kept within {t1_low:.1f}-{t1_high:.1f} s: high K_trans, shorter T1, slightly brighter; necrotic core slightly
     darker;
   - texture amplitude of tumour tissue
     ``a_tumour(x) = a_FGT * (1 + c * {gain:g} * clip((K_trans(x) - {k_ref:g} /min) / {k_scale:g} /min, -1, 1))``:
     hypercellular, hypervascular tissue (the enhancing rim) is more heterogeneous than the surrounding FGT (up to
     {max_ratio:g} times its amplitude at c = 1), the mixed zone and the necrotic core less (down to {min_ratio:g}
     times as K_trans -> 0), within the range FGT amplitudes take from case to case, so texture alone does not
     give the lesion away.

   Both are tissue properties, so they are present (and swamped by enhancement) in the post phases as well.
   Measured lesion-vs-FGT contrast-to-noise ratios at the default are in tests/synth/test_breast_dce.py.
7. **What a case holds** (options of :func:`make_case`, all off by default; none draws a random number, so the
   images and maps of a case stay the same):

   - ``subtraction``: one more, last, channel ``SUB`` = post1 - pre, from the raw intensities in float32. nnU-Net
     z-scores every channel on its own, so a difference of the normalised channels would be another image.
   - ``subregions``: label 1 = low-enhancing tumour, the mixed zone and the necrotic core (K_trans below about
     {low_k_trans:g} /min: persistent or plateau curves, a fraction of the rim's uptake), and 2 = enhancing tumour,
     the rim (K_trans {rim_k_trans}: fast + washout). A reader separates the enhancing rim from the core that takes
     up little contrast, and the mixed zone is much closer to the core than to the rim in kinetics, so it goes with
     the core. dataset.json labels are nnU-Net regions: lesion = labels 1 and 2, enhancing = label 2, with
     regions_class_order 1, 2 (lesion voxels write 1, then enhancing voxels 2).
   - ``distractor_masks``: extras ``breast`` (the breast mask) and ``distractor``, the enhancing tissue that is not
     tumour: voxels whose dominant compartment is a vessel or a benign focus, or FGT whose BPE K_trans is
     >= {distractor_k_trans:g} /min (moderate/marked background parenchymal enhancement), outside the label. What
     a reader of the post-contrast images (or a network) could take for tumour; their mean early enhancement is
     above 50 %, fat's below 10 % (tests/synth/test_breast_dce.py).
   - ``parameter_maps_in_extras`` and ``masks_in_extras``: the maps below.

:func:`make_case` returns the images and the label; :func:`simulate` and :func:`case_parameter_maps` also return
per-voxel K_trans / v_e / v_p / T10 / M0 / tissue / subregion maps of the dominant compartment and the breast mask
(not written to disk unless ``parameter_maps_in_extras=True``, ``masks_in_extras=True`` or
``distractor_masks=True``). All randomness comes from the ``rng`` argument.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.special import expit

from nnunet_ext.errors import UserInputError
from nnunet_ext.synth import kinetics
from nnunet_ext.synth.base import PhantomCase, PhantomKind, register
from nnunet_ext.synth.options import Flag, Integer, Number, Numbers, Option, RangePair, Shape

DEFAULT_SHAPE = (32, 96, 96)
DEFAULT_FIELD_OF_VIEW_MM = (96.0, 134.4, 134.4)
DEFAULT_PRE_CONTRAST_CONSPICUITY = 1.0
EARLY_TIME_MIN, LATE_TIME_MIN = 1.5, 6.5
INTENSITY_SCALE = 10000.0  # arbitrary units: FGT ~ 300, fat ~ 800 before contrast

# Pre-contrast cue strengths at conspicuity 1 (module docstring, item 6).
T1_PER_K_TRANS_S = 0.10       # s of native-T1 shortening per /min of K_trans above the reference
T1_REFERENCE_K_TRANS = 0.3    # /min: tumour tissue with this K_trans has the native T1 and texture of the FGT
TUMOUR_T1_RANGE_S = (1.0, 1.5)
TUMOUR_TEXTURE_GAIN = 0.4     # relative change of the tumour's texture amplitude vs the FGT's at full scale
TUMOUR_TEXTURE_K_SCALE = 0.4  # /min of K_trans away from the reference that reaches full scale

# Tissue micro-structure texture (module docstring, item 5): relative std of M0, uniform per-case draws.
TEXTURE_CORRELATION_MM = 1.5        # 1/e length of the autocorrelation: below the lesion scale (8-30 mm)
MUSCLE_FIBRE_CORRELATION_MM = 6.0   # along the pectoral muscle's fibres (x); TEXTURE_CORRELATION_MM across
TEXTURE_REFERENCE_VOXEL_MM = (3.0, 1.4, 1.4)  # the default grid; amplitudes are voxel-level stds there
TEXTURE_AMPLITUDE = {
    "fibroglandular": (0.03, 0.06),  # glandular strands interleaved with fat
    "fat": (0.01, 0.02),             # lobules and thin fibrous septa
    "skin": (0.02, 0.04),            # dermis, glands, follicles
    "muscle": (0.02, 0.04),          # fibre bundles
    "thorax": (0.04, 0.08),          # heart and lung behind the chest wall
    "vessel": (0.0, 0.0),            # flowing blood: no micro-structure
}
FGT_M0 = 0.85  # fibroglandular (and tumour, benign focus) proton density relative to fat


def _documented_numbers() -> dict[str, object]:
    """The numbers of the module docstring, from the constants they document (so the two cannot drift apart)."""
    rows = [f"{name:<15} {low * 100:g}-{high * 100:g} %" if high > 0 else f"{name:<15} 0"
            for name, (low, high) in TEXTURE_AMPLITUDE.items()]
    gain, k_ref, k_scale = TUMOUR_TEXTURE_GAIN, T1_REFERENCE_K_TRANS, TUMOUR_TEXTURE_K_SCALE
    # d ln S / d ln T1 of the pre-contrast SPGR signal at the ends of the FGT-like T1 range
    t1_range = (1.0, 1.4)
    sensitivity = [t1 / kinetics.spgr_signal(1.0 / t1) * (kinetics.spgr_signal(1.0 / (t1 + 1e-4))
                                                          - kinetics.spgr_signal(1.0 / (t1 - 1e-4))) / 2e-4
                   for t1 in t1_range]
    return {
        "t1_sensitivity": f"{sensitivity[0]:.2f} to {sensitivity[1]:.2f}",
        "t1_sensitivity_range": f"{t1_range[0]:.1f}-{t1_range[1]:.1f}",
        "texture_mm": f"{TEXTURE_CORRELATION_MM:g}", "fibre_mm": f"{MUSCLE_FIBRE_CORRELATION_MM:g}",
        "texture_amplitudes": "\n   ".join(rows),
        "reference_voxel": " x ".join(f"{v:g}" for v in TEXTURE_REFERENCE_VOXEL_MM),
        "reference_volume": f"{float(np.prod(TEXTURE_REFERENCE_VOXEL_MM)):.3g}",
        "default_c": DEFAULT_PRE_CONTRAST_CONSPICUITY, "t1_per_k": T1_PER_K_TRANS_S, "k_ref": k_ref,
        "t1_low": TUMOUR_T1_RANGE_S[0], "t1_high": TUMOUR_T1_RANGE_S[1], "gain": gain, "k_scale": k_scale,
        "max_ratio": round(1.0 + gain, 3), "min_ratio": round(1.0 + gain * max(-1.0, -k_ref / k_scale), 3),
        "low_k_trans": TUMOUR_KINETICS["mixed"][0][1], "distractor_k_trans": DISTRACTOR_BPE_K_TRANS,
        "rim_k_trans": "{:g}-{:g} /min".format(*TUMOUR_KINETICS["rim"][0]),
    }

TISSUES = {"air": 0, "fat": 1, "fibroglandular": 2, "skin": 3, "muscle": 4, "thorax": 5, "vessel": 6,
           "benign_focus": 7, "tumour": 8}
SUBREGIONS = {"none": 0, "rim": 1, "mixed": 2, "necrotic_core": 3}

# Per-subregion tumour kinetics: (K_trans /min, v_e, v_p) ranges, drawn per lesion.
TUMOUR_KINETICS = {
    "rim": ((0.40, 1.00), (0.20, 0.50), (0.02, 0.10)),
    "mixed": ((0.06, 0.15), (0.40, 0.60), (0.01, 0.02)),
    "necrotic_core": ((0.005, 0.03), (0.60, 0.80), (0.001, 0.004)),
}

# What a case holds (module docstring, item 7).
LABELS = {"background": 0, "tumor": 1}
LOW_ENHANCING, ENHANCING = 1, 2  # labels with subregions=True
SUBREGION_LABELS = {"background": 0, "lesion": [LOW_ENHANCING, ENHANCING], "enhancing": [ENHANCING]}
SUBREGION_CLASS_ORDER = [LOW_ENHANCING, ENHANCING]
DISTRACTOR_BPE_K_TRANS = 0.06  # /min: FGT enhancing at least this much is moderate/marked BPE, a distractor

if __doc__:  # None under python -OO
    __doc__ = __doc__.format(**_documented_numbers())


@dataclass
class BreastDCESimulation:
    """Everything :func:`simulate` produces for one case.

    Attributes:
        images: pre-contrast then post-contrast phases, float32 (z, y, x).
        label: uint8 tumour mask (1 where the tumour fraction of a voxel is >= 0.5).
        spacing: (z, y, x) mm.
        times_min: acquisition time of each phase (0 for pre-contrast) on the AIF time axis, minutes.
        maps: per-voxel maps of the dominant compartment: ``k_trans``, ``v_e``, ``v_p``, ``t10`` (s), ``m0``,
            ``tissue`` (ids in :data:`TISSUES`), ``subregion`` (ids in :data:`SUBREGIONS`, inside the label only),
            ``breast`` (1 inside the body and anterior of the chest wall: skin, fat, FGT, lesions, vessels; the
            region a breast mask outlines) and the compartment fractions ``tumour_fraction`` and ``fgt_fraction``.
        noise_sigma: Rician noise parameter in image units (0 when noise-free).
    """

    images: list[np.ndarray]
    label: np.ndarray
    spacing: tuple[float, float, float]
    times_min: tuple[float, ...]
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    noise_sigma: float = 0.0


# ---------------------------------------------------------------------------------------------------------------
# small generic helpers


def smooth_random_field(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float],
                        sigma_mm: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field smoothed with a Gaussian of ``sigma_mm``.

    White noise is smoothed on a grid of step ~sigma/2 and linearly upsampled axis by axis, which is much cheaper
    than smoothing at full resolution for large sigma.
    """
    steps = [max(float(s), sigma_mm / 2.0) for s in spacing]
    coarse_shape = [int(np.floor((n - 1) * s / st)) + 2 for n, s, st in zip(shape, spacing, steps)]
    values = ndimage.gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32),
                                     [sigma_mm / st for st in steps], mode="reflect")
    for axis, (n, s, st, nc) in enumerate(zip(shape, spacing, steps, coarse_shape)):
        position = np.arange(n) * s / st
        lower = np.minimum(np.floor(position).astype(int), nc - 2)
        weight = (position - lower).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(len(shape))])
        values = values.take(lower, axis) * (1.0 - weight) + values.take(lower + 1, axis) * weight
    values -= values.mean()
    return (values / max(values.std(), 1e-12)).astype(np.float32)


def texture_field(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float],
                  correlation_mm: Sequence[float]) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field whose autocorrelation falls to 1/e at ``correlation_mm`` (per
    axis): white noise on the voxel grid convolved with a Gaussian of sigma = correlation / 2, since that kernel gives
    the autocorrelation exp(-r^2 / (4 sigma^2)). Periodic boundaries keep the statistics the same up to the edges."""
    white = rng.standard_normal(tuple(shape), dtype=np.float32)
    sigma_voxels = [c / 2.0 / s for c, s in zip(correlation_mm, spacing)]
    values = ndimage.gaussian_filter(white, sigma_voxels, mode="wrap", truncate=3.0)
    values -= values.mean()
    return values / max(float(values.std()), 1e-12)


def texture_voxel_factor(spacing: Sequence[float]) -> float:
    """Scale of the texture amplitudes on a grid of ``spacing`` relative to the default voxel: a voxel of volume V
    averages about V / l^3 independent micro-domains (l = :data:`TEXTURE_CORRELATION_MM`), so the voxel-level std
    goes like sqrt(V_ref / max(V, l^3))."""
    volume = float(np.prod(spacing))
    return float(np.sqrt(np.prod(TEXTURE_REFERENCE_VOXEL_MM) / max(volume, TEXTURE_CORRELATION_MM ** 3)))


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _soft_inside(signed_distance_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Partial-volume fraction of a voxel whose centre is ``signed_distance_mm`` inside a surface (+ inside)."""
    return np.clip(0.5 + signed_distance_mm / voxel_mm, 0.0, 1.0).astype(np.float32)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _box(centre_mm: np.ndarray, half_size_mm: float, coords: list[np.ndarray]) -> tuple[slice, ...]:
    """Index slices of the voxels within ``half_size_mm`` of a centre along each axis."""
    out = []
    for c, axis_coords in zip(centre_mm, coords):
        inside = np.nonzero(np.abs(axis_coords - c) <= half_size_mm)[0]
        if inside.size == 0:
            inside = np.array([int(np.argmin(np.abs(axis_coords - c)))])
        out.append(slice(int(inside[0]), int(inside[-1]) + 1))
    return tuple(out)


def _box_coordinates(box: tuple[slice, ...], coords: list[np.ndarray]) -> list[np.ndarray]:
    """Broadcastable (z, y, x) coordinate arrays in mm of a box."""
    return [coords[a][box[a]].reshape([-1 if i == a else 1 for i in range(3)]) for a in range(3)]


# ---------------------------------------------------------------------------------------------------------------
# anatomy


@dataclass
class _Anatomy:
    coords: list[np.ndarray]          # 1D coordinates (mm) per axis, centred on the volume
    voxel_mm: float                   # in-plane voxel size used for partial-volume edges
    body_depth: np.ndarray            # approximate signed distance below the skin (mm, + inside the body)
    chest_offset: np.ndarray          # y - y_chest_wall (mm, + posterior of the muscle's anterior surface)
    breast_zone: np.ndarray           # [0, 1] weight of the glandular zone (where FGT may grow)
    breast_centres: list[tuple[float, ...]]  # (x_centre, z_centre, half-width, half-height, depth) in mm
    muscle_thickness: float


def _build_anatomy(rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                   bilateral: bool) -> _Anatomy:
    nz, ny, nx = shape
    coords = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    z, y, x = coords[0][:, None, None], coords[1][None, :, None], coords[2][None, None, :]
    fov_z, fov_y, fov_x = (n * s for n, s in zip(shape, spacing))
    voxel_mm = float(spacing[1])

    # chest wall (anterior surface of the pectoral muscle): convex thorax, most anterior at its centre
    thorax_centre_x = _uniform(rng, (-0.1, 0.1)) * fov_x
    curvature = _uniform(rng, (0.5, 1.5)) * 10.0 / (0.45 * fov_x) ** 2 * (0.5 if bilateral else 1.0)
    chest_wall_y = fov_y / 2.0 - _uniform(rng, (0.22, 0.30)) * fov_y + curvature * (x - thorax_centre_x) ** 2
    chest_offset = (y - chest_wall_y).astype(np.float32)  # broadcast (1, ny, nx)
    chest_offset = np.broadcast_to(chest_offset, shape)

    subcutaneous = _uniform(rng, (8.0, 15.0))
    body_depth = chest_offset + subcutaneous  # chest body surface
    breast_x_fov = fov_x / 2.0 if bilateral else fov_x
    centres = [-fov_x / 4.0, fov_x / 4.0] if bilateral else [0.0]
    zone = np.zeros(shape, np.float32)
    breasts = []
    retromammary = _uniform(rng, (4.0, 8.0))
    for cx in centres:
        half_width = _uniform(rng, (0.36, 0.45)) * breast_x_fov
        half_height = _uniform(rng, (0.36, 0.46)) * fov_z
        depth = _uniform(rng, (0.38, 0.55)) * fov_y
        xc = cx + _uniform(rng, (-0.04, 0.04)) * breast_x_fov
        zc = _uniform(rng, (-0.04, 0.04)) * fov_z
        u = (x - xc) / half_width
        v = -chest_offset / depth           # anterior distance from the chest wall, normalised
        w = (z - zc) / half_height
        rho2 = u ** 2 + v ** 2 + w ** 2
        # first-order signed distance to the ellipsoid surface: -(rho^2 - 1) / |grad rho^2|
        gradient = 2.0 * np.sqrt((u / half_width) ** 2 + (v / depth) ** 2 + (w / half_height) ** 2) + 1e-6
        breast_depth = np.minimum((1.0 - rho2) / gradient, 60.0)
        body_depth = np.maximum(body_depth, breast_depth)
        # glandular zone: away from skin and from the chest wall (retromammary fat)
        zone = np.maximum(zone, (expit((breast_depth - 6.0) / 1.5) * expit((-chest_offset - retromammary) / 1.5))
                          .astype(np.float32))
        breasts.append((xc, zc, half_width, half_height, depth))
    body_depth = body_depth + 2.5 * smooth_random_field(rng, shape, spacing, 12.0) * (body_depth < 20)
    return _Anatomy(coords=coords, voxel_mm=voxel_mm, body_depth=body_depth.astype(np.float32),
                    chest_offset=np.ascontiguousarray(chest_offset), breast_zone=zone, breast_centres=breasts,
                    muscle_thickness=_uniform(rng, (8.0, 15.0)))


def _fibroglandular_fraction(rng: np.random.Generator, anatomy: _Anatomy, shape, spacing) -> np.ndarray:
    z, y, x = (c.reshape([-1 if i == a else 1 for i in range(3)]) for a, c in enumerate(anatomy.coords))
    density_field = smooth_random_field(rng, shape, spacing, 6.0) + 0.6 * smooth_random_field(rng, shape, spacing,
                                                                                                2.5)
    trend = np.zeros(shape, np.float32)
    for xc, zc, half_width, half_height, _ in anatomy.breast_centres:
        # glandular tissue is denser centrally (behind the nipple) than at the periphery
        central = 1.0 - ((x - xc) / half_width) ** 2 - ((z - zc) / half_height) ** 2
        trend = np.maximum(trend, 1.2 * np.clip(central, -1.0, 1.0))
    density_field = density_field + trend
    zone = anatomy.breast_zone
    breast_density = _uniform(rng, (0.20, 0.60))
    threshold = np.quantile(density_field[zone > 0.5], 1.0 - breast_density) if np.any(zone > 0.5) else 0.0
    # a linear ramp (not a sigmoid) so that glandular tissue is pure away from its edges
    return (np.clip((density_field - threshold) / 0.3 + 0.5, 0.0, 1.0) * zone).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# lesions, foci and vessels


@dataclass
class _Lesion:
    box: tuple[slice, ...]
    fraction: np.ndarray      # tumour partial-volume fraction in the box
    label: np.ndarray         # bool, fraction >= 0.5
    envelope: np.ndarray      # FGT envelope fraction in the box
    subregion: np.ndarray     # SUBREGIONS ids (0 outside the label)
    k_trans: np.ndarray
    v_e: np.ndarray
    v_p: np.ndarray


def _choose_centre(rng, anatomy: _Anatomy, fgt: np.ndarray, radius: float, avoid: list[tuple[np.ndarray, float]],
                   spacing: Sequence[float]):
    """A voxel centre (mm) deep enough in the breast for ``radius``, away from ``avoid``, preferring places whose
    surroundings (a box of about the lesion's size) are dense FGT, so that the tumour hides in glandular tissue."""
    coords = anatomy.coords
    for _ in range(6):
        window = [max(1, int(round(2.0 * (radius + 3.0) / s))) for s in spacing]
        local_density = ndimage.uniform_filter(fgt, window, mode="constant")
        ok = (anatomy.body_depth > radius + 5.0) & (-anatomy.chest_offset > radius + 4.0) & (anatomy.breast_zone
                                                                                           > 0.5)
        zmargin = int(np.ceil(min(radius, 6.0) / (coords[0][1] - coords[0][0] if len(coords[0]) > 1 else 1.0)))
        if 0 < zmargin < ok.shape[0] // 2:
            ok[:zmargin] = False
            ok[-zmargin:] = False
        for centre, min_distance in avoid:
            z, y, x = _box_coordinates(tuple(slice(None) for _ in range(3)), coords)
            ok &= ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) > min_distance ** 2
        candidates = np.flatnonzero(ok)
        if candidates.size:
            weights = local_density.ravel()[candidates].astype(np.float64) ** 4 + 1e-3
            index = rng.choice(candidates, p=weights / weights.sum())
            zi, yi, xi = np.unravel_index(index, fgt.shape)
            return np.array([coords[0][zi], coords[1][yi], coords[2][xi]]), radius
        radius *= 0.8
    # tiny volumes: fall back to the deepest breast voxel
    index = int(np.argmax(np.where(anatomy.breast_zone > 0, anatomy.body_depth, -np.inf)))
    zi, yi, xi = np.unravel_index(index, fgt.shape)
    return np.array([coords[0][zi], coords[1][yi], coords[2][xi]]), radius


def _make_lesion(rng, anatomy: _Anatomy, fgt: np.ndarray, spacing, diameter_mm: float,
                 avoid: list[tuple[np.ndarray, float]]) -> tuple[_Lesion, np.ndarray, float]:
    radius = max(diameter_mm / 2.0, 0.6 * max(spacing))
    centre, radius = _choose_centre(rng, anatomy, fgt, radius, avoid, spacing)
    margin = _uniform(rng, (2.0, 6.0))
    box = _box(centre, 1.6 * radius + margin + 3.0 * max(spacing), anatomy.coords)
    box_shape = tuple(s.stop - s.start for s in box)
    z, y, x = _box_coordinates(box, anatomy.coords)
    offsets = np.stack(np.broadcast_arrays(z - centre[0], y - centre[1], x - centre[2]), axis=-1)

    rotation = _random_rotation(rng)
    semi_axes = radius * np.array([1.0, _uniform(rng, (0.7, 1.0)), _uniform(rng, (0.7, 1.0))])
    blobs = [(np.zeros(3), semi_axes)]
    for _ in range(int(rng.integers(0, 4))):  # lobulation
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        blobs.append((0.55 * radius * direction, semi_axes * _uniform(rng, (0.45, 0.7))))
    rho = np.full(box_shape, np.inf, np.float32)
    for blob_centre, axes in blobs:
        local = (offsets - blob_centre) @ rotation / axes
        rho = np.minimum(rho, np.sqrt((local ** 2).sum(-1)).astype(np.float32))
    margin_noise = smooth_random_field(rng, box_shape, spacing, max(radius / 3.0, 1.5))
    irregularity = _uniform(rng, (0.06, 0.18))
    signed = (1.0 - rho + irregularity * margin_noise) * radius  # ~ mm inside the lesion surface
    fraction = _soft_inside(signed, anatomy.voxel_mm)
    label = signed >= 0
    if not label.any():  # coarse grids: keep at least the voxel nearest to the centre
        nearest = np.unravel_index(int(np.argmax(signed)), box_shape)
        label[nearest] = True
        fraction[nearest] = max(float(fraction[nearest]), 0.5)
    envelope_noise = smooth_random_field(rng, box_shape, spacing, 3.0)
    envelope = _soft_inside((1.0 - rho) * radius + margin + 1.5 * envelope_noise, anatomy.voxel_mm)

    # subregions from the depth below the lesion surface, perturbed so that their borders are irregular
    depth = ndimage.distance_transform_edt(np.pad(label, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    depth = depth + 0.8 * smooth_random_field(rng, box_shape, spacing, max(radius / 4.0, 1.0)) * label
    rim_thickness = _uniform(rng, (2.0, 4.5))
    max_depth = float(depth[label].max())
    subregion = np.where(label, SUBREGIONS["rim"], SUBREGIONS["none"]).astype(np.uint8)
    subregion[label & (depth >= rim_thickness)] = SUBREGIONS["mixed"]
    core_depth = max(_uniform(rng, (0.55, 0.75)) * max_depth, rim_thickness + 1.5)
    if rng.uniform() < 0.75:
        subregion[label & (depth >= core_depth)] = SUBREGIONS["necrotic_core"]

    k_trans = np.zeros(box_shape, np.float32)
    v_e = np.full(box_shape, 0.3, np.float32)
    v_p = np.zeros(box_shape, np.float32)
    jitter = [smooth_random_field(rng, box_shape, spacing, 1.5) for _ in range(3)]
    for name, (k_range, ve_range, vp_range) in TUMOUR_KINETICS.items():
        region = subregion == SUBREGIONS[name]
        k_trans[region] = _uniform(rng, k_range) * np.exp(0.15 * jitter[0][region])
        v_e[region] = np.clip(_uniform(rng, ve_range) * np.exp(0.08 * jitter[1][region]), 0.05, 0.9)
        v_p[region] = _uniform(rng, vp_range) * np.exp(0.15 * jitter[2][region])
    # voxels in the partial-volume shell outside the label take the rim's kinetics (the lesion edge)
    shell = (fraction > 0) & ~label
    if np.any(subregion == SUBREGIONS["rim"]):
        _, nearest = ndimage.distance_transform_edt(subregion != SUBREGIONS["rim"], sampling=spacing,
                                                    return_indices=True)
        for target in (k_trans, v_e, v_p):
            target[shell] = target[tuple(index[shell] for index in nearest)]
    lesion = _Lesion(box, fraction, label, envelope, subregion, k_trans, v_e, v_p)
    return lesion, centre, radius


def _sphere_fraction(centre, radius, anatomy: _Anatomy, spacing):
    box = _box(centre, radius + 2.0 * max(spacing), anatomy.coords)
    z, y, x = _box_coordinates(box, anatomy.coords)
    distance = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    return box, _soft_inside(radius - distance, anatomy.voxel_mm)


def _vessel_fraction(rng, anatomy: _Anatomy, shape, spacing, n_vessels: int) -> np.ndarray:
    """Tapered tubes along quadratic Bezier curves from the chest wall into the breast."""
    fraction = np.zeros(shape, np.float32)
    coords = anatomy.coords
    for _ in range(n_vessels):
        xc, zc, half_width, half_height, depth = anatomy.breast_centres[
            int(rng.integers(len(anatomy.breast_centres)))]
        start_x, start_z = xc + half_width * _uniform(rng, (-0.7, 0.7)), zc + half_height * _uniform(rng, (-0.7, 0.7))
        start_xi = int(np.argmin(np.abs(coords[2] - start_x)))
        wall_y = coords[1][int(np.argmin(np.abs(anatomy.chest_offset[0, :, start_xi])))]
        start = np.array([start_z, wall_y + 4.0, start_x])
        end = np.array([zc + half_height * _uniform(rng, (-0.5, 0.5)),
                        wall_y - _uniform(rng, (0.35, 0.8)) * depth, xc + half_width * _uniform(rng, (-0.5, 0.5))])
        control = (start + end) / 2.0 + rng.normal(0.0, 12.0, 3) * np.array([0.5, 1.0, 1.0])
        s = np.linspace(0.0, 1.0, 17)[:, None]
        points = (1 - s) ** 2 * start + 2 * (1 - s) * s * control + s ** 2 * end
        radius_start = _uniform(rng, (1.0, 1.8))
        radii = radius_start * (1.0 - 0.4 * s[:, 0])
        lo, hi = points.min(0) - radius_start - 2 * max(spacing), points.max(0) + radius_start + 2 * max(spacing)
        box = tuple(slice(int(np.searchsorted(c, a)), int(np.searchsorted(c, b, side="right")))
                    for c, a, b in zip(coords, lo, hi))
        if any(b.stop <= b.start for b in box):
            continue
        voxel = [c.astype(np.float32) for c in _box_coordinates(box, coords)]
        # running minimum over the polyline's segments of the distance to the tube's surface
        surface_distance = np.full(tuple(b.stop - b.start for b in box), np.inf, np.float32)
        for a, b, radius_a, radius_b in zip(points[:-1], points[1:], radii[:-1], radii[1:]):
            segment, a = (b - a).tolist(), a.tolist()  # python floats keep the arithmetic in float32
            t = sum((v - pa) * sa for v, pa, sa in zip(voxel, a, segment)) / max(sum(v * v for v in segment), 1e-9)
            t = np.clip(t, 0.0, 1.0)
            distance = np.sqrt(sum((v - pa - t * sa) ** 2 for v, pa, sa in zip(voxel, a, segment)))
            np.minimum(surface_distance, distance - (radius_a + (radius_b - radius_a) * t), out=surface_distance)
        tube = _soft_inside(-surface_distance, anatomy.voxel_mm)
        region = fraction[box]
        np.maximum(region, tube, out=region)
    return fraction


# ---------------------------------------------------------------------------------------------------------------
# the case


def _post_times(n_post: int, post_times_min: Sequence[float] | None) -> tuple[float, ...]:
    if post_times_min is not None:
        times = tuple(float(t) for t in post_times_min)
        if len(times) != n_post or any(t <= 0 for t in times) or list(times) != sorted(times):
            raise UserInputError(f"breast_dce: post_times_min {post_times_min} must be {n_post} increasing "
                                 "positive times in minutes (one per post-contrast phase)")
        return times
    if n_post == 1:
        return (EARLY_TIME_MIN,)
    return tuple(float(t) for t in np.linspace(EARLY_TIME_MIN, LATE_TIME_MIN, n_post))


def simulate(rng: np.random.Generator, shape: Sequence[int] = DEFAULT_SHAPE, *, n_post: int = 2,
             post_times_min: Sequence[float] | None = None,
             pre_contrast_conspicuity: float = DEFAULT_PRE_CONTRAST_CONSPICUITY,
             snr: float | Sequence[float] | None = (20.0, 40.0),
             lesion_diameter_mm: Sequence[float] = (8.0, 30.0), second_lesion_probability: float = 0.2,
             max_benign_foci: int = 3, n_vessels: Sequence[int] = (2, 5), bilateral: bool = False,
             field_of_view_mm: Sequence[float] | None = None) -> BreastDCESimulation:
    """Simulate one breast DCE-MRI case (model: module docstring).

    Args:
        rng: the only source of randomness.
        shape: (z, y, x) voxels.
        n_post: number of post-contrast phases.
        post_times_min: their times in minutes (default 1.5 and 6.5 for two phases).
        pre_contrast_conspicuity: scale of the tumour's pre-contrast cues (0 = none, 1 = default strength).
        snr: pure-FGT pre-contrast signal over the noise sigma; a range is sampled per case; None = no noise.
        lesion_diameter_mm: range of the main lesion's diameter (log-uniform).
        second_lesion_probability: chance of a second, smaller lesion.
        max_benign_foci: up to this many small enhancing foci (not labelled).
        n_vessels: (min, max) number of vessels.
        bilateral: two breasts instead of one (default field of view twice as wide in x).
        field_of_view_mm: (z, y, x) extent; spacing = field of view / shape.
    """
    shape = tuple(int(n) for n in shape)  # option values are checked by the kind's OPTIONS (synth.options)
    times = (0.0,) + _post_times(int(n_post), post_times_min)
    if field_of_view_mm is None:
        fov = DEFAULT_FIELD_OF_VIEW_MM
        field_of_view_mm = (fov[0], fov[1], 2.0 * fov[2]) if bilateral else fov
    spacing = tuple(round(float(f) / n, 6) for f, n in zip(field_of_view_mm, shape))

    anatomy = _build_anatomy(rng, shape, spacing, bilateral)
    fgt = _fibroglandular_fraction(rng, anatomy, shape, spacing)

    # lesions, embedded in FGT
    lesions: list[_Lesion] = []
    avoid: list[tuple[np.ndarray, float]] = []
    log_d = np.log(np.asarray(lesion_diameter_mm, dtype=np.float64))
    diameters = [float(np.exp(rng.uniform(*log_d)))]
    if rng.uniform() < second_lesion_probability:
        diameters.append(max(lesion_diameter_mm[0], diameters[0] * _uniform(rng, (0.4, 0.8))))
    for diameter in diameters:
        lesion, centre, radius = _make_lesion(rng, anatomy, fgt, spacing, diameter, avoid)
        avoid.append((centre, 2.0 * radius + 10.0))
        zone = np.clip(anatomy.breast_zone[lesion.box] * 3.0, 0.0, 1.0)
        np.maximum(fgt[lesion.box], lesion.envelope * zone, out=fgt[lesion.box])
        lesions.append(lesion)

    tumour = np.zeros(shape, np.float32)
    label = np.zeros(shape, np.uint8)
    subregion = np.zeros(shape, np.uint8)
    tumour_k, tumour_ve, tumour_vp = (np.zeros(shape, np.float32) for _ in range(3))
    for lesion in lesions:
        take = lesion.fraction > tumour[lesion.box]
        for full, part in ((tumour, lesion.fraction), (subregion, lesion.subregion), (tumour_k, lesion.k_trans),
                           (tumour_ve, lesion.v_e), (tumour_vp, lesion.v_p)):
            full[lesion.box][take] = part[take]
        label[lesion.box] |= lesion.label.astype(np.uint8)

    # benign foci in FGT, away from the lesions
    focus = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(0, max_benign_foci + 1))):
        radius = _uniform(rng, (1.5, 3.5))
        centre, radius = _choose_centre(rng, anatomy, fgt, radius, [(c, d + 5.0) for c, d in avoid], spacing)
        box, sphere = _sphere_fraction(centre, radius, anatomy, spacing)
        np.maximum(focus[box], sphere, out=focus[box])
    focus_params = (_uniform(rng, (0.08, 0.15)), _uniform(rng, (0.5, 0.7)), _uniform(rng, (0.005, 0.015)))

    vessels = _vessel_fraction(rng, anatomy, shape, spacing, int(rng.integers(n_vessels[0], n_vessels[1] + 1)))

    # per-case tissue properties
    hematocrit = kinetics.HEMATOCRIT
    t1_fgt = _uniform(rng, (1.2, 1.4)) + 0.03 * smooth_random_field(rng, shape, spacing, 10.0)
    bpe_level = 0.03 + 0.12 * rng.uniform() ** 2  # mostly minimal/mild, sometimes marked
    bpe_k = 0.02 + (bpe_level - 0.02) * expit(2.0 * smooth_random_field(rng, shape, spacing, 8.0))
    fgt_ve, fgt_vp = _uniform(rng, (0.25, 0.40)), _uniform(rng, (0.003, 0.01))
    # tissue micro-structure (item 5): one field shared by all compartments, an anisotropic one for the muscle;
    # drawn whatever the conspicuity, so that the conspicuity changes nothing but the tumour's cues
    fine = texture_field(rng, shape, spacing, (TEXTURE_CORRELATION_MM,) * 3)
    fibres = texture_field(rng, shape, spacing, (TEXTURE_CORRELATION_MM, TEXTURE_CORRELATION_MM,
                                                 MUSCLE_FIBRE_CORRELATION_MM))
    voxel_factor = texture_voxel_factor(spacing)
    amplitude = {name: voxel_factor * _uniform(rng, bounds) for name, bounds in TEXTURE_AMPLITUDE.items()}

    def textured(m0: float, relative_amplitude, field: np.ndarray = fine) -> np.ndarray:
        return (m0 * np.maximum(1.0 + relative_amplitude * field, 0.0)).astype(np.float32)  # M0 >= 0

    fgt_m0 = textured(FGT_M0, amplitude["fibroglandular"])
    compartments = {
        # name: (K_trans, v_e, v_p, T10 s, M0)
        "fat": (_uniform(rng, (0.005, 0.015)), 0.10, 0.005, _uniform(rng, (0.30, 0.40)),
                textured(1.0, amplitude["fat"])),
        "skin": (_uniform(rng, (0.01, 0.02)), 0.20, 0.005, _uniform(rng, (0.95, 1.05)),
                 textured(0.80, amplitude["skin"])),
        "muscle": (_uniform(rng, (0.06, 0.12)), _uniform(rng, (0.10, 0.15)), _uniform(rng, (0.02, 0.04)),
                   _uniform(rng, (0.85, 1.00)), textured(0.75, amplitude["muscle"], fibres)),
        "thorax": (0.0, 0.3, 0.0, 1.2, textured(0.12, amplitude["thorax"])),
        "vessel": (0.0, 0.3, 1.0 - hematocrit, _uniform(rng, (1.40, 1.55)), textured(0.90, amplitude["vessel"])),
        "benign_focus": focus_params + (t1_fgt, fgt_m0),
        "fibroglandular": (bpe_k, fgt_ve, fgt_vp, t1_fgt, fgt_m0),
    }
    # tumour (item 6): its native T1 and texture amplitude follow its kinetics, scaled by the conspicuity c; at
    # c = 0 both equal the FGT's exactly (the T1 bounds widen to include T10_FGT for that reason)
    c = float(pre_contrast_conspicuity)
    tumour_t1 = np.clip(t1_fgt - c * T1_PER_K_TRANS_S * (tumour_k - T1_REFERENCE_K_TRANS),
                        np.minimum(TUMOUR_T1_RANGE_S[0], t1_fgt), np.maximum(TUMOUR_T1_RANGE_S[1], t1_fgt))
    cellularity = np.clip((tumour_k - T1_REFERENCE_K_TRANS) / TUMOUR_TEXTURE_K_SCALE, -1.0, 1.0)
    tumour_amplitude = amplitude["fibroglandular"] * (1.0 + c * TUMOUR_TEXTURE_GAIN * cellularity)
    compartments["tumour"] = (tumour_k, tumour_ve, tumour_vp, tumour_t1, textured(FGT_M0, tumour_amplitude))

    # partial-volume composition: each compartment takes its occupancy of what the previous ones left
    depth, chest = anatomy.body_depth, anatomy.chest_offset
    remaining = _soft_inside(depth, anatomy.voxel_mm)
    occupancy = {
        "tumour": tumour,
        "vessel": vessels,
        "benign_focus": focus,
        "skin": _soft_inside(_uniform(rng, (1.5, 2.5)) - depth, anatomy.voxel_mm),
        "muscle": _soft_inside(chest, anatomy.voxel_mm) * _soft_inside(anatomy.muscle_thickness - chest,
                                                                        anatomy.voxel_mm),
        "thorax": _soft_inside(chest - anatomy.muscle_thickness, anatomy.voxel_mm),
        "fibroglandular": fgt,
        "fat": np.ones(shape, np.float32),
    }
    fractions = {}
    for name, occ in occupancy.items():
        fractions[name] = occ * remaining
        remaining = remaining - fractions[name]

    signals = np.zeros((len(times),) + shape, np.float32)
    for name, fraction in fractions.items():
        inside = fraction > 1e-4
        if not inside.any():
            continue
        n_inside = int(inside.sum())
        k_trans, v_e, v_p, t10, m0 = (np.asarray(p)[inside] if np.ndim(p) else np.full(n_inside, p)
                                      for p in compartments[name])
        concentration = np.zeros((len(times), n_inside))
        concentration[1:] = kinetics.extended_tofts(times[1:], k_trans, v_e, v_p)
        signal = kinetics.signal_from_concentration(concentration, 1.0 / np.asarray(t10), m0)
        signals[:, inside] += fraction[inside] * signal

    # acquisition: slight blur, coil bias shared by all phases, Rician noise
    bias = np.exp(_uniform(rng, (0.05, 0.15)) * smooth_random_field(rng, shape, spacing, 60.0))
    bias *= INTENSITY_SCALE
    images = [ndimage.gaussian_filter(s, (0.3, 0.5, 0.5), truncate=3.0) * bias for s in signals]
    pure_fgt = (fractions["fibroglandular"] > 0.95) & (label == 0)
    reference = float(images[0][pure_fgt].mean()) if pure_fgt.any() else float(np.median(images[0]))
    noise_sigma = 0.0
    if snr is not None:
        snr_value = _uniform(rng, snr) if np.ndim(snr) == 1 else float(snr)
        noise_sigma = reference / snr_value
        images = [np.hypot(im + noise_sigma * rng.standard_normal(shape, np.float32),
                           noise_sigma * rng.standard_normal(shape, np.float32)) for im in images]
    images = [im.astype(np.float32) for im in images]

    maps = _dominant_maps(fractions, compartments, shape)
    maps["subregion"] = np.where(label > 0, subregion, 0).astype(np.uint8)
    maps["breast"] = ((anatomy.body_depth > 0) & (anatomy.chest_offset < 0)).astype(np.uint8)
    maps["tumour_fraction"] = fractions["tumour"].astype(np.float32)
    maps["fgt_fraction"] = fractions["fibroglandular"].astype(np.float32)
    return BreastDCESimulation(images=images, label=label, spacing=spacing, times_min=times, maps=maps,
                               noise_sigma=noise_sigma)


def _dominant_maps(fractions: dict[str, np.ndarray], compartments: dict, shape) -> dict[str, np.ndarray]:
    names = list(fractions)
    stacked = np.stack([fractions[n] for n in names])
    air = stacked.sum(0) < 0.5
    dominant = np.argmax(stacked, axis=0)
    maps = {key: np.zeros(shape, np.float32) for key in ("k_trans", "v_e", "v_p", "t10", "m0")}
    tissue = np.zeros(shape, np.uint8)
    for i, name in enumerate(names):
        region = (dominant == i) & ~air
        tissue[region] = TISSUES[name]
        for key, value in zip(("k_trans", "v_e", "v_p", "t10", "m0"), compartments[name]):
            maps[key][region] = np.asarray(value)[region] if np.ndim(value) else value
    maps["tissue"] = tissue
    return maps


# options of make_case that choose what a case holds, not what is simulated (module docstring, item 7)
CASE_CONTENT_OPTIONS = ("parameter_maps_in_extras", "masks_in_extras", "subtraction", "subregions",
                        "distractor_masks")


def case_parameter_maps(rng: np.random.Generator, shape: Sequence[int] = DEFAULT_SHAPE,
                        **options) -> dict[str, np.ndarray]:
    """Per-voxel maps of the case that :func:`make_case` draws from the same ``rng`` state (see
    :class:`BreastDCESimulation` ``maps``), plus ``label``."""
    for name in CASE_CONTENT_OPTIONS:
        options.pop(name, None)
    simulation = simulate(rng, shape, **options)
    return {**simulation.maps, "label": simulation.label}


def subregion_label(label: np.ndarray, subregion: np.ndarray) -> np.ndarray:
    """The ``subregions=True`` label (module docstring, item 7): :data:`ENHANCING` on the rim, :data:`LOW_ENHANCING`
    on the rest of the tumour label (mixed zone and necrotic core), 0 outside it."""
    tumour = label > 0
    out = np.where(tumour, LOW_ENHANCING, 0).astype(np.uint8)
    out[tumour & (subregion == SUBREGIONS["rim"])] = ENHANCING
    return out


def distractor_mask(maps: dict[str, np.ndarray], label: np.ndarray) -> np.ndarray:
    """Enhancing tissue that is not tumour (module docstring, item 7), uint8: dominant compartment a vessel or a
    benign focus, or FGT with BPE K_trans >= :data:`DISTRACTOR_BPE_K_TRANS`, outside the tumour label."""
    tissue = maps["tissue"]
    enhancing = np.isin(tissue, (TISSUES["vessel"], TISSUES["benign_focus"])) | (
        (tissue == TISSUES["fibroglandular"]) & (maps["k_trans"] >= DISTRACTOR_BPE_K_TRANS))
    return (enhancing & (label == 0)).astype(np.uint8)


def make_case(rng: np.random.Generator, shape: Sequence[int] = DEFAULT_SHAPE,
              parameter_maps_in_extras: bool = False, masks_in_extras: bool = False, subtraction: bool = False,
              subregions: bool = False, distractor_masks: bool = False, **options) -> PhantomCase:
    """One ``breast_dce`` case: images [pre, post1, ...], tumour label, spacing (options: :func:`simulate`).

    Args:
        parameter_maps_in_extras: also return K_trans, v_e, v_p and the subregion map in ``extras`` (written to
            ``extrasTr/Ts``); off by default to keep datasets small.
        masks_in_extras: also return the breast mask (``breast``) and the tumour subregion map (``subregion``: 1 rim,
            2 mixed, 3 necrotic core) in ``extras``: the clustering ROI and the truth HCNet's TIC clusters are scored
            against.
        subtraction: append the channel ``SUB`` = post1 - pre (raw intensities, float32) to the images.
        subregions: label 1 = low-enhancing tumour (mixed zone, necrotic core), 2 = enhancing rim
            (:func:`subregion_label`) instead of the binary label.
        distractor_masks: also return the breast mask (``breast``) and the enhancing non-tumour tissue
            (``distractor``, :func:`distractor_mask`) in ``extras``.
    """
    from nnunet_ext.datasets_conversion._dce_common import subtraction_image

    simulation = simulate(rng, shape, **options)
    maps, images, label = simulation.maps, simulation.images, simulation.label
    if subtraction:
        images = images + [subtraction_image(images[0], images[1])]
    if distractor_masks:
        maps = {**maps, "distractor": distractor_mask(maps, label)}
    if subregions:
        label = subregion_label(label, maps["subregion"])
    # the extras are the union of what the options ask for (each map once)
    keys = (("k_trans", "v_e", "v_p", "subregion") if parameter_maps_in_extras else ()) + (
        ("breast", "subregion") if masks_in_extras else ()) + (("breast", "distractor") if distractor_masks else ())
    extras = {key: maps[key] for key in dict.fromkeys(keys)}
    return PhantomCase(images=images, label=label, spacing=simulation.spacing, extras=extras)


def contrast_to_noise_ratio(image: np.ndarray, lesion: np.ndarray, reference: np.ndarray,
                            noise_sigma: float | None = None) -> float:
    """``|mean(lesion) - mean(reference)| / sigma``; sigma is ``noise_sigma`` or else the reference's std."""
    difference = abs(float(image[lesion].mean()) - float(image[reference].mean()))
    sigma = float(noise_sigma) if noise_sigma else float(image[reference].std())
    return difference / max(sigma, 1e-12)


def lesion_reference_masks(simulation: BreastDCESimulation, shell_mm: tuple[float, float] = (3.0, 12.0)
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Lesion mask (the label) and its local reference: pure FGT (fraction >= 0.9, eroded by one voxel) in a shell.

    The shell (``shell_mm`` from the label surface) keeps the comparison local, as a reader compares a lesion with
    the tissue around it (the coil bias field varies across the breast).
    """
    lesion = simulation.label > 0
    distance = ndimage.distance_transform_edt(~lesion, sampling=simulation.spacing)
    shell = (distance > shell_mm[0]) & (distance <= shell_mm[1])
    # eroded, so that the blur does not mix brighter fat into the reference
    pure_fgt = ndimage.binary_erosion(simulation.maps["fgt_fraction"] >= 0.9)
    return lesion, pure_fgt & shell


# What ``nnunet-ext synth breast_dce --option KEY=VALUE`` accepts (defaults as in :func:`simulate`/:func:`make_case`).
OPTIONS = (
    Option("shape", Shape(3, 8), DEFAULT_SHAPE, "image size in voxels; the field of view stays (spacing follows)"),
    Option("n_post", Integer(1, 8), 2, "post-contrast phases: channels pre, post1..postN (DKM uses 2; HCNet's "
                                       "time-intensity curves 4 or more)"),
    Option("post_times_min", Numbers(1, Number(0.0, 60.0, exclusive_minimum=True), increasing=True, max_length=8),
           None, "acquisition times of the n_post post phases in minutes on the AIF time axis; null: evenly spaced "
           "in 1.5-6.5 (1.5 and 6.5 for two)",
           optional=True),
    Option("pre_contrast_conspicuity", Number(0.0, 5.0), DEFAULT_PRE_CONTRAST_CONSPICUITY,
           "strength of the tumour's pre-contrast cues (native T1, texture amplitude); 0 = none, 1 = default"),
    Option("snr", RangePair(Number(0.0, exclusive_minimum=True), single=True), (20.0, 40.0),
           "pure-FGT pre-contrast signal / Rician noise sigma, a range is drawn per case; null: no noise",
           optional=True),
    Option("lesion_diameter_mm", RangePair(Number(0.0, 80.0, exclusive_minimum=True)), (8.0, 30.0),
           "range of the main lesion's diameter (log-uniform draw)"),
    Option("second_lesion_probability", Number(0.0, 1.0), 0.2, "chance of a second, smaller lesion"),
    Option("max_benign_foci", Integer(0, 20), 3, "up to this many small enhancing benign foci (not labelled)"),
    Option("n_vessels", RangePair(Integer(0, 20)), (2, 5), "range of the number of vessels"),
    Option("bilateral", Flag(), False, "two breasts on a field of view twice as wide in x"),
    Option("field_of_view_mm", Numbers(3, Number(0.0, 1000.0, exclusive_minimum=True), axes="z y x"), None,
           "field of view; null: 96 x 134.4 x 134.4 (x doubled when bilateral)", optional=True),
    Option("parameter_maps_in_extras", Flag(), False, "also write K_trans, v_e, v_p and subregion maps to extras"),
    Option("masks_in_extras", Flag(), False, "also write the breast mask and the tumour subregion map to extras"),
    Option("subtraction", Flag(), False, "append a channel SUB = post1 - pre computed from the raw intensities"),
    Option("subregions", Flag(), False, "label 1 = low-enhancing tumour (mixed zone, necrotic core), 2 = enhancing "
                                        "rim; dataset.json labels are nnU-Net regions lesion (1, 2), enhancing (2)"),
    Option("distractor_masks", Flag(), False, "also write the breast mask and the enhancing non-tumour tissue "
                                              "(vessels, benign foci, moderate/marked BPE) to extras"),
)


def _check_relations(options: dict) -> None:
    times = options.get("post_times_min")
    if times is not None and len(times) != options["n_post"]:
        raise UserInputError(f"breast_dce: option post_times_min has {len(times)} times but n_post is "
                             f"{options['n_post']}: give one time per post-contrast phase")


def _channel_names(options: dict) -> dict[str, str]:
    from nnunet_ext.datasets_conversion._dce_common import dce_channel_names

    return dce_channel_names(int(options["n_post"]), bool(options["subtraction"]))


def _labels(options: dict) -> dict[str, int | list[int]]:
    return SUBREGION_LABELS if options["subregions"] else LABELS


def _regions_class_order(options: dict) -> list[int] | None:
    return SUBREGION_CLASS_ORDER if options["subregions"] else None


register(PhantomKind(
    name="breast_dce",
    dataset_name="BreastDCE",
    channel_names={"0": "pre", "1": "post1", "2": "post2"},
    labels=LABELS,
    make_case=make_case,
    description="breast DCE-MRI: pre + 2 post-contrast phases (extended Tofts, Parker AIF, SPGR), tumour label",
    option_specs=OPTIONS,
    check_relations=_check_relations,
    labels_for=_labels,
    channel_names_for=_channel_names,
    regions_class_order_for=_regions_class_order,
))
