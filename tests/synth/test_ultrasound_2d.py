"""Tests of nnunet_ext.synth.ultrasound_2d: Rayleigh speckle, echogenicity order, shadowing, scenes, dataset write."""
import json
import math

import numpy as np
import pytest
from scipy import ndimage, stats

from nnunet_ext.errors import UserInputError
from nnunet_ext.synth import ultrasound_2d as us
from nnunet_ext.synth.cli import get_kind, synthesize


def _render(seed, **opts):
    return us.render_ultrasound(np.random.default_rng(seed), **opts)


@pytest.fixture(scope="module")
def fetal_heads():
    return [_render(seed) for seed in range(4)]


@pytest.fixture(scope="module")
def hearts():
    return [_render(seed, scene="cardiac") for seed in range(3)]


def test_same_seed_same_case_and_other_seed_differs():
    first, again, other = (us.make_case(np.random.default_rng(s)) for s in (3, 3, 4))
    assert np.array_equal(first.images[0], again.images[0]) and np.array_equal(first.label, again.label)
    assert first.spacing == again.spacing
    assert not np.array_equal(first.images[0], other.images[0])


@pytest.mark.parametrize("diffuse", [0.05, 0.5, 2.0])
def test_speckle_envelope_of_uniform_tissue_is_rayleigh(diffuse):
    envelope = us.speckle_envelope(np.random.default_rng(0), np.full((400, 300), diffuse)).ravel()
    assert envelope.mean() == pytest.approx(diffuse * math.sqrt(math.pi) / 2, rel=0.03)
    # Rayleigh: E[A^2] / E[A]^2 = 4 / pi, whatever the scale
    assert (envelope ** 2).mean() / envelope.mean() ** 2 == pytest.approx(4 / math.pi, rel=0.02)
    rayleigh = stats.rayleigh(scale=math.sqrt((envelope ** 2).mean() / 2))
    assert stats.kstest(envelope, rayleigh.cdf).statistic < 0.02
    assert stats.kstest(envelope, stats.norm(envelope.mean(), envelope.std()).cdf).statistic > 0.03


def test_image_is_log_compressed_bytes_inside_a_fan(fetal_heads):
    for result in fetal_heads:
        image = result.image
        assert image.shape == us.DEFAULT_SHAPE and image.dtype == np.float32
        assert image.min() >= 0 and image.max() <= 255 and np.array_equal(image, np.round(image))
        assert not image[~result.fan].any() and not result.label[~result.fan].any()
        assert not result.fan[0, 0] and not result.fan[0, -1]  # sector, not a rectangle
        assert image[result.fan].max() == 255 and np.median(image[result.fan]) < 128
        assert result.spacing[0] == result.spacing[1]


def test_echogenicity_order_before_compression(fetal_heads, hearts):
    def median_envelope(result, tissue):
        return np.median(result.envelope[result.beam_tissue == tissue])
    for result in fetal_heads:
        assert (median_envelope(result, us.FLUID) < median_envelope(result, us.BRAIN)
                < median_envelope(result, us.SKULL))
    for result in hearts:
        assert median_envelope(result, us.BLOOD) < 0.3 * median_envelope(result, us.MYOCARDIUM)


def test_skull_casts_an_acoustic_shadow(fetal_heads):
    for result in fetal_heads:
        n_depth, n_lines = result.beam_tissue.shape
        crossings = 0
        for line in range(n_lines):
            skull = np.flatnonzero(result.beam_tissue[:, line] == us.SKULL)
            if skull.size == 0:
                continue
            gaps = np.flatnonzero(np.diff(skull) > 1)
            start, end = skull[0], (skull[gaps[0]] if gaps.size else skull[-1])  # first (near) skull wall
            if start == 0 or end + 1 >= n_depth:
                continue
            jump = result.loss_db[end + 1, line] - result.loss_db[start - 1, line]
            assert jump >= 8.0  # >= 2 x 4 dB one-way loss through the wall
            crossings += 1
        assert crossings > 10


def test_fetal_head_label_is_an_ellipse_with_plausible_circumference(fetal_heads):
    for result in fetal_heads:
        head = result.label == 1
        assert set(np.unique(result.label)) == {0, 1}
        assert ndimage.label(head)[1] == 1
        fan_border = ndimage.binary_dilation(~result.fan) & result.fan
        assert not (head & fan_border).any()  # the whole head is in view, as in HC18
        rows, cols = np.nonzero(head)
        eigenvalues = np.linalg.eigvalsh(np.cov(np.stack([rows, cols])))
        b, a = 2 * np.sqrt(eigenvalues)  # semi-axes of a filled ellipse from its second moments
        circumference = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b))) * result.spacing[0]
        assert 70 <= circumference <= 360 and 0.65 <= b / a <= 0.95
        rim = head & ~ndimage.binary_erosion(head, iterations=2)
        interior = ndimage.binary_erosion(head, iterations=5)
        assert result.image[rim].mean() > result.image[interior].mean()


def test_pixel_size_follows_head_size(fetal_heads):
    assert len({result.spacing for result in fetal_heads}) == len(fetal_heads)
    for result in fetal_heads:
        width_share = np.ptp(np.flatnonzero(result.label.any(axis=0))) / result.label.shape[1]
        assert 0.3 <= width_share <= 0.8


def test_cardiac_scene_labels_and_anatomy(hearts):
    assert us.labels_for_scene("cardiac") == us.CARDIAC_LABELS
    for result in hearts:
        label, image = result.label, result.image
        assert set(np.unique(label)) == set(us.CARDIAC_LABELS.values())
        cavity, myocardium, atrium = (label == k for k in (1, 2, 3))
        assert image[cavity].mean() < image[myocardium].mean()
        assert image[atrium].mean() < image[myocardium].mean()
        rows = np.indices(label.shape)[0]
        assert rows[atrium].mean() > rows[cavity].mean()  # atrium below the ventricle (further from the probe)
        border = ndimage.binary_dilation(cavity) & ~cavity
        assert np.mean(myocardium[border]) > 0.6  # the wall surrounds the cavity except at the mitral plane


def test_custom_shape():
    result = _render(0, shape=(64, 80))
    assert result.image.shape == result.label.shape == (64, 80)


@pytest.mark.parametrize("opts", [{"shape": (8, 128, 160)}, {"scene": "liver"}, {"shape": (128, 4)},
                                  {"speed": 1540}], ids=["shape_3d", "scene", "too_small", "unknown_option"])
def test_bad_options_are_user_input_errors(opts):
    with pytest.raises(UserInputError, match=f"ultrasound_2d: .*{next(iter(opts))}"):
        get_kind("ultrasound_2d").validate_options(opts)


def test_cardiac_scene_through_the_cli_writes_cardiac_labels(tmp_path):
    """--option scene=cardiac selects the scene and its labels; nnU-Net's integrity check passes."""
    import json

    from nnunet_ext.cli import main
    from nnunet_ext.synth.ultrasound_2d import CARDIAC_LABELS

    assert main(["synth", "ultrasound_2d", "-d", "61", "--cases", "2", "--test_cases", "0", "--raw", str(tmp_path),
                 "--option", "scene=cardiac"]) == 0
    folder = tmp_path / "Dataset061_Ultrasound2D"
    assert json.loads((folder / "dataset.json").read_text())["labels"] == CARDIAC_LABELS
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(str(folder), num_processes=1)
