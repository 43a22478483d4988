"""``brain_pairs``: pairs of skull-stripped 3D T1-weighted brain images related by a known diffeomorphism.

Physical model (facts from /work/shared/PHANTOMS.md, "Brain pairs for registration"):

* **Anatomy** is a set of smooth feature maps on the grid (in mm, about the grid centre; the brain ellipsoid
  spans 84 % of the grid, so the anatomy scales with ``shape`` and the default 32 x 40 x 32 mm grid holds a
  miniature brain of about 27 x 34 x 27 mm): the depth below a brain surface perturbed by a smooth field, the
  distance to the zero set of a smooth random field (sulci: half width 0.4-0.7 mm, field sigma 0.22 of the mean
  brain radius R clipped to 3-6 mm, reaching 0.3 R +-30 % deep), and normalised radii of left/right ellipsoids
  (lateral ventricles, caudate, thalamus, putamen) placed in brain-normalised coordinates. A voxel's label is a
  fixed function of these features: CSF in a 0.8-1.5 mm layer outside the brain surface and in the sulci, cortex
  within 1.5-2.5 mm of CSF, white matter elsewhere in the brain, then the deep structures and ventricles.
* **T1 contrast** (arbitrary units, skull-stripped background 0): white matter 0.80, putamen 0.60, thalamus 0.64,
  caudate 0.56, cortex 0.45, CSF 0.12 (each +-5 % per case), a +-3 % smooth texture, a 0.5 voxel Gaussian
  partial-volume blur, a smooth multiplicative bias field ``exp(b)`` with ``b`` of standard deviation 0.05-0.12
  drawn separately for each image, and Rician noise (sigma 0.01-0.02).
* **Pair.** The moving image is the same subject seen through ``phi = exp(v)``: a stationary velocity field
  ``v`` (Gaussian-smoothed noise, sigma ``smoothness_mm`` = 6 mm, scaled to a largest length of
  ``displacement_mm`` = 3 mm) integrated by scaling and squaring (``_shapes.integrate_velocity``). The moving
  image and label are rendered by evaluating the *feature maps* at ``phi(x)`` (not by resampling the fixed
  label), so moving = fixed o phi up to sub-voxel classification, and the image pair carries no interpolation
  fingerprint.

Conventions of the written case:

* channel 0 = fixed image, channel 1 = moving image, label = fixed label map;
* ``extras["moving_label"]``: label map of the moving image (z, y, x);
* ``extras["displacement"]``: ``u`` with ``moving(x) = fixed(x + u(x))``, defined on the moving grid, so the
  pull-back warp of the fixed image or label with ``u`` reproduces the moving one; shape (z, y, x, 3), in
  VOXELS, components ordered (dz, dy, dx); multiply by ``spacing`` for mm;
* ``extras["inverse_displacement"]``: the same for ``exp(-v)``: ``fixed(x) ~ moving(x + w(x))``, i.e. the field
  a registration network warping the moving image onto the fixed one should predict.

Labels are consecutive (nnU-Net requires 0..K); FreeSurfer aseg ids (left, right) of each label are in
:data:`FREESURFER_IDS`:

====  ======================  ================
 id   name                    FreeSurfer ids
====  ======================  ================
 0    background              0
 1    cerebral_white_matter   2, 41
 2    cerebral_cortex         3, 42
 3    lateral_ventricle       4, 43
 4    thalamus                10, 49
 5    caudate                 11, 50
 6    putamen                 12, 51
 7    csf                     24
====  ======================  ================
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nnunet_ext.synth._shapes import (ellipsoid_radius, grid_mm, integrate_velocity, level_set_distance,
                                      radial_depth, random_velocity_field, sample, smooth_random_field)
from nnunet_ext.synth.base import PhantomCase, PhantomKind, register
from nnunet_ext.synth.options import Choice, Number, Option, Shape

KIND = "brain_pairs"
DEFAULT_SHAPE = (32, 40, 32)
LABELS = {"background": 0, "cerebral_white_matter": 1, "cerebral_cortex": 2, "lateral_ventricle": 3,
          "thalamus": 4, "caudate": 5, "putamen": 6, "csf": 7}
PAIR_CHANNELS = {"0": "fixed", "1": "moving"}
SUBJECT_CHANNELS = {"0": "T1"}  # layout=subjects
FREESURFER_IDS = {0: (0,), 1: (2, 41), 2: (3, 42), 3: (4, 43), 4: (10, 49), 5: (11, 50), 6: (12, 51), 7: (24,)}
WHITE, CORTEX, VENTRICLE, THALAMUS, CAUDATE, PUTAMEN, CSF = 1, 2, 3, 4, 5, 6, 7
T1_INTENSITY = np.array([0.0, 0.80, 0.45, 0.12, 0.64, 0.56, 0.60, 0.12])
BRAIN_FILL = 0.84  # brain semi-axes as a share of the grid half-extent

# deep structures in brain-normalised coordinates (z up, y anterior -> posterior, x right -> left), one per side:
# label, centre, semi-axes
DEEP_STRUCTURES = (
    (THALAMUS, (-0.08, 0.10, 0.15), (0.18, 0.20, 0.13)),
    (PUTAMEN, (-0.02, -0.10, 0.40), (0.18, 0.22, 0.10)),
    (CAUDATE, (0.16, -0.22, 0.22), (0.15, 0.17, 0.10)),
    (VENTRICLE, (0.18, -0.02, 0.10), (0.15, 0.45, 0.09)),
)


@dataclass
class BrainPair:
    fixed: np.ndarray
    moving: np.ndarray
    fixed_label: np.ndarray
    moving_label: np.ndarray
    displacement: np.ndarray          # (3, z, y, x) voxels: moving(x) = fixed(x + u(x))
    inverse_displacement: np.ndarray  # (3, z, y, x) voxels: fixed(x) ~ moving(x + w(x))
    spacing: tuple[float, float, float]


def _anatomy_features(rng: np.random.Generator, texture_rng: np.random.Generator, shape, spacing) -> dict:
    """Smooth per-subject feature maps on the grid; the label is a pointwise function of them."""
    coords = grid_mm(shape, spacing)
    half_extent = np.array([(n - 1) / 2 * s for n, s in zip(shape, spacing)])
    brain_radii = BRAIN_FILL * half_extent * rng.uniform(0.94, 1.0, size=3)
    sigma = lambda mm: [mm / s for s in spacing]  # noqa: E731 - mm -> voxels
    # sulcal pattern and depth scale with the brain (a real brain, mean radius ~65 mm, has sulci ~20 mm deep)
    mean_radius = float(np.mean(brain_radii))
    surface_bumps = 0.03 * mean_radius * smooth_random_field(texture_rng, shape, sigma(0.3 * mean_radius))
    sulcus_field = smooth_random_field(texture_rng, shape, sigma(float(np.clip(0.22 * mean_radius, 3.0, 6.0))))
    features = {
        "depth": radial_depth(coords, (0, 0, 0), brain_radii) + surface_bumps,
        "sulcus": level_set_distance(sulcus_field, spacing),
        "sulcus_reach": 0.3 * mean_radius * (1 + 0.3 * smooth_random_field(texture_rng, shape,
                                                                             sigma(0.5 * mean_radius))),
        "texture": smooth_random_field(texture_rng, shape, sigma(2.0)),
    }
    for label, centre, radii in DEEP_STRUCTURES:
        jitter = rng.uniform(0.9, 1.1, size=3) if label != VENTRICLE else rng.uniform(0.8, 1.3, size=3)
        for side in (-1, 1):
            c = np.array(centre) * np.array([1, 1, side]) * brain_radii + rng.normal(0, 0.02, 3) * brain_radii
            features[f"rho_{label}_{side}"] = ellipsoid_radius(coords, c, np.array(radii) * jitter * brain_radii)
    return features


def _labels_from_features(features: dict, sulcus_halfwidth: float, cortex_mm: float, csf_mm: float) -> np.ndarray:
    depth = features["depth"]
    sulcus = np.where(depth < features["sulcus_reach"], features["sulcus"], np.inf)
    label = np.zeros(depth.shape, dtype=np.uint8)
    label[depth > -csf_mm] = CSF
    brain = (depth > 0) & (sulcus >= sulcus_halfwidth)
    label[brain] = WHITE
    to_csf = np.minimum(depth, sulcus - sulcus_halfwidth)
    label[brain & (to_csf < cortex_mm)] = CORTEX
    for structure, _, _ in DEEP_STRUCTURES:
        for side in (-1, 1):
            label[(features[f"rho_{structure}_{side}"] < 1) & (depth > cortex_mm)] = structure
    return label


def _t1_image(rng: np.random.Generator, label: np.ndarray, texture: np.ndarray, intensity: np.ndarray,
              noise_sigma: float) -> np.ndarray:
    """T1 image of one label map: tissue intensities x texture, partial-volume blur, bias field, Rician noise."""
    image = intensity[label] * (1 + 0.03 * texture)
    image = ndimage.gaussian_filter(image, 0.5)
    bias = rng.uniform(0.05, 0.12) * smooth_random_field(rng, label.shape, [0.3 * n for n in label.shape])
    image = image * np.exp(bias)
    real = image + noise_sigma * rng.standard_normal(label.shape)
    imaginary = noise_sigma * rng.standard_normal(label.shape)
    return np.sqrt(real ** 2 + imaginary ** 2).astype(np.float32)


def render_brain_pair(rng: np.random.Generator, shape=DEFAULT_SHAPE, spacing_mm: float = 1.0,
                      displacement_mm: float = 3.0, smoothness_mm: float = 6.0) -> BrainPair:
    """Render one fixed/moving pair; see the module docstring for the model. Option values are checked by
    :data:`OPTIONS` (``nnunet-ext synth`` validates before rendering)."""
    shape = tuple(int(n) for n in shape)
    spacing = (float(spacing_mm),) * 3
    texture_rng = np.random.default_rng(rng.integers(0, 2 ** 62, size=2))
    sulcus_halfwidth, cortex_mm, csf_mm = rng.uniform(0.4, 0.7), rng.uniform(1.5, 2.5), rng.uniform(0.8, 1.5)
    intensity = T1_INTENSITY * rng.uniform(0.95, 1.05, size=T1_INTENSITY.size)
    noise_sigma = rng.uniform(0.01, 0.02)
    features = _anatomy_features(rng, texture_rng, shape, spacing)

    velocity = random_velocity_field(texture_rng, shape, spacing, displacement_mm, smoothness_mm)
    displacement = integrate_velocity(velocity)
    inverse = integrate_velocity(-velocity)
    warped_positions = np.indices(shape, dtype=float) + displacement
    moving_features = {key: sample(value, warped_positions) for key, value in features.items()}

    fixed_label = _labels_from_features(features, sulcus_halfwidth, cortex_mm, csf_mm)
    moving_label = _labels_from_features(moving_features, sulcus_halfwidth, cortex_mm, csf_mm)
    fixed = _t1_image(texture_rng, fixed_label, features["texture"], intensity, noise_sigma)
    moving = _t1_image(texture_rng, moving_label, moving_features["texture"], intensity, noise_sigma)
    return BrainPair(fixed=fixed, moving=moving, fixed_label=fixed_label, moving_label=moving_label,
                     displacement=displacement, inverse_displacement=inverse, spacing=spacing)


def make_case(rng: np.random.Generator, shape=DEFAULT_SHAPE, layout: str = "pairs", **opts) -> PhantomCase:
    """One nnU-Net case: channels (fixed, moving), label = fixed labels, extras as in the module docstring; with
    ``layout="subjects"`` only the fixed image and its labels (one subject per case: a segmentation dataset whose
    cases a registration trainer pairs, e.g. ``DCARegSegTrainer``)."""
    pair = render_brain_pair(rng, shape, **opts)
    if layout == "subjects":
        return PhantomCase(images=[pair.fixed], label=pair.fixed_label, spacing=pair.spacing)
    channels_last = lambda field: np.ascontiguousarray(np.moveaxis(field, 0, -1).astype(np.float32))  # noqa: E731
    return PhantomCase(images=[pair.fixed, pair.moving], label=pair.fixed_label, spacing=pair.spacing,
                       extras={"moving_label": pair.moving_label,
                               "displacement": channels_last(pair.displacement),
                               "inverse_displacement": channels_last(pair.inverse_displacement)})


# What ``nnunet-ext synth brain_pairs --option KEY=VALUE`` accepts (defaults as in :func:`render_brain_pair`).
OPTIONS = (
    Option("shape", Shape(3, 12), DEFAULT_SHAPE, "grid size in voxels; the brain fills 84 % of it"),
    Option("spacing_mm", Number(0.0, 10.0, exclusive_minimum=True), 1.0, "isotropic voxel size (mm)"),
    Option("displacement_mm", Number(0.0, 20.0), 3.0, "largest length of the velocity field (0: identical pair)"),
    Option("smoothness_mm", Number(0.0, 50.0, exclusive_minimum=True), 6.0,
           "Gaussian sigma smoothing the velocity field"),
    Option("layout", Choice(("pairs", "subjects")), "pairs",
           "pairs: channels (fixed, moving) per case; subjects: one T1 channel and its labels per case"),
)

register(PhantomKind(
    name=KIND, dataset_name="BrainPairs", channel_names=PAIR_CHANNELS, labels=LABELS, make_case=make_case,
    channel_names_for=lambda options: SUBJECT_CHANNELS if options["layout"] == "subjects" else PAIR_CHANNELS,
    description="T1 brain pairs (fixed, moving) related by a known diffeomorphic deformation, 7 structures",
    option_specs=OPTIONS))
