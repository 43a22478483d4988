"""Overlap and surface-distance metrics of binary segmentation masks, in millimetres (numpy + scipy only).

Overlap metrics follow Taha & Hanbury, "Metrics for evaluating 3D medical image segmentation", BMC Med. Imaging
15:29 (2015), Sec. "Spatial overlap based metrics", from the confusion counts TP, FP, FN, TN:

    Dice = 2 TP / (2 TP + FP + FN)      IoU = TP / (TP + FP + FN)
    PPV  = TP / (TP + FP)               SEN = TP / (TP + FN)

Surface distances (Heimann et al., IEEE TMI 28(8), 2009, Sec. III-B) use the surface S(M) of a mask M, taken as the
mask voxels removed by one binary erosion, ``S(M) = M XOR erode(M)``, with the image outside the array counting as
background. ``d(x, S)`` is the Euclidean distance in mm (voxel centres scaled by the spacing) from voxel ``x`` to the
nearest voxel of S, computed exactly with ``scipy.ndimage.distance_transform_edt(sampling=spacing)``.
With ``D_pr = {d(p, S(R)) : p in S(P)}`` and ``D_rp = {d(r, S(P)) : r in S(R)}`` for prediction P and reference R:

    HD95 = max(percentile_95(D_pr), percentile_95(D_rp))
    ASD  = mean(D_pr ∪ D_rp) = (sum D_pr + sum D_rp) / (|S(P)| + |S(R)|)

These are MONAI's conventions (``compute_hausdorff_distance(percentile=95)``: maximum of the two *directed* 95th
percentiles, linear interpolation; ``compute_average_surface_distance(symmetric=True)``: mean of the pooled
distances) and, with the default ``connectivity=1``, MONAI's surface too (scipy's default face-connected erosion),
so numbers are directly comparable with MONAI, medpy and the DeepMind ``surface-distance`` package. Note that medpy's
``hd95`` instead takes the percentile of the pooled set, ``percentile_95(D_pr ∪ D_rp)`` (:func:`pooled_hd95`, used
for the region metrics below); on irregular shapes the two differ slightly.
``connectivity=ndim`` erodes with the full (26-/8-neighbour) structuring element, which gives a thicker surface.

Empty masks (R = reference, P = prediction). NaN means "undefined": it is skipped by the ``nanmean`` of
``nnunet-ext evaluate``. Infinite distances are reported as NaN because JSON cannot hold them.

    ===================  ======  ======  ======  ======  ======  ======
    case                 Dice    IoU     PPV     SEN     HD95    ASD
    ===================  ======  ======  ======  ======  ======  ======
    R empty, P empty     NaN     NaN     NaN     NaN     0.0     0.0
    R full,  P empty     0.0     0.0     NaN     0.0     NaN     NaN
    R empty, P full      0.0     0.0     0.0     NaN     NaN     NaN
    ===================  ======  ======  ======  ======  ======  ======

Dice/IoU NaN for two empty masks is nnU-Net's convention (``evaluate_predictions.compute_metrics``). For two empty
masks MONAI returns NaN distances; here they are 0.0 (both surfaces are empty, so they agree perfectly).

Undefined distances and means: a NaN HD95/ASD is skipped by a NaN-ignoring mean, so a missed lesion would *improve*
the mean HD95. ``nnunet-ext evaluate`` therefore reports, next to every HD95/ASD mean, how many cases were undefined
(exactly one mask empty), and offers a documented penalty instead of NaN: ``undefined_distance`` = the image
diagonal in mm (:func:`image_diagonal_mm`), the largest distance two voxels of the image can have, which is what
``--distance_penalty diagonal`` uses.

Regions (:func:`region_metrics`): a region is a set of label values, evaluated as the binary mask "label map value in
the set" (nnU-Net's ``region_or_label_to_mask``); the BraTS regions on labels 1 NCR, 2 ED, 3 ET are
WT = {1, 2, 3}, TC = {1, 3}, ET = {3} (:data:`BRATS_REGIONS`). Per region, Dice and :func:`pooled_hd95` with the
BraTS rule for empty masks, so every value is defined: both empty -> Dice 1, HD95 0 mm; exactly one empty ->
Dice 0, HD95 :data:`BRATS_EMPTY_HD95_MM` (373.13 mm, the BraTS worst case).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

#: Keys of each per-label result of :func:`compute_case_metrics`, in report order.
METRIC_NAMES = ("Dice", "IoU", "PPV", "SEN", "HD95", "ASD", "TP", "FP", "FN", "TN", "n_pred", "n_ref")
#: Keys of each per-region result of :func:`region_metrics`.
REGION_METRIC_NAMES = ("Dice", "HD95")
#: The BraTS tumour regions on labels 1 NCR (necrosis), 2 ED (oedema), 3 ET (enhancing tumour).
BRATS_REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
#: HD95 in mm of a region present in exactly one of reference and prediction: the BraTS worst-case value.
BRATS_EMPTY_HD95_MM = 373.13


def _ratio(numerator: int, denominator: int) -> float:
    return float(numerator) / float(denominator) if denominator > 0 else math.nan


def confusion_counts(reference: np.ndarray, prediction: np.ndarray) -> tuple[int, int, int, int]:
    """Voxel counts (TP, FP, FN, TN) of two binary masks of the same shape."""
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    tp = int(np.count_nonzero(reference & prediction))
    fp = int(np.count_nonzero(prediction)) - tp
    fn = int(np.count_nonzero(reference)) - tp
    tn = reference.size - tp - fp - fn
    return tp, fp, fn, tn


def dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Dice similarity coefficient ``2 TP / (2 TP + FP + FN)``; NaN when both masks are empty."""
    tp, fp, fn, _ = confusion_counts(reference, prediction)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def jaccard(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Jaccard index / IoU ``TP / (TP + FP + FN)``; NaN when both masks are empty."""
    tp, fp, fn, _ = confusion_counts(reference, prediction)
    return _ratio(tp, tp + fp + fn)


def precision(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Precision / positive predictive value ``TP / (TP + FP)``; NaN when the prediction is empty."""
    tp, fp, _, _ = confusion_counts(reference, prediction)
    return _ratio(tp, tp + fp)


def sensitivity(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Sensitivity / recall ``TP / (TP + FN)``; NaN when the reference is empty."""
    tp, _, fn, _ = confusion_counts(reference, prediction)
    return _ratio(tp, tp + fn)


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim:
        raise ValueError(f"spacing {spacing} does not match masks of {ndim} dimensions")
    if not all(s > 0 and math.isfinite(s) for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return spacing


def surface_voxels(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Surface of a binary mask: its voxels that one binary erosion removes (``mask XOR erode(mask)``).

    Args:
        mask: binary mask, any number of dimensions.
        connectivity: erosion structuring element as in ``scipy.ndimage.generate_binary_structure``: 1 = face
            neighbours (MONAI's default), ``mask.ndim`` = full neighbourhood. Outside the array counts as background,
            so mask voxels on the array border are surface voxels.
    """
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop_to_union(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union plus a one-voxel background margin.

    The margin keeps erosion identical to that of the full array (outside is background either way), and all surface
    voxels lie inside the box, so the distance transform of the crop is exact while costing far less.
    """
    coords = np.argwhere(reference | prediction)
    low = coords.min(axis=0)
    high = coords.max(axis=0) + 1
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    return np.pad(reference[box], 1), np.pad(prediction[box], 1)


def surface_distances(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                      connectivity: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between two non-empty binary masks.

    Args:
        reference: binary reference mask R.
        prediction: binary predicted mask P, same shape.
        spacing: voxel size in mm per array axis (e.g. (z, y, x)); anisotropic spacing is fine.
        connectivity: surface definition, see :func:`surface_voxels`.

    Returns:
        ``(pred_to_ref, ref_to_pred)``: for each surface voxel of P the distance to the nearest surface voxel of R,
        and vice versa (1-D float64 arrays).
    """
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    if reference.shape != prediction.shape:
        raise ValueError(f"mask shapes differ: reference {reference.shape}, prediction {prediction.shape}")
    spacing = _check_spacing(spacing, reference.ndim)
    if not reference.any() or not prediction.any():
        raise ValueError("surface distances need two non-empty masks")
    reference, prediction = _crop_to_union(reference, prediction)
    surface_ref = surface_voxels(reference, connectivity)
    surface_pred = surface_voxels(prediction, connectivity)
    # EDT gives, at every voxel, the distance to the nearest zero: zeros placed on one surface
    distance_to_ref = ndimage.distance_transform_edt(~surface_ref, sampling=spacing)
    distance_to_pred = ndimage.distance_transform_edt(~surface_pred, sampling=spacing)
    return distance_to_ref[surface_pred], distance_to_pred[surface_ref]


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Distance in mm between the centres of two opposite corner voxels: the largest distance within the image,
    used as the penalty for an undefined HD95/ASD."""
    spacing = _check_spacing(spacing, len(shape))
    return float(math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, spacing))))


def _distance_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                      connectivity: int, undefined_distance: float | None = None) -> tuple[float, float]:
    """(HD95, ASD) with the empty-mask conventions of the module docstring."""
    has_ref, has_pred = bool(reference.any()), bool(prediction.any())
    if not has_ref and not has_pred:
        return 0.0, 0.0
    if has_ref != has_pred:
        # infinite distance: NaN (JSON has no inf), or the caller's penalty
        value = math.nan if undefined_distance is None else float(undefined_distance)
        return value, value
    pred_to_ref, ref_to_pred = surface_distances(reference, prediction, spacing, connectivity)
    hd95 = max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95))
    asd = (pred_to_ref.sum() + ref_to_pred.sum()) / (pred_to_ref.size + ref_to_pred.size)
    return float(hd95), float(asd)


def hd95(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float], connectivity: int = 1) -> float:
    """95th-percentile Hausdorff distance in mm: the larger of the two directed 95th percentiles (MONAI's).

    0.0 when both masks are empty, NaN when exactly one is empty.
    """
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    _check_spacing(spacing, reference.ndim)
    return _distance_metrics(reference, prediction, spacing, connectivity)[0]


def pooled_hd95(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                connectivity: int = 1) -> float:
    """95th percentile in mm of the pooled surface distances, ``percentile_95(D_pr ∪ D_rp)`` (medpy's ``hd95``).

    Linear interpolation between order statistics (numpy's default, as medpy). 0.0 when both masks are empty, NaN
    when exactly one is empty.
    """
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    _check_spacing(spacing, reference.ndim)
    has_ref, has_pred = bool(reference.any()), bool(prediction.any())
    if not has_ref or not has_pred:
        return math.nan if has_ref or has_pred else 0.0
    pred_to_ref, ref_to_pred = surface_distances(reference, prediction, spacing, connectivity)
    return float(np.percentile(np.concatenate([pred_to_ref, ref_to_pred]), 95))


def average_symmetric_surface_distance(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                                       connectivity: int = 1) -> float:
    """Average symmetric surface distance in mm: mean over both surfaces' distances pooled (Heimann et al. 2009).

    0.0 when both masks are empty, NaN when exactly one is empty.
    """
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    _check_spacing(spacing, reference.ndim)
    return _distance_metrics(reference, prediction, spacing, connectivity)[1]


def empty_label_metrics(n_voxels: int) -> dict:
    """Metrics of a label absent from both reference and prediction of an image with ``n_voxels`` voxels."""
    return {"Dice": math.nan, "IoU": math.nan, "PPV": math.nan, "SEN": math.nan, "HD95": 0.0, "ASD": 0.0,
            "TP": 0, "FP": 0, "FN": 0, "TN": int(n_voxels), "n_pred": 0, "n_ref": 0}


def binary_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                   connectivity: int = 1, undefined_distance: float | None = None) -> dict:
    """All metrics of :data:`METRIC_NAMES` for one pair of binary masks (distances in mm).

    ``undefined_distance``: HD95/ASD when exactly one mask is empty (default NaN; see the module docstring)."""
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    if reference.shape != prediction.shape:
        raise ValueError(f"mask shapes differ: reference {reference.shape}, prediction {prediction.shape}")
    _check_spacing(spacing, reference.ndim)
    tp, fp, fn, tn = confusion_counts(reference, prediction)
    if tp + fp + fn == 0:
        return empty_label_metrics(reference.size)
    hd, asd = _distance_metrics(reference, prediction, spacing, connectivity, undefined_distance)
    return {"Dice": _ratio(2 * tp, 2 * tp + fp + fn), "IoU": _ratio(tp, tp + fp + fn),
            "PPV": _ratio(tp, tp + fp), "SEN": _ratio(tp, tp + fn), "HD95": hd, "ASD": asd,
            "TP": tp, "FP": fp, "FN": fn, "TN": tn, "n_pred": tp + fp, "n_ref": tp + fn}


def compute_case_metrics(reference: np.ndarray, prediction: np.ndarray, labels: Sequence[int],
                         spacing: Sequence[float], connectivity: int = 1,
                         undefined_distance: float | None = None) -> dict[int, dict]:
    """Per-label metrics of one case, as nnU-Net's ``compute_metrics`` plus PPV, SEN, HD95 and ASD.

    Args:
        reference: reference label map, (z, y, x) or (y, x).
        prediction: predicted label map of the same shape.
        labels: label values to evaluate; each is compared as the binary mask ``map == label``.
        spacing: voxel size in mm in the array's axis order.
        connectivity: surface definition, see :func:`surface_voxels`.
        undefined_distance: HD95/ASD of a label whose reference or prediction (not both) is empty; default NaN.

    Returns:
        ``{label: {"Dice", "IoU", "PPV", "SEN", "HD95", "ASD", "TP", "FP", "FN", "TN", "n_pred", "n_ref"}}``.
    """
    reference = np.asarray(reference)
    prediction = np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"label map shapes differ: reference {reference.shape}, prediction {prediction.shape}")
    return {int(label): binary_metrics(reference == label, prediction == label, spacing, connectivity,
                                       undefined_distance) for label in labels}


def region_metrics(reference: np.ndarray, prediction: np.ndarray, regions: Mapping[str, Sequence[int]],
                   spacing: Sequence[float], connectivity: int = 1) -> dict[str, dict[str, float]]:
    """Dice and :func:`pooled_hd95` (mm) per region of one case, with the BraTS rule for empty masks.

    Args:
        reference: reference label map, (z, y, x) or (y, x).
        prediction: predicted label map of the same shape.
        regions: ``{name: label values}``; a region is the mask of voxels holding any of its values (e.g.
            :data:`BRATS_REGIONS`).
        spacing: voxel size in mm in the array's axis order.
        connectivity: surface definition, see :func:`surface_voxels`.

    Returns:
        ``{name: {"Dice", "HD95"}}``. Both masks empty: Dice 1.0, HD95 0.0; exactly one empty: Dice 0.0, HD95
        :data:`BRATS_EMPTY_HD95_MM`; so every value is finite.
    """
    reference = np.asarray(reference)
    prediction = np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"label map shapes differ: reference {reference.shape}, prediction {prediction.shape}")
    _check_spacing(spacing, reference.ndim)
    result = {}
    for name, labels in regions.items():
        reference_mask = np.isin(reference, list(labels))
        prediction_mask = np.isin(prediction, list(labels))
        has_ref, has_pred = bool(reference_mask.any()), bool(prediction_mask.any())
        if has_ref and has_pred:
            result[name] = {"Dice": dice(reference_mask, prediction_mask),
                            "HD95": pooled_hd95(reference_mask, prediction_mask, spacing, connectivity)}
        elif has_ref or has_pred:
            result[name] = {"Dice": 0.0, "HD95": BRATS_EMPTY_HD95_MM}
        else:
            result[name] = {"Dice": 1.0, "HD95": 0.0}
    return result


def distance_undefined(metrics: dict) -> bool:
    """True if exactly one of the two masks behind a per-label result was empty (HD95/ASD undefined)."""
    return (metrics["n_ref"] == 0) != (metrics["n_pred"] == 0)


def largest_object_outline(mask: np.ndarray) -> np.ndarray:
    """The outer boundary of the largest 4-connected object of a 2D mask: ``(K, 2)`` ``(x, y)`` points (x = column).

    The boundary is the 0.5 iso-line of the mask (``skimage.measure.find_contours``), which runs through the midpoints
    between object and background pixel centres, so filling the polygon gives the object back; holes are ignored.
    The mask is padded so objects touching the border still give a closed line. Raises ValueError for an empty or
    non-2D mask.
    """
    from skimage import measure

    mask = np.asarray(mask) > 0
    if mask.ndim != 2:
        raise ValueError(f"a 2D mask is needed, got shape {mask.shape}")
    components, count = measure.label(mask, return_num=True, connectivity=1)
    if count == 0:
        raise ValueError("the mask is empty")
    largest = components == (int(np.argmax(np.bincount(components.ravel())[1:])) + 1)
    lines = measure.find_contours(np.pad(largest, 1).astype(np.float32), 0.5)
    rows_cols = max(lines, key=len)[:-1] - 1  # find_contours repeats the first point to close the line
    return rows_cols[:, ::-1]
