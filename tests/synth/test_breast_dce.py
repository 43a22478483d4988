"""Tests of the breast DCE-MRI phantom (nnunet_ext.synth.breast_dce).

Measured at the default (``pre_contrast_conspicuity=1``, default shape, ``case_rng(0, 0, i)``, i < 16, with the
micro-structure texture in every tissue): lesion vs surrounding FGT contrast-to-noise ratio
|mean(lesion) - mean(FGT shell)| / noise sigma is 0.41 on average on the pre-contrast image (median 0.26, quartiles
0.15-0.41, range 0.02-1.74), 29 in the early (quartiles 20-42, range 8.6-49) and 8.5 in the late post-contrast phase
(quartiles 6.4-10.8, range 0.5-17; washout brings some rims back to the FGT level); pure rim voxels are 100 % fast +
washout. The texture is zero-mean, so it leaves these mean contrasts alone; in noise-free pre-contrast images the
lesion-vs-FGT ratio of texture standard deviations is 0.8-1.3 at conspicuity 0 (same field and amplitude: sampling
only) and 1.0-1.6 at the default, while the FGT's own texture (2.3-4.3 % after the blur) varies 1.8-fold between
cases. The thresholds below leave margin around these numbers.
"""
import re
import time

import numpy as np
import pytest
from scipy import ndimage

from nnunet_ext.errors import UserInputError
from nnunet_ext.synth import breast_dce, kinetics
from nnunet_ext.synth.base import REGISTRY, case_rng

SMALL = (16, 48, 48)


@pytest.fixture(scope="module")
def simulations():
    """Default-shape cases drawn exactly as ``nnunet-ext synth breast_dce --seed 0`` draws its training cases."""
    return [breast_dce.simulate(case_rng(0, 0, i)) for i in range(4)]


def early_enhancement(simulation):
    return kinetics.relative_enhancement(simulation.images[1], simulation.images[0])


def test_kind_is_registered():
    kind = REGISTRY["breast_dce"]
    assert kind.dataset_name == "BreastDCE"
    assert kind.channel_names == {"0": "pre", "1": "post1", "2": "post2"}
    assert kind.labels == {"background": 0, "tumor": 1}


def test_make_case_is_deterministic():
    first = breast_dce.make_case(np.random.default_rng(5), SMALL)
    second = breast_dce.make_case(np.random.default_rng(5), SMALL)
    other = breast_dce.make_case(np.random.default_rng(6), SMALL)
    for a, b in zip(first.images, second.images):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.label, second.label)
    assert not np.array_equal(first.images[0], other.images[0])


def test_default_case_geometry_and_types(simulations):
    case = breast_dce.make_case(case_rng(0, 0, 0))
    assert case.spacing == (3.0, 1.4, 1.4)
    assert len(case.images) == 3 and case.extras == {}
    for image in case.images:
        assert image.shape == (32, 96, 96) and image.dtype == np.float32
        assert np.all(np.isfinite(image)) and image.min() >= 0
    assert case.label.dtype == np.uint8
    assert set(np.unique(case.label)) == {0, 1}
    np.testing.assert_array_equal(case.label, simulations[0].label)


def test_malignant_rim_is_fast_with_washout(simulations):
    for simulation in simulations:
        pre, early, late = simulation.images
        initial, delayed = kinetics.classify_curves(pre, early, late)
        rim = (simulation.maps["subregion"] == breast_dce.SUBREGIONS["rim"]) & (
            simulation.maps["tumour_fraction"] > 0.99)
        assert rim.sum() >= 10
        assert np.mean(initial[rim] == kinetics.INITIAL_TYPES.index("fast")) > 0.9
        assert np.mean(delayed[rim] == kinetics.DELAYED_TYPES.index("washout")) > 0.8


def test_fat_barely_enhances_and_vessels_enhance_early(simulations):
    for simulation in simulations:
        enhancement = early_enhancement(simulation)
        tissue = simulation.maps["tissue"]
        fat = ndimage.binary_erosion(tissue == breast_dce.TISSUES["fat"])
        vessel = tissue == breast_dce.TISSUES["vessel"]
        assert np.median(enhancement[fat]) < 0.1
        assert vessel.any()
        assert np.median(enhancement[vessel]) > 1.0
        assert np.percentile(enhancement[vessel], 90) > 1.5


