"""Tests of nnunet_ext.synth.mammo_2d: determinism, 12-bit range, density, pectoral muscle, masses, camouflage
record, digital style, conspicuous masses, options, dataset write."""
import hashlib
import json

import numpy as np
import pytest
from scipy import ndimage

from nnunet_ext.cli import main
from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import read_image
from nnunet_ext.synth import mammo_2d as mg
from nnunet_ext.synth.base import case_rng
from nnunet_ext.synth.cli import get_kind, synthesize


def _render(seed, **opts):
    return mg.render_mammogram(np.random.default_rng(seed), **opts)


def test_same_seed_same_case_and_other_seed_differs():
    first, again, other = (mg.make_case(np.random.default_rng(s)) for s in (5, 5, 6))
    assert np.array_equal(first.images[0], again.images[0]) and np.array_equal(first.label, again.label)
    assert not np.array_equal(first.images[0], other.images[0])


def test_twelve_bit_image_bright_where_attenuating():
    for seed in range(4):
        result = _render(seed)
        image = result.image
        assert image.shape == mg.DEFAULT_SHAPE and image.dtype == np.float32
        assert result.spacing == pytest.approx((200 / 128, 200 / 128))
        assert image.min() >= 0 and image.max() <= mg.MAX_VALUE and np.array_equal(image, np.round(image))
        assert np.median(image[~result.breast]) < 100  # direct exposure
        assert 500 < np.median(image[result.breast]) < 3800
        inside = ndimage.binary_erosion(result.breast, iterations=2)
        assert np.corrcoef(image[inside], result.attenuation[inside])[0, 1] > 0.8


def test_skin_line_edge_is_darker_than_the_interior():
    result = _render(1, view="CC", shape=(256, 192))
    breast = result.breast
    edge = breast & ~ndimage.binary_erosion(breast, iterations=3)
    deep = ndimage.binary_erosion(breast, iterations=15)
    assert result.attenuation[edge].mean() < 0.7 * result.attenuation[deep].mean()  # thinner at the rim


def _mean_glandular_fraction(density):
    shares = []
    for seed in range(3):
        result = _render(seed, density=density, no_mass_fraction=1.0)
        shares.append(result.glandular[result.breast].mean())
    return np.mean(shares)


def test_density_category_sets_glandular_share():
    means = [_mean_glandular_fraction(density) for density in "abcd"]
    assert means == sorted(means) and means[3] > 2 * means[0]
    for seed in range(3):
        result = _render(seed, density="c")
        inside = result.breast & ~result.pectoral
        assert np.corrcoef(result.glandular[inside], result.image[inside])[0, 1] > 0.5


def test_mlo_view_has_a_bright_pectoral_triangle_cc_view_none():
    for seed in range(3):
        cc, mlo = _render(seed, view="CC"), _render(seed, view="MLO", density="a")
        assert cc.view == "CC" and not cc.pectoral.any()
        assert mlo.view == "MLO" and mlo.pectoral.any()
        assert mlo.pectoral[0, 0] or mlo.pectoral[0, -1]  # upper chest-wall corner
        fat = mlo.breast & ~mlo.pectoral & (mlo.glandular < 0.05) & ndimage.binary_erosion(mlo.breast, iterations=8)
        muscle = ndimage.binary_erosion(mlo.pectoral, iterations=3)
        assert np.median(mlo.image[muscle]) > np.median(mlo.image[fat])


def test_masses_present_or_absent_as_requested():
    for seed in range(6):
        with_mass = _render(seed, no_mass_fraction=0.0)
        assert 1 <= len(with_mass.masses) <= 2 and with_mass.label.any()
        assert not with_mass.label[~with_mass.breast].any() and not with_mass.label[with_mass.pectoral].any()
        assert {m["shape"] for m in with_mass.masses} <= set(mg.MASS_SHAPES)
        without = _render(seed, no_mass_fraction=1.0)
        assert without.masses == [] and not without.label.any()
    assert set(np.unique(_render(0, no_mass_fraction=0.0).label)) == {0, 1}
    share = np.mean([not _render(seed).masses for seed in range(60)])
    assert 0.1 <= share <= 0.4  # default 0.25


def _image_contrast(result):
    """Mean image value of the masses minus that of a 3-pixel ring of surrounding breast tissue."""
    mass = result.label == 1
    ring = ndimage.binary_dilation(mass, iterations=4) & ~ndimage.binary_dilation(mass, iterations=1) & result.breast
    return result.image[mass].mean() - result.image[ring].mean()


