"""Tests of nnunet_ext.synth.brain_pairs: T1 contrast, diffeomorphic ground truth, label warping, dataset write."""
import json

import numpy as np
import pytest

from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import read_image
from nnunet_ext.synth import brain_pairs as bp
from nnunet_ext.synth._shapes import jacobian_determinant, sample, warp
from nnunet_ext.synth.base import TRAIN, case_rng
from nnunet_ext.synth.cli import get_kind, synthesize


def _render(seed, **opts):
    return bp.render_brain_pair(np.random.default_rng(seed), **opts)


def _dice(a, b):
    return 2 * np.sum(a & b) / max(np.sum(a) + np.sum(b), 1)


def _mean_dice(label, reference):
    return np.mean([_dice(label == k, reference == k) for k in range(1, len(bp.LABELS))])


def _warp_labels(label, displacement):
    """Warp a label map by linear interpolation of its one-hot channels (less aliasing than nearest neighbour)."""
    one_hot = np.stack([warp((label == k).astype(float), displacement) for k in range(len(bp.LABELS))])
    return np.argmax(one_hot, axis=0)


@pytest.fixture(scope="module")
def pairs():
    return [_render(seed) for seed in range(3)]


def test_same_seed_same_case_and_other_seed_differs():
    first, again, other = (bp.make_case(np.random.default_rng(s)) for s in (2, 2, 3))
    for a, b in zip(first.images + [first.label], again.images + [again.label]):
        assert np.array_equal(a, b)
    assert all(np.array_equal(first.extras[k], again.extras[k]) for k in first.extras)
    assert not np.array_equal(first.images[0], other.images[0])


def test_case_layout_channels_label_and_extras():
    case = bp.make_case(np.random.default_rng(0))
    assert len(case.images) == 2 and case.spacing == (1.0, 1.0, 1.0)
    assert all(image.shape == bp.DEFAULT_SHAPE == case.label.shape for image in case.images)
    assert set(case.extras) == {"moving_label", "displacement", "inverse_displacement"}
    assert case.extras["moving_label"].shape == bp.DEFAULT_SHAPE
    assert case.extras["displacement"].shape == bp.DEFAULT_SHAPE + (3,)


def test_subjects_layout_is_the_fixed_image_of_the_same_pair_and_names_one_channel(tmp_path):
    pair_case = bp.make_case(np.random.default_rng(4))
    subject = bp.make_case(np.random.default_rng(4), layout="subjects")
    assert len(subject.images) == 1 and not subject.extras
    assert np.array_equal(subject.images[0], pair_case.images[0]) and np.array_equal(subject.label, pair_case.label)
    (folder,) = synthesize("brain_pairs", 77, cases=2, test_cases=0, seed=0, raw=str(tmp_path),
                           options={"shape": (12, 12, 12), "layout": "subjects"})
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "T1"}
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["case_0000_0000.nii.gz",
                                                                     "case_0001_0000.nii.gz"]
    with pytest.raises(UserInputError, match="--pre_only_id needs a multi-channel kind"):
        synthesize("brain_pairs", 78, cases=2, test_cases=0, seed=0, raw=str(tmp_path), pre_only_id=79,
                   options={"layout": "subjects"})


def test_labels_are_consecutive_and_all_structures_present(pairs):
    assert list(bp.LABELS.values()) == list(range(len(bp.LABELS)))
    assert set(bp.FREESURFER_IDS) == set(bp.LABELS.values())
    for pair in pairs:
        for label in (pair.fixed_label, pair.moving_label):
            assert label.dtype == np.uint8 and set(np.unique(label)) == set(bp.LABELS.values())


def test_t1_contrast_white_brightest_grey_intermediate_csf_dark(pairs):
    for pair in pairs:
        for image, label in ((pair.fixed, pair.fixed_label), (pair.moving, pair.moving_label)):
            median = {k: np.median(image[label == k]) for k in bp.LABELS.values()}
            assert median[bp.WHITE] > median[bp.THALAMUS] > median[bp.CORTEX] > median[bp.CSF]
            assert median[bp.WHITE] > max(median[bp.CAUDATE], median[bp.PUTAMEN])
            assert median[bp.VENTRICLE] < 0.4 * median[bp.WHITE] and median[0] < 0.1 * median[bp.WHITE]
            assert image.dtype == np.float32 and image.min() >= 0