def test_lesion_is_subtle_before_and_conspicuous_after_contrast(simulations):
    ratios = []
    for simulation in simulations:
        lesion, reference = breast_dce.lesion_reference_masks(simulation)
        assert reference.sum() > 100
        ratios.append([breast_dce.contrast_to_noise_ratio(image, lesion, reference, simulation.noise_sigma)
                       for image in simulation.images])
    ratios = np.array(ratios)
    assert np.all(ratios[:, 0] < 1.5) and ratios[:, 0].mean() < 1.0  # pre-contrast
    assert np.all(ratios[:, 1] > 8.0)                                 # early post-contrast
    assert np.all(ratios[:, 2] > 2.0)                                 # late post-contrast (these four cases)


def test_pre_contrast_cues_follow_kinetics():
    """Conspicuity only changes tumour tissue: high K_trans brighter and more textured, low K_trans darker and
    smoother."""
    without = breast_dce.simulate(case_rng(0, 0, 0), snr=None, pre_contrast_conspicuity=0.0)
    strong = breast_dce.simulate(case_rng(0, 0, 0), snr=None, pre_contrast_conspicuity=2.0)
    tumour = without.maps["tumour_fraction"] > 0
    far = ~ndimage.binary_dilation(tumour, np.ones((3, 3, 3)), iterations=3)  # beyond the blur kernel
    np.testing.assert_array_equal(without.images[0][far], strong.images[0][far])
    pure = without.maps["tumour_fraction"] > 0.99
    k_trans = without.maps["k_trans"]
    difference = strong.images[0].astype(float) - without.images[0]
    high, low = pure & (k_trans > 0.4), pure & (k_trans < 0.2)
    assert high.any() and low.any()
    assert difference[high].mean() > 0.01 * without.images[0][high].mean()
    assert difference[low].mean() < 0
    # the texture amplitude follows K_trans: up with it where it is high, down where it is low
    assert difference[high].std() > 0.01 * without.images[0][high].mean()
    m0_without, m0_strong = without.maps["m0"], strong.maps["m0"]
    assert m0_strong[high].std() > 1.2 * m0_without[high].std()
    assert m0_strong[low].std() < 0.9 * m0_without[low].std()


def test_parameter_maps_match_the_case():
    maps = breast_dce.case_parameter_maps(np.random.default_rng(3), SMALL)
    case = breast_dce.make_case(np.random.default_rng(3), SMALL)
    np.testing.assert_array_equal(maps["label"], case.label)
    for key in ("k_trans", "v_e", "v_p", "t10", "m0", "tissue", "subregion"):
        assert maps[key].shape == SMALL
    assert np.all(maps["subregion"][case.label == 0] == 0)
    assert set(np.unique(maps["tissue"])) <= set(breast_dce.TISSUES.values())
    rim = maps["subregion"] == breast_dce.SUBREGIONS["rim"]
    inner = (maps["subregion"] > breast_dce.SUBREGIONS["rim"])
    if inner.any():
        assert maps["k_trans"][rim].mean() > maps["k_trans"][inner].mean()
    with_extras = breast_dce.make_case(np.random.default_rng(3), SMALL, parameter_maps_in_extras=True)
    assert set(with_extras.extras) == {"k_trans", "v_e", "v_p", "subregion"}
    np.testing.assert_array_equal(with_extras.images[1], case.images[1])


def test_phases_and_option_validation():
    simulation = breast_dce.simulate(np.random.default_rng(0), SMALL, n_post=3)
    assert len(simulation.images) == 4 and simulation.times_min == (0.0, 1.5, 4.0, 6.5)
    custom = breast_dce.simulate(np.random.default_rng(0), SMALL, post_times_min=(1.0, 7.0))
    assert custom.times_min == (0.0, 1.0, 7.0)
    for bad in ({"shape": (16, 48)}, {"n_post": 0}, {"pre_contrast_conspicuity": -1.0},
                {"post_times_min": (6.5, 1.5)}, {"lesion_diameter_mm": (30.0, 8.0)}, {"snr": -5.0}):
        with pytest.raises(UserInputError, match=f"breast_dce: option {next(iter(bad))}="):
            REGISTRY["breast_dce"].validate_options({"shape": SMALL, **bad})
    with pytest.raises(UserInputError, match="post_times_min"):  # the Python API still takes any n_post
        breast_dce.simulate(np.random.default_rng(0), SMALL, n_post=3, post_times_min=(1.0, 2.0))


