"""Tests of nnunet_ext.synth.mammo_2d: determinism, 12-bit range, density, pectoral muscle, masses, dataset write."""
import json

import numpy as np
import pytest
from scipy import ndimage

from nnunet_ext.errors import UserInputError
from nnunet_ext.synth import mammo_2d as mg
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
                                  {"no_mass_fraction": -0.1}, {"kvp": 28}],
                         ids=["shape_3d", "view", "density", "fraction", "unknown_option"])
def test_bad_options_are_user_input_errors(opts):
    with pytest.raises(UserInputError, match=f"mammo_2d: .*{next(iter(opts))}"):
        get_kind("mammo_2d").validate_options(opts)
