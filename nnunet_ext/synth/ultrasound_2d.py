"""``ultrasound_2d``: 2D B-mode sector images of a fetal head (HC18-like) or an apical cardiac view (CAMUS-like).

Physical model (facts from /work/shared/PHANTOMS.md, "Ultrasound"), simulated line by line in beam coordinates
(depth ``r``, steering angle ``theta``) and then scan-converted to the Cartesian image:

1. **Scene.** Every point has a tissue type with a diffuse backscatter amplitude, an attenuation coefficient
   (dB/cm/MHz: fluid 0.002, blood 0.18, soft tissue 0.6, fetal skull 10) and an acoustic impedance (MRayl).
2. **Scatterers.** Diffuse scattering is a circular complex Gaussian field whose standard deviation is the tissue's
   backscatter amplitude (times a smooth +-20 % texture and, for the heart, smooth drop-out patches). Specular
   reflection at interfaces is coherent with amplitude ``k |dZ/dr| / (2 Z)``, the reflection coefficient seen along
   the beam: interfaces parallel to the beam return almost nothing, which leaves the lateral walls of the heart and
   the sides of the skull faint or missing.
3. **Point-spread function.** Baseband (IQ) convolution with a separable Gaussian (axial sigma 0.8 samples, lateral
   sigma 1.6 beam lines): the lateral cell grows with depth as in a real sector scan. The envelope
   ``A = |IQ + electronic noise|`` of fully developed speckle is Rayleigh distributed (:func:`speckle_envelope`).
4. **Attenuation and time-gain compensation.** Round-trip loss ``2 * cumsum(alpha f dr)`` in dB at f = 3.5 MHz
   along each beam line (so fluid gives posterior enhancement and bone an acoustic shadow); TGC adds back a
   fraction 0.6-0.9 of the loss soft tissue would cause.
5. **Log compression** ``255 * clip(1 + 20 log10(A / A_ref) / DR, 0, 1)`` with dynamic range DR 50-60 dB and
   ``A_ref`` the 99th envelope percentile, then linear scan conversion; pixels outside the fan are 0.

The speckle grain is set in samples of the beam grid (as if a clinical image had been resized), not in mm.

Scenes (option ``scene``):

* ``"fetal_head"`` (default, labels ``{background 0, head 1}``): a curvilinear probe (virtual apex above the
  image), abdominal wall layers (skin, fat, muscle), amniotic fluid, an optional placenta and fetal body, and a
  head ellipse with head circumference 80-340 mm, axis ratio 0.72-0.88, any orientation, a hyperechoic skull rim,
  a midline echo and a cavum septi pellucidi. Label 1 is the filled ellipse up to the outer skull border (HC18
  convention). The pixel size is chosen per image so the head fills 45-60 % of the width (as sonographers zoom;
  HC18 pixel sizes vary in the same way), so ``spacing`` differs between cases.
* ``"cardiac"`` (labels :data:`CARDIAC_LABELS`): a phased-array sector from the image top; left ventricle as a
  bullet-shaped cavity (length 70-95 mm) with apex towards the probe, myocardial wall 8-12 mm open at the mitral
  plane, left atrium below, right ventricle and atrium beside them, mitral leaflets and pericardium; labels
  1 LV cavity, 2 LV myocardium, 3 left atrium. The pixel size is chosen so LV and LA fit in the depth.

Labels are cut to the fan. The registered kind carries the fetal-head labels; a cardiac dataset needs
:func:`labels_for_scene` ("cardiac") in its dataset.json.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nnunet_ext.errors import UserInputError
from nnunet_ext.synth._shapes import ellipsoid_radius, rotate_in_plane, sample, smooth_random_field
from nnunet_ext.synth.base import PhantomCase, PhantomKind, register
from nnunet_ext.synth.options import Choice, Option, Shape

KIND = "ultrasound_2d"
DEFAULT_SHAPE = (128, 160)
FETAL_HEAD_LABELS = {"background": 0, "head": 1}
CARDIAC_LABELS = {"background": 0, "LV_cavity": 1, "LV_myocardium": 2, "left_atrium": 3}
SCENES = {"fetal_head": FETAL_HEAD_LABELS, "cardiac": CARDIAC_LABELS}
FREQUENCY_MHZ = 3.5

# tissue id -> (diffuse backscatter amplitude, attenuation dB/cm/MHz, impedance MRayl)
(FLUID, BLOOD, FAT, SOFT, SKIN, PLACENTA, BRAIN, SKULL, MIDLINE, MYOCARDIUM, PERICARDIUM, VALVE) = range(12)
ACOUSTICS = np.array([
    (0.002, 0.002, 1.50),  # amniotic fluid / CSF (anechoic)
    (0.01, 0.18, 1.61),   # blood
    (0.25, 0.60, 1.38),   # fat
    (0.45, 0.60, 1.65),   # soft tissue, muscle, uterine wall
    (0.80, 0.60, 1.70),   # skin
    (0.55, 0.70, 1.60),   # placenta
    (0.18, 0.60, 1.58),   # fetal brain (hypoechoic)
    (1.80, 10.0, 4.00),   # fetal skull (partly ossified bone)
    (1.00, 0.60, 1.75),   # midline echo (falx)
    (0.50, 0.60, 1.70),   # myocardium
    (1.20, 1.00, 1.90),   # pericardium
    (1.00, 0.60, 1.75),   # valve leaflets
])
SPECULAR_GAIN = 8.0


def labels_for_scene(scene: str) -> dict[str, int]:
    """dataset.json labels of a scene; raises UserInputError for an unknown scene."""
    if scene not in SCENES:
        raise UserInputError(f"{KIND}: unknown scene '{scene}' (choose from {', '.join(SCENES)})")
    return SCENES[scene]


@dataclass
class SectorGeometry:
    """Fan geometry in mm: apex at (``apex_y``, 0) (x measured from the image centre), beams at ``|theta| <=
    half_angle`` from the downward vertical, depths ``r_min..r_max`` from the apex."""

    apex_y: float
    r_min: float
    r_max: float
    half_angle: float

    def polar(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dy = y - self.apex_y
        return np.hypot(dy, x), np.arctan2(x, dy)

    def inside(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        r, theta = self.polar(y, x)
        return (r >= self.r_min) & (r <= self.r_max) & (np.abs(theta) <= self.half_angle)


@dataclass
class UltrasoundImage:
    """A rendered image (0..255, outside the ``fan`` 0) and its label, plus on the beam grid (depth x beam line):
    the envelope before log compression, the tissue map and the round-trip attenuation in dB."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float]
    fan: np.ndarray
    envelope: np.ndarray
    beam_tissue: np.ndarray
    loss_db: np.ndarray