@pytest.mark.parametrize("shape, options", [((8, 8, 8), {}), ((12, 24, 24), {}),
                                            ((16, 48, 96), {"bilateral": True})])
def test_other_shapes_have_a_lesion(shape, options):
    case = breast_dce.make_case(np.random.default_rng(1), shape, **options)
    assert case.label.any() and all(image.shape == shape for image in case.images)


def test_default_case_is_fast():
    breast_dce.make_case(np.random.default_rng(0))  # the Tofts table is computed once per process
    durations = []
    for seed in range(3):
        start = time.perf_counter()
        breast_dce.make_case(np.random.default_rng(seed))
        durations.append(time.perf_counter() - start)
    assert min(durations) < 1.0


def test_synthesize_writes_valid_paired_datasets(tmp_path, verify_with_nnunet):
    from nnunet_ext.imageio import read_image
    from nnunet_ext.synth.cli import synthesize

    full, pre_only = synthesize("breast_dce", 11, cases=2, test_cases=1, raw=tmp_path, pre_only_id=12,
                                labeled_cases=1)
    for folder in (full, pre_only):
        verify_with_nnunet(folder)  # nnU-Net's verify_dataset_integrity, in-process

    def case_ids(folder, split):
        return sorted({p.name[:-len("_0000.nii.gz")] for p in (folder / f"images{split}").glob("*_0000.nii.gz")})

    assert case_ids(full, "Tr") == ["case_0000", "case_0001"]
    assert case_ids(pre_only, "Tr") == ["case_0000"]
    assert case_ids(pre_only, "Ts") == case_ids(full, "Ts") == ["test_0000"]
    assert sorted(p.name for p in (pre_only / "imagesTr").iterdir()) == ["case_0000_0000.nii.gz"]

    import SimpleITK as sitk
    for split, case in (("Tr", "case_0000"), ("Ts", "test_0000")):
        for sub, name in ((f"images{split}", f"{case}_0000.nii.gz"), (f"labels{split}", f"{case}.nii.gz")):
            array_full, spacing_full = read_image(full / sub / name)
            array_pre, spacing_pre = read_image(pre_only / sub / name)
            np.testing.assert_array_equal(array_full, array_pre)
            assert spacing_full == spacing_pre
            image_full, image_pre = sitk.ReadImage(str(full / sub / name)), sitk.ReadImage(str(pre_only / sub / name))
            assert image_full.GetOrigin() == image_pre.GetOrigin()
            assert image_full.GetDirection() == image_pre.GetDirection()


# --- tissue micro-structure texture (module docstring of breast_dce, items 5 and 6) --------------------------------
def _local_relative_std(image, size=3):
    image = image.astype(np.float64)
    mean = ndimage.uniform_filter(image, size)
    return np.sqrt(np.maximum(ndimage.uniform_filter(image * image, size) - mean ** 2, 0.0)) / np.maximum(mean, 1e-9)


def _interior(mask, iterations):
    """Voxels whose 3x3x3 neighbourhood, and the blur's reach beyond it, lie in ``mask``."""
    return ndimage.binary_erosion(mask, np.ones((3, 3, 3), bool), iterations=iterations)


@pytest.fixture(scope="module")
def noise_free():
    """The fixture cases without noise, with and without the texture, at conspicuity 0 and 1.

    ``_uniform`` draws its (0, 0) amplitudes from the same stream, so both variants are the same case and their
    ratio is the texture alone: t = S / S_untextured - 1 (blurred like the image)."""
    untextured = {name: (0.0, 0.0) for name in breast_dce.TEXTURE_AMPLITUDE}
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        for textured in (True, False):
            if not textured:
                patch.setattr(breast_dce, "TEXTURE_AMPLITUDE", untextured)
            for c in (0.0, 1.0):
                out[textured, c] = [breast_dce.simulate(case_rng(0, 0, i), snr=None, pre_contrast_conspicuity=c)
                                    for i in range(4)]
    return out


