"""What the 2D converters share: reading one 2D frame with SimpleITK (camus, image_folder_2d), reading one grey DICOM
mammogram, and the area-averaging ``--max-size`` downsampling of whole mammograms (cbis_ddsm, inbreast)."""
from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import nifti_nan_count


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[Callable[[], str]]:
    """Yield a function returning what C++ code wrote to file descriptor 2 inside the block.

    ITK's MetaImage library reports a truncated ``.raw`` file by printing to the process's stderr directly, around
    Python's ``sys.stderr``; caught here, it becomes part of the one-line error instead of extra lines on the terminal.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (an embedding host): nothing to capture
        saved = None
    if saved is None:
        yield lambda: ""
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)

        def captured() -> str:
            sink.seek(0)
            return sink.read().decode(errors="replace")

        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _reason(message: str, native: str) -> str:
    """The informative part of an ITK read error: the library's own report if it printed one, else the ITK line."""
    if native.strip():
        return "; ".join(" ".join(line.split()) for line in native.splitlines() if line.strip())
    if "Unable to determine ImageIO reader" in message:  # the path it quotes is in our message already
        return "not an image file SimpleITK can read (unknown format or damaged header)"
    lines = [" ".join(line.split()) for line in message.splitlines() if line.strip()]
    useful = [line.split("ERROR: ", 1)[1] if "ERROR: " in line else line for line in lines
              if not line.startswith("Exception thrown")]
    # "MetaImageIO(0x55d0...): File cannot be read" -> "File cannot be read"
    useful = [line.split("): ", 1)[1] if "(0x" in line.split("): ", 1)[0] else line for line in useful]
    return " ".join(useful) or "unreadable"


def read_sitk_2d(path: Path, what: str = "image") -> tuple[np.ndarray, tuple[float, float]]:
    """``(array (y, x), spacing (y, x) in mm)`` of a 2D image file read with SimpleITK.

    A 3D file holding a single slice (size x * y * 1, as CAMUS's ``.mhd`` files are) is that slice. Unreadable or
    truncated files, several slices, several components per pixel (RGB) and NaN values are a UserInputError naming
    the file (``what`` says which role it plays: image, mask, segmentation).
    """
    import SimpleITK as sitk

    from nnunet_ext.imageio import check_gzip_complete

    with _native_stderr_captured() as native:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise UserInputError(f"cannot read {what} {path}: {_reason(str(exc), native())}") from None
    try:  # SimpleITK zero-fills a truncated .nii.gz without an error
        check_gzip_complete(path)
    except UserInputError:
        raise UserInputError(f"cannot read {what} {path}: truncated or corrupt gzip data") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UserInputError(f"{what} {path} has {image.GetNumberOfComponentsPerPixel()} components per pixel; "
                             f"expected a scalar (grayscale) image")
    size = image.GetSize()
    if not (len(size) == 2 or (len(size) == 3 and size[2] == 1)):
        raise UserInputError(f"{what} {path} is {'x'.join(map(str, size))}; expected a 2D image (or one slice)")
    array = sitk.GetArrayFromImage(image).reshape(size[1], size[0])
    spacing = image.GetSpacing()
    nan = nifti_nan_count(path) if path.name.lower().endswith((".nii", ".nii.gz")) else None
    if nan is None and np.issubdtype(array.dtype, np.floating):
        nan = int(np.isnan(array).sum())
    if nan:
        raise UserInputError(f"{what} {path} contains {nan} NaN pixel(s)")
    return array, (float(spacing[1]), float(spacing[0]))


def shape_text(shape: tuple[int, ...]) -> str:
    """``"80x54"`` (width x height) for an array of shape (54, 80), as image viewers print sizes."""
    return f"{shape[1]}x{shape[0]}"


def spacing_text(spacing: tuple[float, float]) -> str:
    """``"0.3 x 0.15"`` (x then y, as :func:`shape_text`) for a (y, x) spacing."""
    return f"{spacing[1]:g} x {spacing[0]:g}"


# ----------------------------------------------------------------------------------------------------------------------
# --max-size: area-averaging downsampling (cbis_ddsm, inbreast)


def check_max_size(max_size: int) -> int:
    """``max_size`` itself when it is 0 (full resolution) or a positive number of pixels, else a UserInputError."""
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
        raise UserInputError(f"--max-size must be 0 (full resolution) or a positive number of pixels, got "
                             f"{max_size!r}")
    return max_size


