"""Tests of nnunet_ext.synth.head_ct_ich: determinism, HU ranges per tissue, bleed geometry, labels, dataset write."""
import functools
import json

import numpy as np
import pytest
from scipy import ndimage

from nnunet_ext.errors import UserInputError
from nnunet_ext.synth import head_ct_ich as ct
from nnunet_ext.synth.cli import get_kind, synthesize


def _render(seed, **opts):
    return ct.render_head_ct(np.random.default_rng(seed), **opts)


@functools.lru_cache(maxsize=None)
def _seeds_with(bleed, count=1, limit=300):
    """Seeds whose scan contains ``bleed``; the bleed draw does not depend on the grid, so a tiny grid finds them."""
    found = [s for s in range(limit)
             if bleed in _render(s, shape=(4, 8, 8), supersample=1, negative_fraction=0.0).bleeds]
    assert len(found) >= count, f"no seed with bleed {bleed} in range({limit})"
    return found[:count]


def _pure(mask):
    """Voxels whose 3 x 3 x 3 neighbourhood has the same majority tissue (little partial volume)."""
    return ndimage.binary_erosion(mask, structure=np.ones((3, 3, 3), dtype=bool))


@pytest.fixture(scope="module")
def scan_with_bleeds():
    return _render(_seeds_with(ct.IPH)[0], shape=(12, 96, 96), negative_fraction=0.0)


@pytest.fixture(scope="module")
def scan_without_bleeds():
    return _render(0, shape=(12, 96, 96), negative_fraction=1.0)


def test_same_seed_same_case_and_other_seed_differs():
    first, again, other = (ct.make_case(np.random.default_rng(s)) for s in (7, 7, 8))
    assert np.array_equal(first.images[0], again.images[0]) and np.array_equal(first.label, again.label)
    assert first.spacing == again.spacing
    assert not np.array_equal(first.images[0], other.images[0])