@pytest.mark.parametrize("tissue, threshold", [("fibroglandular", 0.018), ("fat", 0.007), ("muscle", 0.016)])
def test_texture_is_present_outside_the_lesion(noise_free, tissue, threshold):
    """Noise-free pre-contrast images: the local relative standard deviation (3x3x3 windows well inside a pure
    tissue, pooled over the cases) is well above the level that the remaining smooth structure gives without it."""
    def pooled_median(simulations):
        values = []
        for simulation in simulations:
            maps = simulation.maps
            if tissue == "fibroglandular":
                mask = _interior((maps["fgt_fraction"] > 0.99) & (simulation.label == 0), 2)
            elif tissue == "fat":
                mask = _interior((maps["tissue"] == breast_dce.TISSUES["fat"]) & (maps["fgt_fraction"] < 0.01)
                                 & (maps["tumour_fraction"] == 0), 2)
            else:
                mask = _interior(maps["tissue"] == breast_dce.TISSUES[tissue], 1)
            values.append(_local_relative_std(simulation.images[0])[mask])
        pooled = np.concatenate(values)
        assert pooled.size > 200
        return float(np.median(pooled))

    assert pooled_median(noise_free[True, 1.0]) > threshold
    assert pooled_median(noise_free[False, 1.0]) < 0.7 * threshold  # what the measure sees without texture


def _texture_std_ratio(noise_free, c, index):
    textured, plain = noise_free[True, c][index], noise_free[False, c][index]
    lesion = textured.maps["tumour_fraction"] > 0.99
    fgt = (textured.maps["fgt_fraction"] > 0.99) & (textured.label == 0)
    assert lesion.sum() >= 20 and fgt.sum() >= 100

    def texture_std(mask):
        return float(np.std(textured.images[0][mask].astype(np.float64) / plain.images[0][mask] - 1.0))

    return texture_std(lesion) / texture_std(fgt)


@pytest.mark.parametrize("index", range(4))
def test_lesion_texture_differs_only_modestly_from_fgt(noise_free, index):
    """Same field, same amplitude at c = 0; at the default the tumour's amplitude follows its K_trans, by at most
    1 + TUMOUR_TEXTURE_GAIN, well within the 2-fold range FGT amplitudes take between cases."""
    at_zero, at_default = _texture_std_ratio(noise_free, 0.0, index), _texture_std_ratio(noise_free, 1.0, index)
    assert 0.75 < at_zero < 1.33
    assert 0.8 < at_default < 1.75
    assert at_default > at_zero  # every fixture lesion has a hypervascular rim


@pytest.fixture(scope="module")
def parameter_maps_per_shape():
    cache = {}

    def maps(shape):
        if shape not in cache:
            cache[shape] = breast_dce.case_parameter_maps(case_rng(0, 0, 1), shape)
        return cache[shape]

    return maps


@pytest.mark.parametrize("shape", [breast_dce.DEFAULT_SHAPE, (16, 32, 32), (48, 128, 128)])
@pytest.mark.parametrize("tissue", ["fibroglandular", "fat", "skin", "muscle", "thorax"])
def test_texture_amplitudes_and_their_voxel_scaling(parameter_maps_per_shape, shape, tissue):
    """The M0 map of a tissue varies by its drawn relative amplitude, scaled for the grid's voxel volume."""
    maps = parameter_maps_per_shape(shape)
    spacing = tuple(f / n for f, n in zip(breast_dce.DEFAULT_FIELD_OF_VIEW_MM, shape))
    low, high = breast_dce.TEXTURE_AMPLITUDE[tissue]
    factor = breast_dce.texture_voxel_factor(spacing)
    region = maps["tissue"] == breast_dce.TISSUES[tissue]
    assert region.sum() > 100
    relative_std = maps["m0"][region].std() / maps["m0"][region].mean()
    assert 0.75 * low * factor < relative_std < 1.25 * high * factor