def output_shape(shape: tuple[int, int], max_size: int) -> tuple[int, int]:
    """The written shape: ``shape`` itself when its long side fits (or ``max_size`` is 0), else scaled so that its long
    side is ``max_size``, aspect kept.

    Each side ``n`` becomes ``max(1, min(max_size, floor(n * max_size / max(shape) + 0.5)))`` (halves round up).
    """
    longest = max(shape)
    if max_size == 0 or longest <= max_size:
        return tuple(shape)
    return tuple(max(1, min(max_size, int(math.floor(n * max_size / longest + 0.5)))) for n in shape)


def area_weights(n_in: int, n_out: int):
    """Sparse ``(n_out, n_in)`` matrix ``W`` of area averaging along one axis, ``out = W @ in``.

    With ``s = n_in / n_out``, output pixel i covers ``[i s, (i + 1) s)`` of the input axis and
    ``W[i, j] = length([j, j + 1) intersected with [i s, (i + 1) s)) / s``: each input pixel weighs by its overlap,
    every row sums to 1, and ``s * sum(out) = sum(in)``. For an integer ``s`` this is the mean of ``s`` pixel blocks.
    """
    from scipy import sparse

    step = n_in / n_out
    rows, cols, weights = [], [], []
    for i in range(n_out):
        low, high = i * step, min((i + 1) * step, n_in)
        for j in range(int(math.floor(low)), min(int(math.ceil(high)), n_in)):
            overlap = min(high, j + 1) - max(low, j)
            if overlap > 1e-9:
                rows.append(i)
                cols.append(j)
                weights.append(overlap)
    matrix = sparse.csr_matrix((weights, (rows, cols)), shape=(n_out, n_in))
    return sparse.diags(1.0 / np.asarray(matrix.sum(axis=1)).ravel()) @ matrix


def area_resize(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``array`` (y, x) area-averaged onto ``shape`` (float64): ``W_y @ array @ W_x^T`` with :func:`area_weights`, so
    each new pixel is the mean over its area and ``s_y * s_x * sum(out) = sum(in)``."""
    if tuple(shape) == array.shape:
        return array.astype(np.float64)
    rows = area_weights(array.shape[0], shape[0]) @ array.astype(np.float64)
    return np.asarray(area_weights(array.shape[1], shape[1]) @ np.asarray(rows).T).T


def shrink_image(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``array`` area-averaged onto ``shape`` (:func:`area_resize`), rounded half to even and clipped back to its
    integer dtype (a float image keeps the means); ``array`` itself when the shape is unchanged."""
    if tuple(shape) == array.shape:
        return array
    means = area_resize(array, shape)
    if np.issubdtype(array.dtype, np.integer):
        limits = np.iinfo(array.dtype)
        return np.clip(np.rint(means), limits.min, limits.max).astype(array.dtype)
    return means.astype(array.dtype)


def shrink_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Binary ``mask`` onto ``shape`` (uint8): a new pixel is foreground where at least half its area was, i.e. where
    the area-averaged mask (:func:`area_resize`) is >= 0.5."""
    return (area_resize(mask, shape) >= 0.5).astype(np.uint8)


def exception_text(exc: Exception) -> str:
    """``"Type: first line"`` of an exception, for one-line errors."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_dicom_2d(path: Path) -> tuple[np.ndarray, tuple[float, float] | None, str | None, str]:
    """``(pixels (y, x), spacing (y, x) in mm or None, the tag the spacing came from, PhotometricInterpretation)`` of
    a single-frame grey DICOM image. Stored values are kept, except that MONOCHROME1 is inverted over the stored bit
    range (dense is bright); the spacing is the first usable of PixelSpacing and ImagerPixelSpacing."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        array = np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises many types for a damaged file: all mean unreadable
        raise UserInputError(f"cannot read DICOM file {path}: {exception_text(exc)}") from None
    if array.ndim != 2:
        raise UserInputError(f"DICOM file {path} holds pixels of shape {array.shape}; expected one grey 2D image")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "MONOCHROME1":
        top = (1 << int(ds.get("BitsStored") or array.dtype.itemsize * 8)) - 1
        array = (top - array.astype(np.int64)).clip(0).astype(array.dtype)
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            pair = [float(v) for v in (ds.get(key) or [])]
        except (TypeError, ValueError):
            continue
        if len(pair) == 2 and all(math.isfinite(v) and v > 0 for v in pair):
            return array, (pair[0], pair[1]), key, photometric
    return array, None, None, photometric
