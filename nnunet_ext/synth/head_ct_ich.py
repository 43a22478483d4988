"""``head_ct_ich``: non-contrast head CT in Hounsfield units with the five BHSD hemorrhage classes.

Physical model (facts from /work/shared/PHANTOMS.md, "Head CT with hemorrhage"; BHSD paper Sect. 2):

* **Geometry.** A thick-slice axial slab through an ellipsoidal head, in mm about the grid centre. Slices are
  ``slice_mm`` = 5 mm thick; the in-plane pixel is ``fov_mm / shape`` (224 mm field of view, i.e. 3.5 mm for the
  default 64 x 64, 0.44 mm for 512 x 512), so the head (about 180 mm wide, 200 mm long) has the same size in mm at
  every grid size. Per scan: head scale 0.93-1.05, in-plane rotation +-8 deg, slab centre 0-20 mm above the
  head centre, ventricle size (atrophy) factor 0.8-1.5.
* **Layers from the inner table of the skull** (``d`` = radial depth below the inner table, see
  ``_shapes.radial_depth``): scalp 4-6 mm (soft tissue 45 HU with a fat layer -90 HU), skull 6-8 mm (cortical
  tables 1300-1700 HU, diploe in the middle up to 35 % lower; after partial volume at 3.5 mm pixels bone voxels
  are about 700-1300 HU, all > 400 HU), a CSF film of 1.5-4 mm
  (CSF 0-15 HU), then brain. Air is -1000 HU.
* **Brain.** Sulci are the zero set of a smooth random field (width 1-2 mm, reaching 12-22 mm deep) plus the
  interhemispheric fissure; grey matter (35-45 HU) is every parenchyma voxel within 2.5-3.5 mm of CSF, the rest is
  white matter (20-30 HU). Basal ganglia and thalami are grey-matter ellipsoids; the lateral ventricles and the
  third ventricle are CSF ellipsoids.
* **Hemorrhages** (acute blood 50-90 HU, per-bleed mean with +-6 HU smooth heterogeneity and a clot core up to
  100 HU; BHSD label ids):

  1. EDH: biconvex lens between inner table and brain, thickness ``T (1 - (s / L)^2)`` with ``s`` the distance
     along the skull from its centre, L 18-35 mm, T 8-18 mm (short and thick: bounded by sutures).
  2. IPH: irregular ellipsoid (radius 6-20 mm, boundary perturbed by a smooth field) in the basal ganglia or a
     lobe, with an unlabelled perihematomal oedema rim (10-25 HU, 2-6 mm).
  3. IVH: blood in the ventricles below a fluid level: the patient lies supine, so blood layers posteriorly
     (towards +y); 20-90 % of the visible ventricle volume, one or both sides.
  4. SAH: blood replacing the CSF of sulci, fissure and surface CSF film within 25-60 mm of a point on the brain.
  5. SDH: crescent along the convexity, thickness ``T sqrt(1 - (s / L)^2)``, L 50-90 mm, T 4-12 mm (long and thin,
     crossing sutures).

  Mass effect is not modelled: a bleed replaces the tissue it covers. A scan has no bleed with probability
  ``negative_fraction`` (label all 0), otherwise 1-3 distinct types drawn with BHSD-like unequal frequencies
  (EDH rare): EDH 0.06, IPH 0.30, IVH 0.16, SAH 0.24, SDH 0.24.
* **Acquisition.** Tissue is rendered on a grid ``supersample`` times finer per axis and block-averaged (partial
  volume of thick slices and thin sulci); labels take the most frequent class of each block. Then a Gaussian
  in-plane point-spread function (sigma 0.5 px), quantum noise N(0, 5-10 HU), rounding to integer HU and clipping to
  [-1024, 3071].

Labels: 0 background, 1 EDH, 2 IPH, 3 IVH, 4 SAH, 5 SDH; with ``merge_classes``, 0 background and 1 hemorrhage (the
same scans). Channel "CT" (nnU-Net's CTNormalization; BHSD windows [-40, 120] HU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from nnunet_ext.synth._shapes import (block_mean, block_mode, ellipsoid_radius, grid_mm, level_set_distance,
                                      radial_depth, rotate_in_plane, smooth_random_field)
from nnunet_ext.synth.base import PhantomCase, PhantomKind, register
from nnunet_ext.synth.options import Flag, Integer, Number, Option, Shape

KIND = "head_ct_ich"
DEFAULT_SHAPE = (16, 64, 64)
LABELS = {"background": 0, "EDH": 1, "IPH": 2, "IVH": 3, "SAH": 4, "SDH": 5}
EDH, IPH, IVH, SAH, SDH = 1, 2, 3, 4, 5
BLEED_FREQUENCY = {EDH: 0.06, IPH: 0.30, IVH: 0.16, SAH: 0.24, SDH: 0.24}

# tissue ids of the (unexported) tissue map
AIR, SCALP, FAT, BONE, CSF, GREY, WHITE, BLOOD, OEDEMA = range(9)
TISSUE_NAMES = ("air", "scalp", "fat", "bone", "csf", "grey", "white", "blood", "oedema")


@dataclass
class HeadCT:
    """A rendered scan: HU image, BHSD label, majority tissue map and the bleed types drawn."""

    hu: np.ndarray
    label: np.ndarray
    tissue: np.ndarray
    spacing: tuple[float, float, float]
    bleeds: list[int] = field(default_factory=list)


def _surface_point(direction: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Point where the ray from the origin along ``direction`` meets the ellipsoid with ``radii``."""
    return direction / math.sqrt(float(np.sum((direction / radii) ** 2)))