def test_texture_voxel_factor():
    assert breast_dce.texture_voxel_factor(breast_dce.TEXTURE_REFERENCE_VOXEL_MM) == pytest.approx(1.0)
    assert breast_dce.texture_voxel_factor((6.0, 2.8, 1.4)) == pytest.approx(0.5)  # 4 x the volume
    finest = np.sqrt(np.prod(breast_dce.TEXTURE_REFERENCE_VOXEL_MM)) / breast_dce.TEXTURE_CORRELATION_MM ** 1.5
    assert breast_dce.texture_voxel_factor((0.5, 0.5, 0.5)) == pytest.approx(finest)  # below l^3: saturates


def test_texture_field_statistics():
    rng = np.random.default_rng(0)
    spacing, correlation = (1.0, 1.0, 1.0), 4.0
    field = breast_dce.texture_field(rng, (40, 40, 40), spacing, (correlation,) * 3)
    assert abs(field.mean()) < 1e-5 and field.std() == pytest.approx(1.0, rel=1e-4)
    lag = int(correlation)  # the autocorrelation falls to 1/e at the correlation length
    autocorrelation = float(np.mean(field * np.roll(field, lag, axis=2)))
    assert autocorrelation == pytest.approx(np.exp(-1.0), abs=0.08)
    np.testing.assert_array_equal(field, breast_dce.texture_field(np.random.default_rng(0), (40, 40, 40), spacing,
                                                                  (correlation,) * 3))


def test_texture_is_deterministic_per_seed():
    first = breast_dce.case_parameter_maps(np.random.default_rng(7), SMALL)["m0"]
    second = breast_dce.case_parameter_maps(np.random.default_rng(7), SMALL)["m0"]
    other = breast_dce.case_parameter_maps(np.random.default_rng(8), SMALL)["m0"]
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_docstring_numbers_come_from_the_constants():
    doc = breast_dce.__doc__
    assert "{" not in doc and "}" not in doc  # every placeholder was filled
    assert (f"T10 = T10_FGT(x) - c * {breast_dce.T1_PER_K_TRANS_S:g} s min * "
            f"(K_trans(x) - {breast_dce.T1_REFERENCE_K_TRANS:g} /min)") in doc
    low, high = breast_dce.TUMOUR_T1_RANGE_S
    assert f"kept within {low:.1f}-{high:.1f} s" in doc
    assert (f"a_FGT * (1 + c * {breast_dce.TUMOUR_TEXTURE_GAIN:g} * clip((K_trans(x) - "
            f"{breast_dce.T1_REFERENCE_K_TRANS:g} /min) / {breast_dce.TUMOUR_TEXTURE_K_SCALE:g} /min") in doc
    assert f"1/e at l = {breast_dce.TEXTURE_CORRELATION_MM:g} mm" in doc
    assert f"{breast_dce.MUSCLE_FIBRE_CORRELATION_MM:g} mm along its fibres" in doc
    for tissue, (low, high) in breast_dce.TEXTURE_AMPLITUDE.items():
        expected = rf"{tissue}\s+{low * 100:g}-{high * 100:g} %" if high > 0 else rf"{tissue}\s+0\n"
        assert re.search(expected, doc), tissue
    # the quoted T1 sensitivity of the SPGR signal matches the kinetics module
    match = re.search(r"changes the pre-contrast signal by (-[0-9.]+) to (-[0-9.]+) d", doc)
    for t1, quoted in zip((1.0, 1.4), match.groups()):
        relative = kinetics.spgr_signal(1.0 / (t1 * 1.001)) / kinetics.spgr_signal(1.0 / t1) - 1.0
        assert relative / 0.001 == pytest.approx(float(quoted), abs=0.01)


def test_more_phases_give_more_channels_and_times_must_match():
    kind = REGISTRY["breast_dce"]
    options = kind.validate_options({"shape": SMALL, "n_post": 4})
    assert kind.channel_names_with(options) == {"0": "pre", "1": "post1", "2": "post2", "3": "post3", "4": "post4"}
    case = breast_dce.make_case(np.random.default_rng(0), SMALL, n_post=4)
    assert len(case.images) == 5
    with pytest.raises(UserInputError, match="post_times_min has 2 times but n_post is 4"):
        kind.validate_options({"shape": SMALL, "n_post": 4, "post_times_min": [1.0, 2.0]})


