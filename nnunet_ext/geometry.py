"""Whether two SimpleITK images share one voxel grid, with a reason fit for a one-line error.

Used wherever two files of one case must line up voxel for voxel before their arrays are combined: the dataset
converters (phases, modalities and label maps of a case), HCNet's clustering inputs and the breast-mask
postprocess. ``nnunet-ext evaluate`` checks its reference/prediction pairs with tolerances relative to the voxel
size instead (:mod:`nnunet_ext.metrics.evaluate`), sharing :data:`DIRECTION_TOLERANCE`.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

#: Largest spacing or origin difference in mm: far below any MR/CT voxel size; absorbs the rounding of DICOM/NIfTI
#: header values.
GEOMETRY_TOLERANCE_MM = 0.01
#: Largest absolute difference of any direction-cosine entry (NIfTI stores orientation as a float32 quaternion).
DIRECTION_TOLERANCE = 1e-4


def fmt_vector(values: Iterable[float], digits: int = 4) -> str:
    """``(1.5, -2, 0.333)``: a vector for a one-line message (plain numbers, no numpy reprs)."""
    return "(" + ", ".join(f"{float(v):.{digits}g}" for v in values) + ")"


def geometry_mismatch(reference, image) -> str | None:
    """Why ``image`` is not on the voxel grid of ``reference`` (None when it is, within the tolerances)."""
    if image.GetDimension() != reference.GetDimension():
        return f"{image.GetDimension()}D instead of {reference.GetDimension()}D"
    if tuple(image.GetSize()) != tuple(reference.GetSize()):
        return f"size {tuple(image.GetSize())} instead of {tuple(reference.GetSize())}"
    spacing, ref_spacing = np.array(image.GetSpacing()), np.array(reference.GetSpacing())
    if np.any(np.abs(spacing - ref_spacing) > GEOMETRY_TOLERANCE_MM):
        return f"spacing {fmt_vector(spacing)} instead of {fmt_vector(ref_spacing)}"
    direction, ref_direction = np.array(image.GetDirection()), np.array(reference.GetDirection())
    if np.any(np.abs(direction - ref_direction) > DIRECTION_TOLERANCE):
        return f"direction {fmt_vector(direction, 3)} instead of {fmt_vector(ref_direction, 3)}"
    origin, ref_origin = np.array(image.GetOrigin()), np.array(reference.GetOrigin())
    if np.any(np.abs(origin - ref_origin) > GEOMETRY_TOLERANCE_MM):
        return f"origin {fmt_vector(origin, 6)} instead of {fmt_vector(ref_origin, 6)}"
    return None