def _intrinsic_contrast(result):
    """(mu_mass - mu of the fat/gland mix the mass replaces) / (mu_gland - mu_fat), averaged over mass pixels."""
    mass = result.label == 1
    glandular = result.glandular[mass]
    mu_local = mg.MU_PER_MM["fat"] * (1 - glandular) + mg.MU_PER_MM["gland"] * glandular
    mu_mass = mg.MU_PER_MM["gland"] * np.mean([m["mu_ratio"] for m in result.masses])
    return np.mean(mu_mass - mu_local) / (mg.MU_PER_MM["gland"] - mg.MU_PER_MM["fat"])


def test_masses_stand_out_in_fatty_breasts_and_hide_in_dense_ones():
    fatty = [_render(s, density="a", no_mass_fraction=0.0) for s in range(6)]
    dense = [_render(s, density="d", no_mass_fraction=0.0) for s in range(6)]
    assert all(_image_contrast(result) > 0 for result in fatty)
    assert all(1.0 <= m["mu_ratio"] <= 1.06 for result in fatty + dense for m in result.masses)
    fatty_contrast = np.mean([_intrinsic_contrast(result) for result in fatty])
    dense_contrast = np.mean([_intrinsic_contrast(result) for result in dense])
    assert fatty_contrast > 0.7 and dense_contrast < 0.6 * fatty_contrast


@pytest.mark.parametrize("opts", [{"shape": (4, 128, 96)}, {"view": "ML"}, {"density": "e"},
                                  {"no_mass_fraction": -0.1}, {"kvp": 28}, {"style": "dicom"}, {"style": None},
                                  {"mass_contrast": "high"}, {"mass_contrast": [1.08, 1.15]}],
                         ids=["shape_3d", "view", "density", "fraction", "unknown_option", "style", "style_null",
                              "mass_contrast", "mass_contrast_range"])
def test_bad_options_are_user_input_errors(opts):
    with pytest.raises(UserInputError, match=f"mammo_2d: .*{next(iter(opts))}"):
        get_kind("mammo_2d").validate_options(opts)


# --- default output is unchanged by the style / mass_contrast / camouflage additions
def _digest(case):
    digest = hashlib.sha256(case.images[0].astype(np.float32).tobytes())
    digest.update(case.label.astype(np.uint8).tobytes())
    return digest.hexdigest()[:16]


# Digests of make_case(case_rng(7, split, index), **options) computed with _digest on the code at commit dc12a99,
# before style, mass_contrast and the camouflage record were added (float32 image bytes, then uint8 label bytes).
REFERENCE_DIGESTS = [
    ({}, 0, 0, "f9ea8e3e01a66493"),
    ({}, 0, 1, "3625708c4aa36195"),
    ({}, 0, 2, "d3699f0e8f77cc11"),
    ({}, 1, 3, "02ebaa2702439fb0"),
    ({"shape": (48, 36)}, 0, 4, "1b4d61a2a02179f0"),
    ({"view": "MLO", "density": "d", "no_mass_fraction": 0.0}, 0, 5, "b8da51d20a4f5191"),
    ({"view": "CC", "density": "a", "no_mass_fraction": 0.0, "shape": (64, 48)}, 0, 6, "e986a6a8c57c391d"),
]


@pytest.mark.parametrize("opts, split, index, expected", REFERENCE_DIGESTS)
def test_default_style_output_is_unchanged(opts, split, index, expected):
    explicit = {"style": "film", "mass_contrast": "natural"}
    assert _digest(mg.make_case(case_rng(7, split, index), **opts)) == expected
    assert _digest(mg.make_case(case_rng(7, split, index), **opts, **explicit)) == expected


# --- camouflage record
def _with_masses(seeds, **opts):
    return [_render(seed, no_mass_fraction=0.0, **opts) for seed in seeds]


@pytest.mark.parametrize("opts", [{}, {"shape": (64, 48)}, {"mass_contrast": "conspicuous"},
                                  {"style": "digital", "view": "MLO"}],
                         ids=["default", "small", "conspicuous", "digital_mlo"])
def test_camouflage_flag_agrees_with_the_recomputed_ratio(opts):
    flags = []
    for result in _with_masses(range(8), **opts):
        pixel = result.spacing[0]
        rows, columns = np.indices(result.label.shape)
        for mass in result.masses:
            body, ring = mass["body"], mass["ring"]
            assert not (ring & (result.label == 1)).any() and not (ring & ~result.breast).any()
            assert (result.label[body] == 1).all()
            # the ring lies between 1.2 and 2 (modulated, elongated) radii of the mass centre
            distance = np.hypot((rows + 0.5) * pixel - mass["centre_mm"][0], (columns + 0.5) * pixel
                                - mass["centre_mm"][1])[ring]
            radius = mass["radius_mm"]
            assert distance.min() >= 1.2 * 0.55 * 0.7 * radius - pixel and distance.max() <= 2 * 1.3 * radius + pixel
            ratio = (result.attenuation[body].mean() - result.attenuation[ring].mean()) / result.attenuation[ring].std()
            assert mass["contrast_to_texture"] == pytest.approx(ratio, rel=1e-9)
            assert mass["camouflaged"] == (ratio < mg.CAMOUFLAGE_THRESHOLD)
            flags.append(mass["camouflaged"])
    assert any(flags) and not all(flags)  # both kinds occur, so the comparison means something