def test_masks_in_extras_hold_the_breast_and_the_subregions():
    case = breast_dce.make_case(np.random.default_rng(2), SMALL, masks_in_extras=True)
    plain = breast_dce.make_case(np.random.default_rng(2), SMALL)
    np.testing.assert_array_equal(case.images[0], plain.images[0])  # the masks draw no random numbers
    breast, subregion = case.extras["breast"], case.extras["subregion"]
    assert set(case.extras) == {"breast", "subregion"}
    assert breast[case.label > 0].all() and 0.05 < breast.mean() < 0.6  # lesions lie in the breast, which is a part
    assert np.array_equal(subregion > 0, case.label > 0) and set(np.unique(subregion)) <= {0, 1, 2, 3}


# --- what a case holds (module docstring, item 7): SUB channel, subregion labels, distractor masks ------------------
def test_subtraction_channel_is_post1_minus_pre_and_changes_nothing_else():
    kind = REGISTRY["breast_dce"]
    names = kind.channel_names_with({"shape": SMALL, "subtraction": True})
    assert names == {"0": "pre", "1": "post1", "2": "post2", "3": "SUB"}
    assert kind.channel_names_with({"shape": SMALL, "subtraction": True, "n_post": 4}) == {
        "0": "pre", "1": "post1", "2": "post2", "3": "post3", "4": "post4", "5": "SUB"}
    plain = breast_dce.make_case(np.random.default_rng(4), SMALL)
    case = breast_dce.make_case(np.random.default_rng(4), SMALL, subtraction=True)
    assert len(case.images) == 4 and case.images[3].dtype == np.float32
    for a, b in zip(case.images, plain.images):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(case.images[3], plain.images[1] - plain.images[0])
    np.testing.assert_array_equal(case.label, plain.label)


def test_subregion_labels_split_the_tumour_by_enhancement():
    """Label 2 = the rim (fast enhancement), 1 = mixed zone + necrotic core (K_trans below ~0.15 /min)."""
    kind = REGISTRY["breast_dce"]
    assert kind.labels_with({"subregions": True}) == {"background": 0, "lesion": [1, 2], "enhancing": [2]}
    assert kind.regions_class_order_with({"subregions": True}) == [1, 2]
    assert kind.labels_with({}) == {"background": 0, "tumor": 1} and kind.regions_class_order_with({}) is None
    maps = breast_dce.case_parameter_maps(case_rng(0, 0, 0))
    case = breast_dce.make_case(case_rng(0, 0, 0), subregions=True)
    assert set(np.unique(case.label)) == {0, 1, 2}
    np.testing.assert_array_equal(case.label > 0, maps["label"] > 0)
    np.testing.assert_array_equal(case.label == 2, maps["subregion"] == breast_dce.SUBREGIONS["rim"])
    pure = maps["tumour_fraction"] > 0.99
    low, enhancing = pure & (case.label == 1), pure & (case.label == 2)
    assert np.percentile(maps["k_trans"][low], 95) < 0.2 and maps["k_trans"][enhancing].min() > 0.25
    plain = breast_dce.make_case(case_rng(0, 0, 0))
    for a, b in zip(case.images, plain.images):
        np.testing.assert_array_equal(a, b)


def test_distractor_mask_is_enhancing_non_tumour_tissue(simulations):
    """Vessels, benign foci and moderate/marked BPE enhance early (mean > 50 %), fat does not (mean < 10 %)."""
    tissues = breast_dce.TISSUES
    for simulation in simulations:
        distractor = breast_dce.distractor_mask(simulation.maps, simulation.label) > 0
        tissue = simulation.maps["tissue"]
        assert distractor.any() and not (distractor & (simulation.label > 0)).any()
        assert distractor[tissue == tissues["vessel"]].all() and distractor[tissue == tissues["benign_focus"]].all()
        assert not distractor[np.isin(tissue, (tissues["fat"], tissues["skin"], tissues["muscle"]))].any()
        enhancement = early_enhancement(simulation)
        assert enhancement[distractor].mean() > 0.5
        assert enhancement[tissue == tissues["fat"]].mean() < 0.1


