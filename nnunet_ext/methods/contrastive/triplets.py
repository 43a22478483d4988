"""The paper's synthetic positive and negative samples (Sect. 2.1, Fig. 2a) for one preprocessed case.

With ``mirror`` the flip along the right-left axis (the midline is the centre plane of that axis of the given array)
and ``w`` the blend weight of the tumour (below), a case gives three patches:

- real (red): the image around the tumour, ``crop(image, W)`` with the window ``W`` of ``patch_size`` centred on the
  tumour's centre of mass;
- positive (pink, "the same tumour region with a different background"): the tumour mirrored into the contralateral
  breast, ``pos = (1 - mirror(w)) image + mirror(w) mirror(image)``, cropped at the mirror image of ``W``;
- negative (green, "the same background with fake normal tissue"): the tumour site overwritten with the mirrored
  normal tissue, ``neg = (1 - w) image + w mirror(image)``, cropped at ``W``.

Blend weight (the paper's Gaussian filter, "well embedded in the normal background"): the tumour mask ``label > 0``
is dilated by ``margin_vox`` (a ball), Gaussian filtered (``blend_sigma_vox``), divided by its smallest value on the
tumour and clipped to [0, 1]. The division is our addition: it makes ``w = 1`` on every tumour voxel, so the whole
tumour is pasted; without it a tumour a few sigma wide would be pasted at partial opacity (a one-voxel tumour at about
20%). Outside the tumour ``w`` falls smoothly to 0 within ``margin_vox`` + 4 sigma.

The mirrored window is the exact mirror image of ``W`` (start ``n - p - s`` along the right-left axis, ``n`` the
image's and ``p`` the patch's size there), so its centre is the mirrored centre of mass and the positive tumour mask
is the real one flipped. Windows are shifted to stay inside the image; along an axis where the image is smaller than
the patch, the image is centred in the patch and padded with the channel's minimum. Everything is computed on the
tumour's bounding box and the two windows, never on full-volume copies.

Cases that cannot give a clean triplet are skipped (:class:`Skip`): no tumour; a bilateral tumour (26-connected
components lying wholly on each side of the midline; the paper excludes bilateral cancers); a tumour that crosses the
midline (a voxel within ``margin_vox`` of the midline plane; this also covers the dilated mask overlapping its own
mirror image, since a ball dilation by ``margin_vox`` of a tumour farther than that from the midline stays on its
side).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

NO_TUMOUR = "no tumour"
BILATERAL = "bilateral"
CROSSES_MIDLINE = "crosses the midline"
SKIP_REASONS = (NO_TUMOUR, BILATERAL, CROSSES_MIDLINE)
GAUSSIAN_TRUNCATE = 4.0  # scipy's default: the kernel reaches int(4 sigma + 0.5) voxels


@dataclass
class Triplet:
    """The three patches of one case, float32 (C, *patch_size), and their tumour masks, bool (*patch_size).

    ``centre`` is the tumour's centre of mass (voxel, rounded) and ``mirrored_centre`` its mirror image; ``name`` is
    the case's name when built by :func:`build_triplets`. ``positive_mask`` is the pasted (mirrored) tumour, plus the
    real tumour where it falls inside the mirrored window; ``negative_mask`` is the tumour left after overwriting
    (empty for every case that is not skipped).
    """

    real: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    centre: tuple[int, int, int]
    mirrored_centre: tuple[int, int, int]
    real_mask: np.ndarray
    positive_mask: np.ndarray
    negative_mask: np.ndarray
    name: str = ""


@dataclass
class Skip:
    """A case that gives no triplet; ``reason`` is one of :data:`SKIP_REASONS`."""

    reason: str


class SkipCounts(dict):
    """Skipped cases per reason (``dict[str, int]``, every reason present), with their names in ``names``."""

    def __init__(self):
        super().__init__({reason: 0 for reason in SKIP_REASONS})
        self.names: dict[str, list[str]] = {reason: [] for reason in SKIP_REASONS}

    def add(self, reason: str, name: str) -> None:
        self[reason] = self.get(reason, 0) + 1
        self.names.setdefault(reason, []).append(name)


def _check_inputs(image: np.ndarray, label: np.ndarray, lr_axis: int, patch_size: Sequence[int]) -> np.ndarray:
    """The label as (X0, X1, X2) (a leading channel of 1, as nnU-Net stores segmentations, is dropped)."""
    image, label = np.asarray(image), np.asarray(label)
    if image.ndim != 4:
        raise ValueError(f"image must be (C, X0, X1, X2), got shape {image.shape}")
    if label.ndim == 4 and label.shape[0] == 1:
        label = label[0]
    if label.shape != image.shape[1:]:
        raise ValueError(f"label shape {label.shape} does not match the image's spatial shape {image.shape[1:]}")
    if lr_axis not in (0, 1, 2):
        raise ValueError(f"lr_axis must be a spatial axis 0, 1 or 2, got {lr_axis}")
    if len(patch_size) != 3 or min(patch_size) < 1:
        raise ValueError(f"patch_size must be 3 positive ints, got {patch_size}")
    return label


def _window_start(centre: Sequence[int], patch_size: Sequence[int], shape: Sequence[int]) -> list[int]:
    """Start of the ``patch_size`` window centred on ``centre``, shifted inside ``shape`` (centred padding where the
    image is smaller than the patch)."""
    start = []
    for c, p, n in zip(centre, patch_size, shape):
        start.append(min(max(c - p // 2, 0), n - p) if n >= p else (n - p) // 2)
    return start


def _crop(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill, offset: Sequence[int] = (0, 0, 0)):
    """The window ``[start, start + size)`` of the last three axes of ``array``, whose first voxel sits at ``offset``
    in image coordinates; positions outside ``array`` get ``fill`` (broadcast over the leading axes)."""
    out = np.empty(array.shape[:-3] + tuple(size), dtype=array.dtype)
    out[...] = fill
    source, target = [], []
    for axis in range(3):
        low = max(start[axis], offset[axis])
        high = min(start[axis] + size[axis], offset[axis] + array.shape[axis - 3])
        if high <= low:
            return out
        source.append(slice(low - offset[axis], high - offset[axis]))
        target.append(slice(low - start[axis], high - start[axis]))
    out[(Ellipsis, *target)] = array[(Ellipsis, *source)]
    return out


def _skip_reason(tumour_box: np.ndarray, box_start: Sequence[int], lr_axis: int, lr_size: int,
                 margin_vox: int) -> str | None:
    """BILATERAL, CROSSES_MIDLINE or None for the tumour mask of a bounding box starting at ``box_start``."""
    midline = (lr_size - 1) / 2.0
    components, _ = ndimage.label(tumour_box, structure=np.ones((3, 3, 3), dtype=bool))
    sides = set()
    for slices in ndimage.find_objects(components):
        low = slices[lr_axis].start + box_start[lr_axis]
        high = slices[lr_axis].stop - 1 + box_start[lr_axis]
        sides.add("left" if high < midline else "right" if low > midline else "both")
    if {"left", "right"} <= sides:
        return BILATERAL
    lr_coordinates = np.nonzero(tumour_box.any(axis=tuple(a for a in range(3) if a != lr_axis)))[0]
    distance = np.abs(lr_coordinates + box_start[lr_axis] - midline).min()
    if "both" in sides or distance <= margin_vox:
        return CROSSES_MIDLINE
    return None


def _blend_weight(tumour: np.ndarray, box_start: Sequence[int], box_stop: Sequence[int], blend_sigma_vox: float,
                  margin_vox: int) -> tuple[np.ndarray, list[int]]:
    """``w`` (float32) on the tumour's bounding box grown by its reach (``w = 0`` outside), and the region's start."""
    reach = int(margin_vox) + int(GAUSSIAN_TRUNCATE * blend_sigma_vox + 0.5) + 1
    start = [max(a - reach, 0) for a in box_start]
    stop = [min(b + reach, n) for b, n in zip(box_stop, tumour.shape)]
    region = tuple(slice(a, b) for a, b in zip(start, stop))
    mask = tumour[region]
    dilated = ndimage.distance_transform_edt(~mask) <= margin_vox if margin_vox > 0 else mask
    weight = dilated.astype(np.float32)
    if blend_sigma_vox > 0:
        weight = ndimage.gaussian_filter(weight, blend_sigma_vox, mode="nearest", truncate=GAUSSIAN_TRUNCATE)
    weight = np.clip(weight / weight[mask].min(), 0.0, 1.0)
    return weight.astype(np.float32), start


def make_triplet(image: np.ndarray, label: np.ndarray, lr_axis: int, patch_size: Sequence[int],
                 blend_sigma_vox: float = 2.0, margin_vox: int = 2) -> Triplet | Skip:
    """Real, positive and negative patch of one case (module docstring), or the reason to skip it.

    Args:
        image: (C, X0, X1, X2) preprocessed image.
        label: (X0, X1, X2) or (1, X0, X1, X2) integer segmentation; tumour is ``label > 0`` (nnU-Net's -1 outside
            the crop, like every negative value, is background).
        lr_axis: the spatial axis (0, 1 or 2) that runs right-left; the midline is its centre plane.
        patch_size: the patch's three sizes.
        blend_sigma_vox: sigma of the Gaussian blend, voxels.
        margin_vox: dilation of the tumour mask before blending, and the closest a tumour may come to the midline.
    """
    label = _check_inputs(image, label, lr_axis, patch_size)
    image = np.asarray(image)
    tumour = label > 0
    if not tumour.any():
        return Skip(NO_TUMOUR)
    box = ndimage.find_objects(tumour.view(np.uint8))[0]
    box_start, box_stop = [s.start for s in box], [s.stop for s in box]
    reason = _skip_reason(tumour[box], box_start, lr_axis, tumour.shape[lr_axis], margin_vox)
    if reason is not None:
        return Skip(reason)

    lr_size, patch_size = tumour.shape[lr_axis], tuple(int(p) for p in patch_size)
    centre = tuple(int(round(c + s)) for c, s in zip(ndimage.center_of_mass(tumour[box]), box_start))
    mirrored_centre = tuple(lr_size - 1 - c if axis == lr_axis else c for axis, c in enumerate(centre))
    start = _window_start(centre, patch_size, tumour.shape)
    mirrored_start = list(start)
    mirrored_start[lr_axis] = lr_size - patch_size[lr_axis] - start[lr_axis]

    fill = image.reshape(image.shape[0], -1).min(1).astype(np.float32).reshape(-1, 1, 1, 1)
    real = _crop(image, start, patch_size, fill).astype(np.float32, copy=False)
    opposite = _crop(image, mirrored_start, patch_size, fill).astype(np.float32, copy=False)
    weight_box, weight_start = _blend_weight(tumour, box_start, box_stop, blend_sigma_vox, margin_vox)
    weight = _crop(weight_box, start, patch_size, 0.0, weight_start)
    flip = lr_axis - 3  # the right-left axis of (C, *patch) and (*patch) arrays alike
    mirrored_weight = np.flip(weight, flip)
    positive = (1.0 - mirrored_weight) * opposite + mirrored_weight * np.flip(real, flip)
    negative = (1.0 - weight) * real + weight * np.flip(opposite, flip)

    real_mask = _crop(tumour, start, patch_size, False)
    opposite_mask = _crop(tumour, mirrored_start, patch_size, False)
    positive_mask = (np.flip(real_mask, flip) & (mirrored_weight >= 0.5)) | (opposite_mask & (mirrored_weight < 0.5))
    negative_mask = (real_mask & (weight < 0.5)) | (np.flip(opposite_mask, flip) & (weight >= 0.5))
    return Triplet(real=real, positive=np.ascontiguousarray(positive, dtype=np.float32),
                   negative=np.ascontiguousarray(negative, dtype=np.float32), centre=centre,
                   mirrored_centre=mirrored_centre, real_mask=real_mask,
                   positive_mask=np.ascontiguousarray(positive_mask), negative_mask=np.ascontiguousarray(negative_mask))


def build_triplets(cases: Iterable[tuple[str, np.ndarray, np.ndarray]], lr_axis: int, patch_size: Sequence[int],
                   blend_sigma_vox: float = 2.0, margin_vox: int = 2) -> tuple[list[Triplet], SkipCounts]:
    """:func:`make_triplet` over ``(name, image, label)`` cases: the triplets (named) and the skipped cases per reason
    (a :class:`SkipCounts`: counts, with the names in ``.names``)."""
    triplets, skipped = [], SkipCounts()
    for name, image, label in cases:
        result = make_triplet(image, label, lr_axis, patch_size, blend_sigma_vox, margin_vox)
        if isinstance(result, Skip):
            skipped.add(result.reason, name)
        else:
            result.name = name
            triplets.append(result)
    return triplets, skipped
