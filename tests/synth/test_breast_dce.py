"""Tests of the breast DCE-MRI phantom (nnunet_ext.synth.breast_dce).

Measured at the default (``pre_contrast_conspicuity=1``, default shape, ``case_rng(0, 0, i)``, i < 16): lesion vs
surrounding FGT contrast-to-noise ratio |mean(lesion) - mean(FGT shell)| / noise sigma is about 0.3-0.6 on average
on the pre-contrast image (max ~1.4), 20-50 in the early and 2-20 in the late post-contrast phase; pure rim voxels
are 100 % fast + washout. The thresholds below leave margin around these numbers.
"""
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


def test_pre_contrast_cues_follow_kinetics():
    """Conspicuity only changes tumour tissue: high K_trans brighter and grainier, low K_trans darker."""
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
    # the proton-density grain: a voxel-scale texture of a few percent where K_trans is high
    assert difference[high].std() > 0.02 * without.images[0][high].mean()


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


def test_synthesize_writes_valid_paired_datasets(tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from nnunet_ext.imageio import read_image
    from nnunet_ext.synth.cli import synthesize

    full, pre_only = synthesize("breast_dce", 11, cases=2, test_cases=1, raw=tmp_path, pre_only_id=12,
                                labeled_cases=1)
    for folder in (full, pre_only):
        verify_dataset_integrity(str(folder), num_processes=1)

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