@pytest.mark.parametrize("shape", [(128, 96), (48, 36), (16, 16)])
def test_camouflaged_extra_is_the_union_of_camouflaged_bodies_inside_the_label(shape):
    seen = set()
    for seed in range(10):
        case = mg.make_case(np.random.default_rng(seed), shape, no_mass_fraction=0.0)
        result = _render(seed, shape=shape, no_mass_fraction=0.0)
        mask = case.extras["camouflaged"]
        assert set(case.extras) == {"camouflaged"} and mask.dtype == np.uint8 and mask.shape == case.label.shape
        assert set(np.unique(mask)) <= {0, 1} and not (mask.astype(bool) & (case.label == 0)).any()
        union = np.zeros(shape, dtype=bool)
        for mass in result.masses:
            if mass["camouflaged"]:
                union |= mass["body"]
            elif np.isnan(mass["contrast_to_texture"]):  # coarse grid: a body without pixels or ring
                assert not mass["body"].any() or np.count_nonzero(mass["ring"]) < 2
        np.testing.assert_array_equal(mask, union.astype(np.uint8))
        np.testing.assert_array_equal(result.camouflaged, union)
        seen.add(bool(mask.any()))
    assert not mg.make_case(np.random.default_rng(0), shape, no_mass_fraction=1.0).extras["camouflaged"].any()
    if shape != (16, 16):
        assert seen == {True, False}


def _hand_built_ratio(glandular_level, mu_ratio, period_mm):
    """A hand-built noise-free attenuation image: a 50 mm slab of fat / gland mix whose glandular fraction is
    ``glandular_level`` plus an egg-crate texture (std 0.1, period ``period_mm``; deterministic, so the ring's mean
    and spread do not depend on a random realisation) with a round mass of radius 8 mm that replaces the local mix
    along its path ``2 R sqrt(1 - rho^2)`` (the phantom's model). Returns the mass's contrast-to-texture ratio."""
    pixel_mm, radius, thickness = 0.5, 8.0, 50.0
    rows, columns = (np.indices((96, 96)) + 0.5) * pixel_mm
    wave = 2 * np.pi / period_mm
    glandular = np.clip(glandular_level + 0.2 * np.cos(wave * rows) * np.cos(wave * columns), 0, 1)
    mu_local = mg.MU_PER_MM["fat"] * (1 - glandular) + mg.MU_PER_MM["gland"] * glandular
    rho = np.hypot(rows - 24.0, columns - 24.0) / radius
    path = 2 * radius * np.sqrt(np.clip(1 - rho ** 2, 0, None))
    attenuation = thickness * mu_local + path * (mu_ratio * mg.MU_PER_MM["gland"] - mu_local)
    return mg.contrast_to_texture(attenuation, rho < 1, (rho >= 1.2) & (rho <= 2))


@pytest.mark.parametrize("period_mm", [2.0, 3.0, 4.5])
def test_dense_mass_in_fat_stands_out_and_gland_like_mass_in_dense_tissue_is_camouflaged(period_mm):
    # mean path through the body 2 R * 2/3 = 10.7 mm; ring texture std in A about 50 mm * 0.0346 /mm * 0.1 = 0.17
    in_fat = _hand_built_ratio(glandular_level=0.05, mu_ratio=1.15, period_mm=period_mm)  # 10.7 * 0.045 / 0.17
    in_dense = _hand_built_ratio(glandular_level=0.85, mu_ratio=1.0, period_mm=period_mm)  # 10.7 * 0.0052 / 0.17
    assert in_fat > 2.5 > mg.CAMOUFLAGE_THRESHOLD > 0.5 > in_dense
    assert np.isnan(mg.contrast_to_texture(np.ones((4, 4)), np.zeros((4, 4), bool), np.ones((4, 4), bool)))


