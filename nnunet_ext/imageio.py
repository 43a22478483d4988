"""Image reading/writing in nnU-Net's array convention: numpy arrays are (z, y, x), spacing is (z, y, x) in mm.

SimpleITK stores spacing as (x, y, z); these helpers do the reversal in one place. 2D images are arrays of shape
(y, x) with spacing (y, x).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_ext.errors import UserInputError


def write_image(path: str | Path, array: np.ndarray, spacing: Sequence[float],
                origin: Sequence[float] | None = None, is_vector: bool = False) -> None:
    """Write ``array`` (z, y, x) or (y, x) with ``spacing`` in the same axis order.

    ``is_vector``: the last axis holds vector components (e.g. a (z, y, x, 3) displacement field).
    """
    import SimpleITK as sitk

    spatial_ndim = array.ndim - 1 if is_vector else array.ndim
    if len(spacing) != spatial_ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match an array of {spatial_ndim} spatial dimensions")
    img = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=is_vector)
    img.SetSpacing([float(s) for s in reversed(spacing)])
    if origin is not None:
        img.SetOrigin([float(o) for o in reversed(origin)])
    sitk.WriteImage(img, str(path), useCompression=True)


def sitk_error_reason(exc: RuntimeError) -> str:
    """SimpleITK's multi-line exception text as one readable clause (for one-line errors)."""
    message = str(exc)
    if "Unable to determine ImageIO reader" in message:
        return "not an image file SimpleITK can read (unknown format or damaged header)"
    lines = [" ".join(line.split()) for line in message.splitlines() if line.strip()]
    lines = [line.split("ERROR: ", 1)[1] if "ERROR: " in line else line for line in lines
             if not line.startswith("Exception thrown")]
    return " ".join(lines) or "unreadable"


def read_sitk_image(path: str | Path, what: str = "image", shown_as: str | Path | None = None):
    """The SimpleITK image at ``path`` (geometry included). A missing, unreadable or truncated file is a one-line
    UserInputError naming ``what`` and ``shown_as`` (default ``path``; e.g. the user's file for a renamed copy)."""
    import SimpleITK as sitk

    path = Path(path)
    shown = shown_as if shown_as is not None else path
    if not path.is_file():
        raise UserInputError(f"missing file: {shown}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise UserInputError(f"cannot read {what} {shown}: {sitk_error_reason(exc)}") from None
    try:  # SimpleITK zero-fills a truncated .nii.gz without an error
        check_gzip_complete(path)
    except UserInputError:
        raise UserInputError(f"cannot read {what} {shown}: truncated or corrupt gzip data") from None
    return image


def read_image(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read an image as (array (z, y, x), spacing (z, y, x)); a missing or unreadable file is a UserInputError."""
    import SimpleITK as sitk

    img = read_sitk_image(path)
    return sitk.GetArrayFromImage(img), tuple(float(s) for s in reversed(img.GetSpacing()))


def check_gzip_complete(path: str | Path) -> None:
    """SimpleITK reads a truncated ``.gz`` image without complaint (the missing voxels become 0), so the gzip stream
    is read to its end here: a cut or damaged file raises UserInputError instead of giving silently wrong data."""
    import gzip
    import zlib

    path = Path(path)
    if not path.name.endswith(".gz"):
        return
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise UserInputError(f"cannot read image {path}: truncated or corrupt gzip data ({exc})") from None


def nifti_nan_count(path: str | Path) -> int:
    """NaN voxels stored in a NIfTI file: SimpleITK's NIfTI reader returns them as 0, so they are counted in the raw
    file data (nibabel, an nnU-Net dependency). Integer files hold no NaN; a file nibabel cannot parse (SimpleITK
    already read it) gets no verdict (0)."""
    import nibabel

    try:
        image = nibabel.load(str(path))
        if not np.issubdtype(image.get_data_dtype(), np.floating):
            return 0
        return int(np.isnan(np.asanyarray(image.dataobj)).sum())
    except Exception:  # noqa: BLE001 - a second look at a file SimpleITK already read
        return 0