def speckle_envelope(rng: np.random.Generator, diffuse: np.ndarray, specular: np.ndarray | None = None,
                     psf_sigma: tuple[float, float] = (0.8, 1.6), noise: float = 0.0) -> np.ndarray:
    """Envelope of the beamformed IQ signal on a (depth, beam line) grid.

    ``IQ = h * (diffuse * (n1 + i n2) / sqrt(2) + specular) + noise`` with ``n1, n2 ~ N(0, 1)`` and ``h`` a
    Gaussian PSF normalised so a uniform diffuse region keeps ``E|IQ|^2 = diffuse^2``. A sum of many independent
    circular complex Gaussian contributions is circular complex Gaussian, so its amplitude is Rayleigh distributed
    with ``E[A] = diffuse sqrt(pi) / 2`` (fully developed speckle).
    """
    shape = diffuse.shape
    scatter_real = diffuse * rng.standard_normal(shape) / math.sqrt(2.0)
    scatter_imag = diffuse * rng.standard_normal(shape) / math.sqrt(2.0)
    if specular is not None:
        scatter_real = scatter_real + specular
    impulse = np.zeros([2 * int(4 * s + 1) + 1 for s in psf_sigma])
    impulse[tuple(n // 2 for n in impulse.shape)] = 1.0
    gain = 1.0 / math.sqrt(float((ndimage.gaussian_filter(impulse, psf_sigma) ** 2).sum()))
    iq_real = gain * ndimage.gaussian_filter(scatter_real, psf_sigma)
    iq_imag = gain * ndimage.gaussian_filter(scatter_imag, psf_sigma)
    if noise > 0:
        iq_real = iq_real + noise * rng.standard_normal(shape)
        iq_imag = iq_imag + noise * rng.standard_normal(shape)
    return np.hypot(iq_real, iq_imag)


# ------------------------------------------------------------------------------------------------------ scenes
def _wall_layers(tissue: np.ndarray, depth_from_probe: np.ndarray, layers) -> None:
    """Paint body-wall layers parallel to the probe face: ``layers`` = [(tissue id, thickness mm), ...]."""
    top = 0.0
    for tissue_id, thickness in layers:
        tissue[(depth_from_probe >= top) & (depth_from_probe < top + thickness)] = tissue_id
        top += thickness


class FetalHeadScene:
    """Fetal head in amniotic fluid behind the maternal abdominal wall; see the module docstring."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int]):
        height, width = shape
        circumference = rng.uniform(80, 340)
        ratio = rng.uniform(0.72, 0.88)
        # Ramanujan's perimeter approximation is homogeneous in (a, b): solve for a at the drawn axis ratio
        unit_perimeter = math.pi * (3 * (1 + ratio) - math.sqrt((3 + ratio) * (1 + 3 * ratio)))
        self.a = circumference / unit_perimeter
        self.b = ratio * self.a
        pixel_mm = max(2 * self.a / (rng.uniform(0.45, 0.60) * width), 2 * self.a / (0.62 * height))
        self.pixel_mm = pixel_mm
        depth_mm, width_mm = height * pixel_mm, width * pixel_mm
        probe_radius = rng.uniform(0.25, 0.45) * depth_mm
        self.geometry = SectorGeometry(apex_y=-probe_radius, r_min=probe_radius, r_max=probe_radius + depth_mm,
                                       half_angle=math.radians(rng.uniform(34, 42)))
        self.wall = [(SKIN, min(2.0, 0.02 * depth_mm)), (FAT, rng.uniform(0.04, 0.1) * depth_mm),
                     (SOFT, rng.uniform(0.04, 0.08) * depth_mm)]
        wall_mm = sum(t for _, t in self.wall)
        self.skull_mm = max(0.035 * self.a, 1.5 * pixel_mm)
        # the rendered rim is at least 1.5 px thick, so set the bone attenuation from a physical one-way loss
        # through the wall (a 1.5-3 mm fetal skull at ~10 dB/cm/MHz) rather than from the drawn thickness
        self.attenuation = {SKULL: rng.uniform(4.0, 8.0) / (FREQUENCY_MHZ * self.skull_mm / 10.0)}
        self.angle = rng.uniform(0, math.pi)
        # place the head: every outline point inside the fan, below the wall (rejection sampling)
        outline = np.linspace(0, 2 * math.pi, 72, endpoint=False)
        for _ in range(200):
            centre = np.array([rng.uniform(wall_mm + self.a * 0.8, depth_mm - self.b * 0.8),
                               rng.uniform(-0.3, 0.3) * width_mm])
            u, v = self.a * np.cos(outline), self.b * np.sin(outline)
            py = centre[0] + math.cos(self.angle) * u - math.sin(self.angle) * v
            px = centre[1] + math.sin(self.angle) * u + math.cos(self.angle) * v
            r, theta = self.geometry.polar(py, px)
            margin = 2 * self.skull_mm
            if (np.all(r - self.geometry.r_min > wall_mm + margin) and np.all(r < self.geometry.r_max - margin)
                    and np.all(np.abs(theta) < self.geometry.half_angle - margin / r)):
                break
        self.centre = centre
        # placenta: a flat ellipse under the wall (anterior) or at the back of the field (posterior)
        self.placenta = str(rng.choice(["none", "anterior", "posterior"]))
        placenta_half_mm = rng.uniform(0.05, 0.1) * depth_mm
        placenta_depth = (wall_mm + placenta_half_mm if self.placenta == "anterior"
                          else depth_mm - 0.5 * placenta_half_mm)
        self.placenta_ellipse = ((placenta_depth, rng.uniform(-0.3, 0.3) * width_mm),
                                 (placenta_half_mm, rng.uniform(0.25, 0.45) * width_mm))
        self.body = rng.random() < 0.5
        self.body_scale = rng.uniform(0.8, 1.1)
        self.wall_mm = wall_mm

    def head_frame(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u along the occipito-frontal axis, direction (cos angle, sin angle) in (y, x); v across), in mm."""
        local = rotate_in_plane(np.stack([y - self.centre[0], x - self.centre[1]]), -self.angle)
        return local[0], local[1]

    def tissue(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        r, _ = self.geometry.polar(y, x)
        below_probe = r - self.geometry.r_min
        tissue = np.full(y.shape, FLUID, dtype=np.uint8)
        if self.placenta != "none":
            tissue[ellipsoid_radius(np.stack([y, x]), *self.placenta_ellipse) < 1] = PLACENTA
        u, v = self.head_frame(y, x)
        if self.body:  # fetal trunk continuing from the occiput
            trunk = ellipsoid_radius(np.stack([u, v]), (-1.6 * self.a * self.body_scale, 0.0),
                                     (1.1 * self.a * self.body_scale, 0.85 * self.b * self.body_scale))
            tissue[trunk < 1] = SOFT
        uv = np.stack([u, v])
        outer = ellipsoid_radius(uv, (0, 0), (self.a, self.b))
        inner = ellipsoid_radius(uv, (0, 0), (self.a - self.skull_mm, self.b - self.skull_mm))
        tissue[outer < 1] = SKULL
        tissue[inner < 1] = BRAIN
        midline = (inner < 0.92) & (np.abs(v) < max(0.6, 0.5 * self.skull_mm))
        tissue[midline] = MIDLINE
        cavum = ellipsoid_radius(uv, (0.35 * self.a, 0.0), (0.09 * self.a, 0.05 * self.b)) < 1
        tissue[cavum] = FLUID
        _wall_layers(tissue, below_probe, self.wall)
        return tissue

    def label(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        u, v = self.head_frame(y, x)
        return (ellipsoid_radius(np.stack([u, v]), (0, 0), (self.a, self.b)) < 1).astype(np.uint8)


class CardiacScene:
    """Apical view of the left heart; see the module docstring."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int]):
        height, width = shape
        self.lv_length = rng.uniform(70, 95)          # apex to mitral plane, endocardium
        self.lv_halfwidth = rng.uniform(20, 27)
        self.wall = rng.uniform(8, 12)
        self.la_radii = (rng.uniform(18, 26), rng.uniform(16, 22))  # along / across the long axis
        self.annulus_gap = rng.uniform(3, 6)
        chest_wall = rng.uniform(15, 25)
        apex_depth = chest_wall + rng.uniform(8, 20)
        needed = apex_depth + self.wall + self.lv_length + self.annulus_gap + 2 * self.la_radii[0] + 10
        self.pixel_mm = needed / height
        self.geometry = SectorGeometry(apex_y=0.0, r_min=0.0, r_max=height * self.pixel_mm,
                                       half_angle=math.radians(rng.uniform(36, 44)))
        self.tilt = math.radians(rng.uniform(-12, 12))
        self.apex = np.array([apex_depth, rng.uniform(-0.04, 0.04) * width * self.pixel_mm])
        self.septum_side = rng.choice([-1.0, 1.0])
        self.chest = [(SKIN, 2.0), (FAT, chest_wall * 0.4), (SOFT, chest_wall * 0.6 - 2.0)]
        self.leaflet_open = rng.uniform(0.1, 0.9)
        self.attenuation: dict[int, float] = {}

    def heart_frame(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u from the mitral plane towards the apex, v across) in mm."""
        base = self.apex + (self.wall + self.lv_length) * np.array([math.cos(self.tilt), math.sin(self.tilt)])
        local = rotate_in_plane(np.stack([y - base[0], x - base[1]]), -self.tilt)
        return -local[0], local[1]

    def _regions(self, y: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        u, v = self.heart_frame(y, x)
        uv = np.stack([u, v])
        length, half, wall = self.lv_length, self.lv_halfwidth, self.wall
        cavity = (u >= 0) & (ellipsoid_radius(uv, (0, 0), (length, half)) < 1)
        epicardium = (u >= 0) & (ellipsoid_radius(uv, (0, 0), (length + 0.8 * wall, half + wall)) < 1)
        la_centre = (-(self.annulus_gap + self.la_radii[0]), 0.0)
        atrium = ellipsoid_radius(uv, la_centre, self.la_radii) < 1
        la_wall = ellipsoid_radius(uv, la_centre, (self.la_radii[0] + 2.5, self.la_radii[1] + 2.5)) < 1
        side = self.septum_side
        rv_centre = (0.45 * length, side * (half + wall + 0.6 * half))
        rv = ellipsoid_radius(uv, rv_centre, (0.75 * length, 0.65 * half)) < 1
        rv_wall = ellipsoid_radius(uv, rv_centre, (0.75 * length + 4, 0.65 * half + 4)) < 1
        ra_centre = (-(self.annulus_gap + 0.8 * self.la_radii[0]), side * (half + wall + 0.5 * half))
        ra = ellipsoid_radius(uv, ra_centre, (0.8 * self.la_radii[0], 0.7 * self.la_radii[1])) < 1
        sac_centre, sac_radii = (0.1 * length, side * 0.5 * half), (1.15 * length + wall + 6, 2.2 * half + wall + 6)
        sac = ellipsoid_radius(uv, sac_centre, sac_radii)
        return dict(u=u, v=v, cavity=cavity, myocardium=epicardium & ~cavity, atrium=atrium, la_wall=la_wall,
                    rv=rv, rv_wall=rv_wall, ra=ra, pericardium=sac < 1,
                    pericardial_space=sac < 1 - 2.0 / min(sac_radii))

    def tissue(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        reg = self._regions(y, x)
        tissue = np.full(y.shape, SOFT, dtype=np.uint8)
        tissue[reg["pericardium"]] = PERICARDIUM
        tissue[reg["pericardial_space"]] = FAT
        tissue[reg["rv_wall"] | reg["la_wall"]] = MYOCARDIUM
        tissue[reg["rv"] | reg["ra"]] = BLOOD
        tissue[reg["myocardium"]] = MYOCARDIUM
        tissue[reg["cavity"] | reg["atrium"]] = BLOOD
        # mitral leaflets: thin bands hinged at the annulus (u = 0, v = +-half width), pointing across the
        # mitral plane when closed (beta ~ 0) and into the ventricle when open (beta ~ pi / 2)
        u, v = reg["u"], reg["v"]
        beta = 0.1 + 1.3 * self.leaflet_open
        for hinge_side in (-1.0, 1.0):
            dv = v - hinge_side * self.lv_halfwidth
            along = u * math.sin(beta) - hinge_side * dv * math.cos(beta)
            across = u * math.cos(beta) + hinge_side * dv * math.sin(beta)
            tissue[(along > 0) & (along < 0.9 * self.lv_halfwidth) & (np.abs(across) < 1.2)] = VALVE
        below_probe, _ = self.geometry.polar(y, x)
        _wall_layers(tissue, below_probe, self.chest)
        return tissue

    def label(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        reg = self._regions(y, x)
        label = np.zeros(y.shape, dtype=np.uint8)
        label[reg["myocardium"]] = 2
        label[reg["cavity"]] = 1
        label[reg["atrium"]] = 3
        return label


# --------------------------------------------------------------------------------------------------- rendering
def round_trip_loss_db(world, r: np.ndarray, theta: np.ndarray, oversampling: int = 4) -> np.ndarray:
    """Two-way attenuation (dB) from the probe to every beam sample: ``2 * integral alpha f dr``.

    The integral runs on a depth grid ``oversampling`` times finer than the beam grid so a thin strong
    attenuator (the skull rim) costs the same on every beam line instead of jumping by whole samples.
    """
    step = (r[1, 0] - r[0, 0]) / oversampling
    fine_r = r[0, 0] + step * np.arange(r.shape[0] * oversampling)
    fine_theta = theta[0][None, :]
    geometry = world.geometry
    fine_tissue = world.tissue(geometry.apex_y + fine_r[:, None] * np.cos(fine_theta),
                               fine_r[:, None] * np.sin(fine_theta))
    attenuation = ACOUSTICS[:, 1].copy()
    for tissue_id, value in world.attenuation.items():
        attenuation[tissue_id] = value
    loss = 2 * np.cumsum(attenuation[fine_tissue] * FREQUENCY_MHZ * step / 10.0, axis=0)
    return loss[::oversampling]


def _tgc_db(loss_db: np.ndarray, fraction: float) -> np.ndarray:
    """Depth gain compensating ``fraction`` of the median loss over beam lines (like automatic TGC)."""
    return fraction * np.median(loss_db, axis=1, keepdims=True)


def render_ultrasound(rng: np.random.Generator, shape=DEFAULT_SHAPE, scene: str = "fetal_head") -> UltrasoundImage:
    """Render one B-mode image; see the module docstring for the model. Option values are checked by
    :data:`OPTIONS` (``nnunet-ext synth`` validates before rendering)."""
    shape = tuple(int(n) for n in shape)
    texture_rng = np.random.default_rng(rng.integers(0, 2 ** 62, size=2))
    world = FetalHeadScene(rng, shape) if scene == "fetal_head" else CardiacScene(rng, shape)
    dynamic_range_db = rng.uniform(50, 60)
    tgc_fraction = rng.uniform(0.6, 0.9)
    geometry, pixel_mm = world.geometry, world.pixel_mm

    # beam grid: depth samples ~ one pixel apart, beam lines ~ one pixel apart at the deepest point
    n_depth = int(math.ceil((geometry.r_max - geometry.r_min) / pixel_mm)) + 1
    n_lines = int(math.ceil(2 * geometry.half_angle * geometry.r_max / pixel_mm)) + 1
    depths = np.linspace(geometry.r_min, geometry.r_max, n_depth)
    angles = np.linspace(-geometry.half_angle, geometry.half_angle, n_lines)
    r, theta = np.meshgrid(depths, angles, indexing="ij")
    beam_y, beam_x = geometry.apex_y + r * np.cos(theta), r * np.sin(theta)
    tissue = world.tissue(beam_y, beam_x)

    diffuse = ACOUSTICS[tissue, 0] * (1 + 0.2 * np.clip(smooth_random_field(texture_rng, tissue.shape, 3.0), -2, 2))
    if scene == "cardiac":  # patchy signal drop-out (ribs, lung, poor windows)
        diffuse *= np.clip(1 + 0.5 * smooth_random_field(texture_rng, tissue.shape, (8.0, 6.0)), 0.25, 1.5)
    impedance = ndimage.gaussian_filter1d(ACOUSTICS[tissue, 2], 0.7, axis=0)
    reflection = np.abs(np.gradient(impedance, axis=0)) / (2 * impedance)
    envelope = speckle_envelope(texture_rng, diffuse, SPECULAR_GAIN * reflection, noise=0.0015)

    loss_db = round_trip_loss_db(world, r, theta)
    envelope = envelope * 10 ** ((_tgc_db(loss_db, tgc_fraction) - loss_db) / 20)

    reference = np.percentile(envelope, 99)
    compressed = 255 * np.clip(1 + 20 * np.log10(envelope / reference + 1e-12) / dynamic_range_db, 0, 1)

    # scan conversion: pixel centres -> fractional (depth, line) indices of the beam grid
    height, width = shape
    y = (np.arange(height) + 0.5) * pixel_mm
    x = (np.arange(width) - (width - 1) / 2) * pixel_mm
    yy, xx = np.meshgrid(y, x, indexing="ij")
    pixel_r, pixel_theta = geometry.polar(yy, xx)
    index = np.stack([(pixel_r - geometry.r_min) / (depths[1] - depths[0]),
                      (pixel_theta + geometry.half_angle) / (angles[1] - angles[0])])
    fan = geometry.inside(yy, xx)
    image = np.where(fan, sample(compressed, index), 0.0)
    image = np.round(np.clip(image, 0, 255)).astype(np.float32)
    label = np.where(fan, world.label(yy, xx), 0).astype(np.uint8)
    return UltrasoundImage(image=image, label=label, spacing=(pixel_mm, pixel_mm), fan=fan, envelope=envelope,
                           beam_tissue=tissue, loss_db=loss_db)


def make_case(rng: np.random.Generator, shape=DEFAULT_SHAPE, **opts) -> PhantomCase:
    """One nnU-Net case: channel 0 = B-mode image (0..255), label as :func:`labels_for_scene` of ``scene``."""
    result = render_ultrasound(rng, shape, **opts)
    return PhantomCase(images=[result.image], label=result.label, spacing=result.spacing)


# What ``nnunet-ext synth ultrasound_2d --option KEY=VALUE`` accepts (defaults as in :func:`render_ultrasound`).
OPTIONS = (
    Option("shape", Shape(2, 16), DEFAULT_SHAPE, "rows x columns of the scan-converted image"),
    Option("scene", Choice(tuple(SCENES)), "fetal_head",
           "fetal_head (labels: head) or cardiac (labels: LV cavity, LV myocardium, left atrium)"),
)

register(PhantomKind(
    name=KIND, dataset_name="Ultrasound2D", channel_names={"0": "US"}, labels=FETAL_HEAD_LABELS,
    make_case=make_case,
    description="2D B-mode sector ultrasound with Rayleigh speckle: fetal head (default) or cardiac scene",
    option_specs=OPTIONS,
    labels_for=lambda options: labels_for_scene(options["scene"])))