# --- digital style
@pytest.mark.parametrize("seed, view, density", [(0, "CC", "a"), (1, "MLO", "a"), (2, "CC", "b")])
def test_digital_style_changes_range_and_noise_but_not_the_anatomy(seed, view, density):
    film = _render(seed, view=view, density=density)
    digital = _render(seed, view=view, density=density, style="digital")
    assert film.style == "film" and digital.style == "digital"
    for name in ("label", "attenuation", "glandular", "breast", "pectoral", "camouflaged"):
        np.testing.assert_array_equal(getattr(film, name), getattr(digital, name), err_msg=name)
    assert [m["contrast_to_texture"] for m in film.masses] == [m["contrast_to_texture"] for m in digital.masses]
    # 14 bits, integer values, the window top reached; film stays within 12 bits
    assert film.image.max() <= 4095 < digital.image.max() <= mg.MAX_VALUES["digital"] == 16383
    assert np.array_equal(digital.image, np.round(digital.image)) and digital.image.min() >= 0
    # linear in the measured line integral inside the window (no sigmoid)
    inside = digital.breast & (digital.image > 0) & (digital.image < 16383)
    assert np.corrcoef(digital.image[inside], digital.measured[inside])[0, 1] > 0.999
    # quantum noise in a flat region (deep fat, constant thickness): 4x the counts -> about half the noise
    flat = ndimage.binary_erosion(film.breast & ~film.pectoral, iterations=10) & (film.glandular < 0.01)
    assert flat.sum() > 200
    film_noise = (film.measured - film.attenuation)[flat].std()
    digital_noise = (digital.measured - digital.attenuation)[flat].std()
    assert 0.35 < digital_noise / film_noise < 0.7


def test_digital_density_prior_is_fattier_and_never_denser_for_the_same_seed():
    order = list(mg.DENSITY_SHARE)
    pairs = [(_render(seed, shape=(32, 24)).density, _render(seed, shape=(32, 24), style="digital").density)
             for seed in range(60)]
    assert all(order.index(digital) <= order.index(film) for film, digital in pairs)
    assert sum(digital == "a" for _, digital in pairs) > sum(film == "a" for film, _ in pairs)


# --- conspicuous masses
def test_conspicuous_masses_draw_higher_attenuation_and_stand_out_more():
    natural, conspicuous = _with_masses(range(30)), _with_masses(range(30), mass_contrast="conspicuous")
    for plain, bright in zip(natural, conspicuous):
        np.testing.assert_array_equal(plain.label, bright.label)  # same anatomy, only mu_mass differs
        assert all(1.0 <= m["mu_ratio"] <= 1.06 for m in plain.masses)
        assert all(1.08 <= m["mu_ratio"] <= 1.15 for m in bright.masses)
    ratios = [[m["contrast_to_texture"] for r in results for m in r.masses] for results in (natural, conspicuous)]
    assert np.mean(ratios[1]) > np.mean(ratios[0]) + 0.1
    assert np.mean([m["camouflaged"] for r in conspicuous for m in r.masses]) < np.mean(
        [m["camouflaged"] for r in natural for m in r.masses])


# --- datasets on disk
def test_written_dataset_has_a_uint8_camouflaged_extra_with_the_label_geometry(tmp_path):
    (folder,) = synthesize("mammo_2d", 45, cases=3, test_cases=1, raw=str(tmp_path),
                           options={"shape": (48, 36), "no_mass_fraction": 0.0})
    for split, identifier in (("Tr", "case_0000"), ("Tr", "case_0002"), ("Ts", "test_0000")):
        label, label_spacing = read_image(folder / f"labels{split}" / f"{identifier}.nii.gz")
        mask, mask_spacing = read_image(folder / f"extras{split}" / f"{identifier}_camouflaged.nii.gz")
        assert mask.dtype == np.uint8 and mask.shape == label.shape == (48, 36)
        assert mask_spacing == pytest.approx(label_spacing) and not (mask.astype(bool) & (label == 0)).any()
    case = mg.make_case(case_rng(0, 0, 2), shape=(48, 36), no_mass_fraction=0.0)
    mask, _ = read_image(folder / "extrasTr" / "case_0002_camouflaged.nii.gz")
    np.testing.assert_array_equal(mask, case.extras["camouflaged"])
    assert "synth" in json.loads((folder / "dataset.json").read_text())


def test_cli_writes_a_digital_conspicuous_dataset(tmp_path):
    code = main(["synth", "mammo_2d", "-d", "46", "--cases", "2", "--test_cases", "0", "--raw", str(tmp_path),
                 "--shape", "48", "36", "--option", "style=digital", "--option", "mass_contrast=conspicuous"])
    assert code == 0
    (folder,) = tmp_path.iterdir()
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["synth"]["options"] == {"style": "digital", "mass_contrast": "conspicuous", "shape": [48, 36]}
    image, _ = read_image(folder / "imagesTr" / "case_0000_0000.nii.gz")
    expected = mg.make_case(case_rng(0, 0, 0), shape=(48, 36), style="digital", mass_contrast="conspicuous")
    np.testing.assert_array_equal(image, expected.images[0])
    assert image.max() > 4095
    assert sorted(p.name for p in (folder / "extrasTr").iterdir()) == ["case_0000_camouflaged.nii.gz",
                                                                       "case_0001_camouflaged.nii.gz"]
