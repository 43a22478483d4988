"""False positives on negative scans: scans whose reference has no foreground at all (BHSD Table 2, "FP").

Dice says nothing about a scan without a lesion (it is 0 for any prediction, NaN for an empty one), yet a detector
that paints bleeds into healthy heads is what adding negative training scans is meant to fix. The BHSD paper reports an
"FP rate" next to Dice without defining it, so we report three readings, per negative scan and averaged over them:

=================  ========================================================================================
key                meaning
=================  ========================================================================================
``fp_any``         1 if the prediction has any foreground voxel, else 0; its mean is the share of negative
                   scans with a false alarm (the headline ``fp`` of ``bhsd.json``)
``fp_ml``          predicted foreground volume in millilitres (voxel count x voxel volume / 1000)
``fp_components``  number of predicted connected components (full connectivity: 26 in 3D, 8 in 2D), i.e.
                   false-positive "findings" a reader would have to dismiss
=================  ========================================================================================

Every nonzero predicted label counts; the labels are not told apart, because on a negative scan each one is wrong.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

#: Per-scan keys of :func:`negative_scan_false_positives`, in report order.
FP_KEYS = ("fp_any", "fp_ml", "fp_components")


def negative_scan_false_positives(prediction: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """False-positive figures of one prediction of a scan without foreground (module docstring)."""
    if len(spacing) != prediction.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {prediction.ndim}D prediction")
    foreground = np.asarray(prediction) != 0
    voxels = int(foreground.sum())
    structure = ndimage.generate_binary_structure(foreground.ndim, foreground.ndim)
    _, components = ndimage.label(foreground, structure=structure)
    return {"fp_any": float(voxels > 0), "fp_ml": voxels * float(np.prod(spacing)) / 1000.0,
            "fp_components": float(components), "fp_voxels": float(voxels)}


def summarize_false_positives(per_case: Mapping[str, Mapping[str, float]]) -> dict:
    """Means over the negative scans (NaN when there are none), with the per-case figures."""
    means = {f"mean_{key}": float(np.mean([case[key] for case in per_case.values()])) if per_case else math.nan
             for key in FP_KEYS}
    return {"n_cases": len(per_case), **means, "per_case": {name: dict(case) for name, case in per_case.items()}}
