"""Synthetic triplets (Sect. 2.1, Fig. 2a) on a two-breast sphere phantom: real, positive and negative patches."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_ext.methods.contrastive import triplets as tr

SHAPE = (20, 18, 64)  # right-left along the last axis; midline plane at 31.5
LEFT, RIGHT, TUMOUR = 1.0, 2.0, 6.0  # background of each half and the tumour's intensity (channel 0)
THRESHOLD = (RIGHT + TUMOUR) / 2  # half the tumour/contralateral-background contrast
SPHERE = (10, 9, 18)
NUB = (slice(9, 12), slice(8, 11), slice(12, 15))  # makes the tumour asymmetric along right-left
RADIUS = 4
REACH = 2 + 8  # margin + int(4 sigma + 0.5): w = 0 farther than this from the tumour along an axis


def _phantom(centres=(SPHERE,), radius=RADIUS, nub=NUB):
    """Two half volumes of distinct textured intensity, spheres of tumour (and a nub), 2 channels; -1 on a border
    slab."""
    grid = np.indices(SHAPE).astype(np.float32)
    texture = 0.1 * np.sin(0.7 * grid[0] + 0.3 * grid[1] + 0.5 * grid[2])
    channel = np.where(grid[2] < SHAPE[2] / 2, LEFT, RIGHT) + texture
    label = np.zeros(SHAPE, dtype=np.int16)
    for centre in centres:
        label[sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2] = 1
    if nub is not None:
        label[nub] = 1
    channel[label > 0] = TUMOUR
    label[0] = -1  # nnU-Net's outside-the-crop mark: background
    return np.stack([channel, 2 * channel - 1]).astype(np.float32), label


def _window(volume, centre, size):
    """``volume[..., c - p // 2 : c - p // 2 + p]`` on the last three axes (the window of an interior centre)."""
    return volume[(Ellipsis, *(slice(c - p // 2, c - p // 2 + p) for c, p in zip(centre, size)))]


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _centre(label):
    return tuple(int(c) for c in np.round(np.argwhere(label > 0).mean(0)))


def _beyond_reach(label, lr_centre, size):
    """Right-left positions of the window centred on ``lr_centre`` where the blend weight is exactly 0."""
    lr = np.nonzero((label > 0).any((0, 1)))[0]
    positions = np.arange(size) + lr_centre - size // 2
    return (positions < lr.min() - REACH) | (positions > lr.max() + REACH)


PATCHES = [(13, 15, 33), (16, 16, 32)]


@pytest.mark.parametrize("patch_size", PATCHES)
def test_real_patch_contains_the_tumour(patch_size):
    image, label = _phantom()
    triplet = tr.make_triplet(image, label, lr_axis=2, patch_size=patch_size)
    assert isinstance(triplet, tr.Triplet)
    centre = _centre(label)
    assert triplet.centre == centre and triplet.mirrored_centre == (*centre[:2], 63 - centre[2])
    assert triplet.real.shape == triplet.positive.shape == triplet.negative.shape == (2, *patch_size)
    assert triplet.real.dtype == np.float32 and triplet.real_mask.shape == tuple(patch_size)
    np.testing.assert_array_equal(triplet.real, _window(image, centre, patch_size))
    np.testing.assert_array_equal(triplet.real_mask, _window(label > 0, centre, patch_size))
    assert triplet.real_mask.sum() == (label > 0).sum()
    assert (triplet.real[0][triplet.real_mask] == TUMOUR).all()


@pytest.mark.parametrize("patch_size", PATCHES)
def test_positive_patch_holds_the_mirrored_tumour(patch_size):
    """Positive sample: the tumour pasted at its mirror position on the contralateral (right) background."""
    image, label = _phantom()
    triplet = tr.make_triplet(image, label, lr_axis=2, patch_size=patch_size)
    mirrored_tumour = np.flip(triplet.real_mask, -1)
    pasted = triplet.positive[0] > THRESHOLD
    assert _dice(pasted, mirrored_tumour) > 0.95
    np.testing.assert_array_equal(triplet.positive_mask, mirrored_tumour)
    if all(p % 2 for p in patch_size):  # odd sizes: the window is centred on the mirrored centre, voxel exact
        expected = _window(np.flip(label > 0, -1), triplet.mirrored_centre, patch_size)
        assert _dice(pasted, expected) > 0.95 and expected.sum() == (label > 0).sum()
    # a convex blend of the contralateral tissue and the mirrored image (w in [0, 1]); away from the paste, untouched
    opposite = np.flip(_window(np.flip(image, -1), _centre(label), patch_size), -1)  # the image's mirrored window
    low = np.minimum(opposite, np.flip(triplet.real, -1))
    high = np.maximum(opposite, np.flip(triplet.real, -1))
    assert (triplet.positive >= low - 1e-6).all() and (triplet.positive <= high + 1e-6).all()
    far = np.flip(_beyond_reach(label, _centre(label)[2], patch_size[2]))
    assert far.any()
    np.testing.assert_array_equal(triplet.positive[..., far], opposite[..., far])


@pytest.mark.parametrize("patch_size", PATCHES)
def test_negative_patch_has_no_tumour(patch_size):
    """Negative sample: the tumour site overwritten with the mirrored normal tissue of the other breast."""
    image, label = _phantom()
    triplet = tr.make_triplet(image, label, lr_axis=2, patch_size=patch_size)
    assert not triplet.negative_mask.any()
    assert (triplet.negative[0] < THRESHOLD).all()
    site = triplet.real_mask
    mirrored_tissue = _window(np.flip(image, -1), _centre(label), patch_size)
    np.testing.assert_allclose(triplet.negative[:, site], mirrored_tissue[:, site], atol=1e-6)
    assert np.abs(triplet.negative[0][site] - RIGHT).max() <= 0.1 + 1e-6  # the right breast's tissue
    # beyond the blend's reach (margin + 4 sigma from the tumour) the negative is the real patch
    far = _beyond_reach(label, _centre(label)[2], patch_size[2])
    assert far.any()
    np.testing.assert_array_equal(triplet.negative[..., far], triplet.real[..., far])


@pytest.mark.parametrize("lr_axis, order", [(0, (2, 0, 1)), (1, (0, 2, 1))])
def test_other_right_left_axes_give_the_transposed_triplet(lr_axis, order):
    image, label = _phantom()
    patch_size = (13, 15, 33)
    reference = tr.make_triplet(image, label, lr_axis=2, patch_size=patch_size)
    moved = tr.make_triplet(image.transpose(0, *(a + 1 for a in order)), label.transpose(order), lr_axis=lr_axis,
                            patch_size=tuple(patch_size[a] for a in order))
    assert moved.centre == tuple(reference.centre[a] for a in order)
    assert moved.mirrored_centre == tuple(reference.mirrored_centre[a] for a in order)
    for field in ("real", "positive", "negative"):  # the separable Gaussian's axis order: float32 rounding
        expected = getattr(reference, field).transpose(0, *(a + 1 for a in order))
        np.testing.assert_allclose(getattr(moved, field), expected, rtol=0, atol=1e-5)
    for field in ("real_mask", "positive_mask", "negative_mask"):
        np.testing.assert_array_equal(getattr(moved, field), getattr(reference, field).transpose(order))


@pytest.mark.parametrize("centres, reason", [
    ((), tr.NO_TUMOUR),
    ((SPHERE, (10, 9, 45)), tr.BILATERAL),
    (((10, 9, 31),), tr.CROSSES_MIDLINE),  # straddles the midline plane
    (((10, 9, 26),), tr.CROSSES_MIDLINE),  # nearest voxel 30: 1.5 voxels from the midline, within the margin
])
def test_skips(centres, reason):
    image, label = _phantom(centres, nub=None)
    result = tr.make_triplet(image, label, lr_axis=2, patch_size=(8, 8, 8))
    assert result == tr.Skip(reason)


def test_tumour_just_beyond_the_margin_is_kept():
    image, label = _phantom(((10, 9, 25),), nub=None)  # nearest voxel 29: 2.5 voxels from the midline
    assert isinstance(tr.make_triplet(image, label, lr_axis=2, patch_size=(8, 8, 8), margin_vox=2), tr.Triplet)
    assert tr.make_triplet(image, label, lr_axis=2, patch_size=(8, 8, 8), margin_vox=3) == tr.Skip(tr.CROSSES_MIDLINE)


def test_patch_larger_than_the_image_is_padded_with_the_channel_minimum():
    image, label = _phantom()
    triplet = tr.make_triplet(image, label[None], lr_axis=2, patch_size=(24, 15, 33))  # 20 < 24 along axis 0
    for field in ("real", "positive", "negative"):
        patch = getattr(triplet, field)
        assert patch.shape == (2, 24, 15, 33)
        for c in range(2):
            assert (patch[c, :2] == image[c].min()).all() and (patch[c, -2:] == image[c].min()).all()
    assert triplet.real_mask.sum() == (label > 0).sum()


def test_build_triplets_counts_the_skipped_cases():
    good, bilateral, empty = _phantom(), _phantom((SPHERE, (10, 9, 45)), nub=None), _phantom((), nub=None)
    cases = [("a", *good), ("b", *bilateral), ("c", *empty), ("d", *good)]
    triplets, skipped = tr.build_triplets(cases, lr_axis=2, patch_size=(8, 8, 8))
    assert [t.name for t in triplets] == ["a", "d"]
    assert skipped == {tr.NO_TUMOUR: 1, tr.BILATERAL: 1, tr.CROSSES_MIDLINE: 0}
    assert skipped.names[tr.BILATERAL] == ["b"] and skipped.names[tr.NO_TUMOUR] == ["c"]


@pytest.mark.parametrize("kwargs, message", [
    ({"lr_axis": 3}, "lr_axis"),
    ({"patch_size": (8, 8)}, "patch_size"),
    ({"label": np.zeros((4, 4, 4))}, "label shape"),
])
def test_bad_inputs(kwargs, message):
    image, label = _phantom()
    arguments = {"image": image, "label": label, "lr_axis": 2, "patch_size": (8, 8, 8), **kwargs}
    with pytest.raises(ValueError, match=message):
        tr.make_triplet(**arguments)