def test_distractor_masks_in_extras_share_the_breast_mask_with_masks_in_extras():
    plain = breast_dce.make_case(np.random.default_rng(2), SMALL)
    case = breast_dce.make_case(np.random.default_rng(2), SMALL, distractor_masks=True)
    both = breast_dce.make_case(np.random.default_rng(2), SMALL, distractor_masks=True, masks_in_extras=True)
    assert set(case.extras) == {"breast", "distractor"} and set(both.extras) == {"breast", "subregion", "distractor"}
    np.testing.assert_array_equal(case.images[1], plain.images[1])
    maps = breast_dce.case_parameter_maps(np.random.default_rng(2), SMALL)
    np.testing.assert_array_equal(case.extras["breast"], maps["breast"])
    np.testing.assert_array_equal(case.extras["distractor"], breast_dce.distractor_mask(maps, maps["label"]))
    assert case.extras["distractor"].dtype == np.uint8 and not case.extras["distractor"][case.label > 0].any()
    for key in case.extras:
        np.testing.assert_array_equal(case.extras[key], both.extras[key])


@pytest.mark.parametrize("index", range(3))
def test_bilateral_breasts_lie_one_per_half_and_the_main_lesion_in_one(index):
    """Each half of the x axis holds one breast (one connected piece of the breast mask); the two are joined only by
    the thin subcutaneous layer in front of the sternum, and the main (largest) lesion lies in one half."""
    shape = (16, 48, 96)
    simulation = breast_dce.simulate(case_rng(0, 0, index), shape, bilateral=True)
    breast, half = simulation.maps["breast"] > 0, shape[2] // 2
    for side in (breast[..., :half], breast[..., half:]):
        assert ndimage.label(side)[1] == 1
    per_column = breast.sum(axis=(0, 1))
    assert per_column[half - 1:half + 1].max() < 0.5 * min(per_column[:half].max(), per_column[half:].max())
    lesions, n = ndimage.label(simulation.label, np.ones((3, 3, 3)))
    main = 1 + int(np.argmax(ndimage.sum(simulation.label, lesions, range(1, n + 1))))
    x = np.nonzero(lesions == main)[2]
    assert x.max() < half - 2 or x.min() >= half + 2


def test_written_dataset_with_sub_regions_and_masks(tmp_path, verify_with_nnunet):
    """A tiny dataset with every new option passes nnU-Net's check; SUB is post1 - pre in the files themselves; the
    pre-contrast-only twin keeps channel 0 and the region labels."""
    import json

    import SimpleITK as sitk

    from nnunet_ext.synth.cli import synthesize

    options = {"shape": [12, 24, 24], "subtraction": True, "subregions": True, "distractor_masks": True}
    full, pre_only = synthesize("breast_dce", 13, cases=2, test_cases=1, raw=tmp_path, pre_only_id=14,
                                options=options)
    for folder in (full, pre_only):
        verify_with_nnunet(folder)
    meta, pre_meta = (json.loads((f / "dataset.json").read_text()) for f in (full, pre_only))
    assert meta["channel_names"] == {"0": "pre", "1": "post1", "2": "post2", "3": "SUB"}
    assert pre_meta["channel_names"] == {"0": "pre"}
    for m in (meta, pre_meta):
        assert m["labels"] == {"background": 0, "lesion": [1, 2], "enhancing": [2]}
        assert m["regions_class_order"] == [1, 2]

    def read(path):
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))

    values = set()
    for split, case in (("Tr", "case_0000"), ("Tr", "case_0001"), ("Ts", "test_0000")):
        images = full / f"images{split}"
        np.testing.assert_array_equal(read(images / f"{case}_0003.nii.gz"),
                                      read(images / f"{case}_0001.nii.gz") - read(images / f"{case}_0000.nii.gz"))
        label = read(full / f"labels{split}" / f"{case}.nii.gz")
        values |= set(np.unique(label).tolist())
        distractor = read(full / f"extras{split}" / f"{case}_distractor.nii.gz")
        breast = read(full / f"extras{split}" / f"{case}_breast.nii.gz")
        assert set(np.unique(breast)) == {0, 1} and not (distractor & (label > 0)).any()
        assert sorted(p.name for p in (pre_only / f"images{split}").glob(f"{case}_*")) == [f"{case}_0000.nii.gz"]
    assert values == {0, 1, 2}