def test_default_grid_spacing_and_head_size():
    case = ct.make_case(np.random.default_rng(0))
    assert case.images[0].shape == ct.DEFAULT_SHAPE == case.label.shape
    assert case.spacing == (5.0, 3.5, 3.5)
    assert case.images[0].dtype == np.float32 and case.label.dtype == np.uint8
    middle = case.images[0][case.images[0].shape[0] // 2]
    head_columns = np.flatnonzero((middle > -500).any(axis=0))
    width_mm = (head_columns[-1] - head_columns[0] + 1) * case.spacing[2]
    assert 160 <= width_mm <= 200


def test_custom_shape_keeps_physical_field_of_view():
    scan = _render(1, shape=(6, 32, 48))
    assert scan.hu.shape == (6, 32, 48)
    assert scan.spacing == pytest.approx((5.0, 224 / 48, 224 / 48))


# tissue -> (low, high) bounds of the median HU over partial-volume-free voxels (noise is 5-10 HU)
HU_RANGES = {ct.AIR: (-1010, -990), ct.GREY: (33, 47), ct.WHITE: (18, 32), ct.CSF: (-5, 18),
             ct.BLOOD: (50, 100)}


@pytest.mark.parametrize("tissue", HU_RANGES, ids=[ct.TISSUE_NAMES[t] for t in HU_RANGES])
def test_hounsfield_units_per_tissue(scan_with_bleeds, scan_without_bleeds, tissue):
    scan = scan_with_bleeds if tissue == ct.BLOOD else scan_without_bleeds
    pure = _pure(scan.tissue == tissue)
    assert pure.sum() > 20
    low, high = HU_RANGES[tissue]
    assert low <= np.median(scan.hu[pure]) <= high


def test_skull_is_cortical_bone_and_grey_brighter_than_white(scan_without_bleeds):
    hu, tissue = scan_without_bleeds.hu, scan_without_bleeds.tissue
    bone = hu[tissue == ct.BONE]
    assert np.percentile(bone, 1) > 400 and 800 <= np.median(bone) <= 1600
    assert hu.min() >= -1024 and hu.max() <= 3071 and np.array_equal(hu, np.round(hu))
    grey, white = np.median(hu[_pure(tissue == ct.GREY)]), np.median(hu[_pure(tissue == ct.WHITE)])
    assert grey - white > 8


def test_oedema_rim_between_csf_and_blood(scan_with_bleeds):
    hu, tissue = scan_with_bleeds.hu, scan_with_bleeds.tissue
    oedema = tissue == ct.OEDEMA
    assert oedema.any()
    assert 5 <= np.median(hu[oedema]) <= 40  # 10-25 HU, pulled by neighbouring blood and brain


def test_labels_are_bhsd_classes_and_lie_on_blood(scan_with_bleeds):
    label, tissue = scan_with_bleeds.label, scan_with_bleeds.tissue
    assert set(np.unique(label)) <= set(ct.LABELS.values())
    assert set(np.unique(label)) - {0} <= set(scan_with_bleeds.bleeds)
    assert ct.IPH in np.unique(label)
    assert np.mean(tissue[label > 0] == ct.BLOOD) > 0.8
    assert list(ct.LABELS.values()) == list(range(len(ct.LABELS)))


def test_negative_fraction_controls_bleed_free_scans():
    for seed in range(5):
        negative = _render(seed, shape=(4, 16, 16), supersample=1, negative_fraction=1.0)
        assert negative.bleeds == [] and not negative.label.any()
        positive = _render(seed, shape=(8, 48, 48), negative_fraction=0.0)
        assert 1 <= len(positive.bleeds) <= 3 and positive.label.any()
    share = np.mean([_render(s, shape=(4, 8, 8), supersample=1).bleeds == [] for s in range(80)])
    assert 0.15 <= share <= 0.45  # default 0.3


@pytest.mark.parametrize("bleed", [ct.EDH, ct.SDH], ids=["EDH", "SDH"])
def test_extra_axial_bleeds_lie_against_the_skull(bleed):
    scan = _render(_seeds_with(bleed)[0], shape=(12, 64, 64), negative_fraction=0.0)
    mask = scan.label == bleed
    assert mask.sum() > 10
    near_bone = ndimage.binary_dilation(scan.tissue == ct.BONE, np.ones((1, 5, 5), dtype=bool))
    assert np.mean(near_bone[mask]) > 0.5


def test_edh_is_thicker_and_shorter_than_sdh():
    def thickness_over_extent(bleed):
        ratios = []
        for seed in _seeds_with(bleed, count=2):
            mask = _render(seed, shape=(12, 64, 64), negative_fraction=0.0).label == bleed
            thickness = ndimage.distance_transform_edt(mask).max()
            ratios.append(thickness / np.sqrt(mask.sum()))
        return np.mean(ratios)
    assert thickness_over_extent(ct.EDH) > thickness_over_extent(ct.SDH)


def test_intraventricular_blood_layers_posteriorly():
    scan = _render(_seeds_with(ct.IVH)[0], shape=(12, 96, 96), negative_fraction=0.0)
    blood = scan.label == ct.IVH
    assert blood.any()
    rows = np.indices(blood.shape)[1]
    remaining_csf = (scan.tissue == ct.CSF) & ndimage.binary_dilation(blood, iterations=3)
    assert rows[blood].mean() > rows[remaining_csf].mean()  # supine patient: blood is dependent (+y)


@pytest.mark.parametrize("opts", [{"shape": (16, 64)}, {"negative_fraction": 1.5}, {"fov_mm": 0},
                                  {"colour": "red"}], ids=["shape_2d", "fraction", "fov", "unknown_option"])
def test_bad_options_are_user_input_errors(opts):
    with pytest.raises(UserInputError, match=f"head_ct_ich: .*{next(iter(opts))}"):
        get_kind("head_ct_ich").validate_options(opts)