def _along_skull_distance(coords: np.ndarray, inner_radii: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Distance (mm) between ``centre`` (on the inner table) and each voxel projected radially onto the inner table."""
    rho = np.maximum(ellipsoid_radius(coords, (0, 0, 0), inner_radii), 1e-6)
    return np.sqrt(sum((coords[i] / rho - centre[i]) ** 2 for i in range(3)))


def _random_convexity_point(rng, inner_radii: np.ndarray, z_range: tuple[float, float]) -> np.ndarray:
    angle = rng.uniform(0, 2 * math.pi)
    z = rng.uniform(*z_range)
    direction = np.array([z, inner_radii[1] * math.sin(angle), inner_radii[2] * math.cos(angle)])
    return _surface_point(direction, inner_radii)


def render_head_ct(rng: np.random.Generator, shape=DEFAULT_SHAPE, negative_fraction: float = 0.3,
                   fov_mm: float = 224.0, slice_mm: float = 5.0, noise_hu: float | None = None,
                   supersample: int = 2) -> HeadCT:
    """Render one head CT; see the module docstring for the model. ``noise_hu=None`` draws 5-10 HU per scan.

    Option values are checked by :data:`OPTIONS` (``nnunet-ext synth`` validates before rendering).
    """
    shape = tuple(int(n) for n in shape)
    factor = int(supersample)
    # scalars come from ``rng`` and fields from ``texture_rng``, so anatomy and bleed choices of a seed do not
    # change with the grid size
    texture_rng = np.random.default_rng(rng.integers(0, 2 ** 62, size=2))
    pixel_mm = fov_mm / max(shape[1], shape[2])
    spacing = (float(slice_mm), pixel_mm, pixel_mm)
    fine_shape = tuple(n * factor for n in shape)
    fine_spacing = tuple(s / factor for s in spacing)

    # --- per-scan anatomy parameters
    scale = rng.uniform(0.93, 1.05)
    inner = np.array([80.0, 88.0, 78.0]) * scale        # inner table semi-axes (z, y, x), mm
    skull_mm, scalp_mm, csf_film_mm = rng.uniform(6, 8), rng.uniform(4, 6), rng.uniform(1.5, 4.0)
    atrophy = rng.uniform(0.8, 1.5)
    slab_offset = rng.uniform(0.0, 20.0)
    hu_csf, hu_grey, hu_white = rng.uniform(3, 10), rng.uniform(37, 43), rng.uniform(22, 28)
    hu_table = rng.uniform(1300, 1700)
    rotation = rng.uniform(-1, 1) * math.radians(8)
    sulcus_halfwidth, cortex_mm = rng.uniform(0.75, 1.25), rng.uniform(2.5, 3.5)
    bleeds: list[int] = []
    if rng.random() >= negative_fraction:
        n_types = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        weights = np.array(list(BLEED_FREQUENCY.values()))
        chosen = rng.choice(list(BLEED_FREQUENCY), size=n_types, replace=False, p=weights / weights.sum())
        bleeds = sorted(int(k) for k in chosen)

    coords = grid_mm(fine_shape, fine_spacing)
    coords[0] += slab_offset
    coords = rotate_in_plane(coords, rotation)
    z, y, x = coords
    depth = radial_depth(coords, (0, 0, 0), inner)      # > 0 inside the inner table

    tissue = np.full(fine_shape, AIR, dtype=np.uint8)
    tissue[(depth <= 0) & (depth > -(skull_mm + scalp_mm))] = SCALP
    fat_layer = (depth <= -(skull_mm + scalp_mm / 3)) & (depth > -(skull_mm + 2 * scalp_mm / 3))
    tissue[fat_layer] = FAT
    tissue[(depth <= 0) & (depth > -skull_mm)] = BONE
    inside = depth > 0
    tissue[inside] = WHITE

    # sulci: zero set of a smooth field, only near the surface; grey matter = parenchyma close to any CSF
    brain_depth = depth - csf_film_mm
    sulcus_distance = level_set_distance(smooth_random_field(texture_rng, fine_shape, [9.0 / s for s in fine_spacing]),
                                         fine_spacing)
    sulcus_reach = 17.0 + 5.0 * smooth_random_field(texture_rng, fine_shape, [25.0 / s for s in fine_spacing])
    sulcal_csf = inside & (brain_depth < sulcus_reach) & (sulcus_distance < sulcus_halfwidth)
    fissure = inside & (np.abs(x) < 1.2) & (brain_depth < 45.0) & (np.abs(y + 5) > 25.0)
    csf_spaces = (inside & (brain_depth <= 0)) | sulcal_csf | fissure
    to_csf = np.minimum(brain_depth, np.where(brain_depth < sulcus_reach, sulcus_distance - sulcus_halfwidth,
                                              np.inf))
    to_csf = np.minimum(to_csf, np.where(brain_depth < 45.0, np.abs(x) - 1.2, np.inf))
    tissue[inside & (to_csf < cortex_mm)] = GREY

    # deep grey nuclei, then ventricles (both mirrored left/right)
    for side in (-1, 1):
        for centre, radii in (((-2.0, 12.0, 11.0 * side), (12.0, 16.0, 9.0)),      # thalamus
                              ((2.0, -12.0, 24.0 * side), (12.0, 17.0, 8.0))):     # lentiform / caudate
            tissue[ellipsoid_radius(coords, centre, np.array(radii) * scale) < 1] = GREY
    ventricle_shape = smooth_random_field(texture_rng, fine_shape, [8.0 / s for s in fine_spacing])
    ventricles = np.zeros(fine_shape, dtype=bool)
    for side in (-1, 1):
        # frontal horns close to the midline, bodies diverging posteriorly (+y)
        centre = np.array([10.0, -4.0, (5.0 + 4.0 * atrophy) * side]).reshape(3, 1, 1, 1)
        local = rotate_in_plane(coords - centre, -side * math.radians(12))
        radii = np.array([13.0 * atrophy ** 0.5, 34.0, 6.0 * atrophy]) * scale
        ventricles |= ellipsoid_radius(local, (0, 0, 0), radii) + 0.08 * ventricle_shape < 1
    ventricles |= ellipsoid_radius(coords, (-6.0, 6.0, 0.0), np.array([11.0, 14.0, 1.5 + atrophy]) * scale) < 1
    ventricles &= brain_depth > 10.0
    tissue[ventricles] = CSF
    tissue[csf_spaces] = CSF

    # --- hemorrhages
    label = np.zeros(fine_shape, dtype=np.uint8)
    bleed_hu = np.zeros(fine_shape, dtype=np.float32)
    oedema_hu = rng.uniform(12, 22)
    z_visible = (float(z.min()) + 0.2 * float(np.ptp(z)), float(z.max()) - 0.2 * float(np.ptp(z)))
    heterogeneity = smooth_random_field(texture_rng, fine_shape, [4.0 / s for s in fine_spacing])
    parenchyma = (tissue == GREY) | (tissue == WHITE)

    def paint(mask: np.ndarray, class_id: int, mean_hu: float) -> None:
        label[mask] = class_id
        tissue[mask] = BLOOD
        bleed_hu[mask] = mean_hu + 6.0 * heterogeneity[mask]

    # painting order: CSF-space and intra-axial bleeds first, extra-axial collections (SDH, EDH) over them
    if SAH in bleeds:
        centre = _random_convexity_point(rng, inner, z_visible) * rng.uniform(0.6, 0.95)
        near = ellipsoid_radius(coords, centre, [rng.uniform(25, 60)] * 3) < 1
        paint(near & (tissue == CSF) & ~ventricles, SAH, rng.uniform(55, 80))
    if IVH in bleeds:
        in_ventricle = ventricles & (tissue == CSF)
        if rng.random() < 0.5:  # one side only
            in_ventricle &= (x > 0) if rng.random() < 0.5 else (x < 0)
        filled_share, mean_hu = rng.uniform(0.2, 0.9), rng.uniform(50, 75)
        if in_ventricle.any():
            level = np.quantile(y[in_ventricle], 1.0 - filled_share)
            paint(in_ventricle & (y >= level), IVH, mean_hu)
    if IPH in bleeds:
        radius = rng.uniform(6, 20) * scale
        deep = rng.random() < 0.6
        for _ in range(50):  # rejection-sample a centre inside the visible parenchyma
            if deep:
                centre = np.array([rng.uniform(*z_visible), rng.uniform(-20, 20), rng.uniform(15, 32) *
                                   rng.choice([-1, 1])])
            else:
                centre = _random_convexity_point(rng, inner, z_visible) * rng.uniform(0.45, 0.75)
            if radial_depth(centre.reshape(3, 1), (0, 0, 0), inner)[0] > radius + csf_film_mm + 3:
                break
        radii = radius * rng.uniform(0.75, 1.25, size=3)
        radii[0] = max(radii[0], slice_mm)
        irregular = ellipsoid_radius(coords, centre, radii) + 0.15 * smooth_random_field(
            texture_rng, fine_shape, [radius / 2 / s for s in fine_spacing])
        core = irregular < 1
        rim = (irregular >= 1) & (irregular < 1 + rng.uniform(2, 6) / radius) & parenchyma
        tissue[rim] = OEDEMA
        mean_hu = rng.uniform(60, 85)
        paint(core & (parenchyma | (tissue == CSF)), IPH, mean_hu)
        clot = core & (irregular < 0.5)
        bleed_hu[clot] += rng.uniform(0, 10) * (1 - 2 * irregular[clot])
    for class_id, length, thickness, profile in ((SDH, (50, 90), (4, 12), "crescent"),
                                                 (EDH, (18, 35), (8, 18), "lens")):
        if class_id not in bleeds:
            continue
        centre = _random_convexity_point(rng, inner, z_visible)
        along = _along_skull_distance(coords, inner, centre) / rng.uniform(*length)
        base = np.clip(1 - along ** 2, 0, None)
        extent = rng.uniform(*thickness) * (np.sqrt(base) if profile == "crescent" else base)
        paint(inside & (depth < extent), class_id, rng.uniform(55, 85))
    bleed_hu = np.clip(bleed_hu, 45, 100)

    # --- HU image: tissue values, partial volume (block mean), PSF, quantum noise
    hu_of = np.array([-1000, 45, -90, 0, hu_csf, hu_grey, hu_white, 0, oedema_hu], dtype=np.float32)
    hu = hu_of[tissue]
    diploe = np.clip(1 - np.abs(depth + skull_mm / 2) / (skull_mm / 3), 0, 1)  # 1 mid-skull, 0 at the tables
    hu = np.where(tissue == BONE, hu_table * (1 - 0.35 * diploe), hu)
    hu = np.where(tissue == BLOOD, bleed_hu, hu)
    brain_texture = smooth_random_field(texture_rng, fine_shape, [3.0 / s for s in fine_spacing])
    hu = hu + np.where((tissue == GREY) | (tissue == WHITE), 1.5 * brain_texture, 0.0)

    hu = block_mean(hu, factor)
    hu = ndimage.gaussian_filter(hu, (0.0, 0.5, 0.5))
    sigma_noise = rng.uniform(5, 10) if noise_hu is None else float(noise_hu)
    hu = np.clip(np.round(hu + texture_rng.normal(0.0, sigma_noise, size=hu.shape)), -1024, 3071).astype(np.float32)
    return HeadCT(hu=hu, label=block_mode(label, factor, len(LABELS)),
                  tissue=block_mode(tissue, factor, len(TISSUE_NAMES)), spacing=spacing, bleeds=bleeds)


MERGED_LABELS = {"background": 0, "hemorrhage": 1}


def make_case(rng: np.random.Generator, shape=DEFAULT_SHAPE, merge_classes: bool = False, **opts) -> PhantomCase:
    """One nnU-Net case: channel 0 = HU image, label = BHSD classes (options as :func:`render_head_ct`), or one
    hemorrhage class with ``merge_classes`` (the binary task of BHSD Table 4; the scans are the same)."""
    scan = render_head_ct(rng, shape, **opts)
    label = (scan.label > 0).astype(scan.label.dtype) if merge_classes else scan.label
    return PhantomCase(images=[scan.hu], label=label, spacing=scan.spacing)


# What ``nnunet-ext synth head_ct_ich --option KEY=VALUE`` accepts (defaults as in :func:`render_head_ct`).
OPTIONS = (
    Option("shape", Shape(3, 4), DEFAULT_SHAPE, "slices x rows x columns; the in-plane field of view stays"),
    Option("negative_fraction", Number(0.0, 1.0), 0.3, "share of scans without hemorrhage"),
    Option("fov_mm", Number(0.0, 1000.0, exclusive_minimum=True), 224.0, "in-plane field of view (mm)"),
    Option("slice_mm", Number(0.0, 50.0, exclusive_minimum=True), 5.0, "slice thickness and spacing (mm)"),
    Option("noise_hu", Number(0.0, 500.0), None, "image noise sigma in HU; null: 5-10 HU drawn per scan",
           optional=True),
    Option("supersample", Integer(1, 4), 2, "render on a grid this many times finer, then average (partial volume)"),
    Option("merge_classes", Flag(), False, "one label 'hemorrhage' for every bleed type (BHSD Table 4's binary task)"),
)

register(PhantomKind(
    name=KIND, dataset_name="HeadCTICH", channel_names={"0": "CT"}, labels=LABELS, make_case=make_case,
    description="non-contrast head CT (HU) with EDH/IPH/IVH/SAH/SDH hemorrhages, ~30% negative scans",
    option_specs=OPTIONS, labels_for=lambda options: MERGED_LABELS if options["merge_classes"] else LABELS))