def test_images_differ_by_bias_field_not_only_geometry(pairs):
    pair = pairs[0]
    same_tissue = (pair.fixed_label == bp.WHITE) & (pair.moving_label == bp.WHITE)
    ratio = pair.moving[same_tissue] / pair.fixed[same_tissue]
    assert np.std(np.log(ratio)) > 0.02  # independent smooth bias fields (and noise) per image


@pytest.mark.parametrize("displacement_mm", [3.0, 6.0])
def test_deformation_is_diffeomorphic_with_requested_size(displacement_mm):
    pair = _render(4, displacement_mm=displacement_mm)
    for field in (pair.displacement, pair.inverse_displacement):
        assert jacobian_determinant(field).min() > 0
        largest = np.sqrt((field ** 2).sum(axis=0)).max()
        assert 0.5 * displacement_mm <= largest <= 1.5 * displacement_mm


def test_inverse_displacement_inverts_the_deformation(pairs):
    pair = pairs[0]
    positions = np.indices(pair.fixed.shape, dtype=float) + pair.displacement
    round_trip = pair.displacement + np.stack([sample(c, positions) for c in pair.inverse_displacement])
    interior = (slice(4, -4),) * 3  # the fields are extended at the borders, so compare away from them
    assert np.abs(round_trip[(slice(None),) + interior]).max() < 0.1


def test_warping_fixed_label_with_the_field_reproduces_moving_label(pairs):
    for pair in pairs:
        warped = _warp_labels(pair.fixed_label, pair.displacement)
        assert _mean_dice(warped, pair.moving_label) > 0.8
        assert _mean_dice(warped, pair.moving_label) > _mean_dice(pair.fixed_label, pair.moving_label) + 0.05
        wrong_way = _warp_labels(pair.fixed_label, -pair.displacement)
        assert _mean_dice(wrong_way, pair.moving_label) < _mean_dice(warped, pair.moving_label)
        back = _warp_labels(pair.moving_label, pair.inverse_displacement)
        assert _mean_dice(back, pair.fixed_label) > _mean_dice(pair.moving_label, pair.fixed_label) + 0.05


def test_zero_displacement_gives_identical_anatomy():
    pair = _render(1, displacement_mm=0.0)
    assert np.array_equal(pair.fixed_label, pair.moving_label) and not pair.displacement.any()


@pytest.mark.parametrize("opts", [{"shape": (40, 32)}, {"smoothness_mm": 0}, {"displacement_mm": -1},
                                  {"shape": (8, 40, 32)}, {"warp": "bspline"}],
                         ids=["shape_2d", "smoothness", "displacement", "too_small", "unknown_option"])
def test_bad_options_are_user_input_errors(opts):
    with pytest.raises(UserInputError, match=f"brain_pairs: .*{next(iter(opts))}"):
        get_kind("brain_pairs").validate_options(opts)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    return raw, synthesize("brain_pairs", 531, cases=2, test_cases=1, raw=str(raw))[0]


def test_written_extras_hold_the_ground_truth(written):
    _, folder = written
    case = bp.make_case(case_rng(seed=0, split=TRAIN, index=0))  # what synthesize drew for case_0000
    displacement, _ = read_image(folder / "extrasTr" / "case_0000_displacement.nii.gz")
    moving_label, _ = read_image(folder / "extrasTr" / "case_0000_moving_label.nii.gz")
    assert np.array_equal(displacement, case.extras["displacement"])
    assert np.array_equal(moving_label, case.extras["moving_label"])
    assert {p.name for p in (folder / "extrasTs").iterdir()} == {
        f"test_0000_{key}.nii.gz" for key in ("moving_label", "displacement", "inverse_displacement")}


def test_written_displacement_keeps_the_spacing(tmp_path):
    folder = synthesize("brain_pairs", 532, cases=1, test_cases=0, raw=str(tmp_path),
                        options={"spacing_mm": 1.5, "shape": (12, 16, 12)})[0]
    _, spacing = read_image(folder / "extrasTr" / "case_0000_displacement.nii.gz")
    assert spacing == pytest.approx((1.5, 1.5, 1.5))
