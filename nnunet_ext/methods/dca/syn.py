"""ANTs SyN baseline (ANTsPy, benchmark-only extra ``registration-bench``): one pair, field in our convention.

:func:`syn_register` runs ``ants.registration(type_of_transform="SyNOnly")``: symmetric normalisation (SyN, Avants et
al., MedIA 2008) with NO rigid or affine stage (ANTsPy's docstring: "SyNOnly: Symmetric normalization with no rigid or
affine stages"; ANTsPy starts a deformable-only transform from the identity, ``-r Identity``), because the pairs
benchmarked here are affinely aligned already. Everything else is ANTsPy's default SyN (``ants.registration``'s
defaults, :class:`SyNSettings`): Mattes mutual information with 32 bins (dense, no random sampling), gradient step 0.2,
update-field smoothing 3, total-field smoothing 0, iterations ``(40, 20, 0)`` at shrink factors (4, 2, 1) with
smoothing sigmas (2, 1, 0) voxels (ANTsPy derives both from the length of ``reg_iterations``; its default spends no
iteration at full resolution). TransMorph's SyN baseline used ``syn_metric="meansquares"``,
``reg_iterations=(160, 80, 40)`` (junyuchen245/TransMorph_Transformer_for_Medical_Image_Registration, IXI baseline
script): pass those through :class:`SyNSettings` to reproduce it. Both images are min-max normalised to [0, 1] (as
the instance optimisation does, :func:`~.register.minmax_normalise`; mutual information does not care, mean squares
does); the warped image is the moving image in its original intensities.

Reproducibility: ANTs' registration has no random component with dense sampling, but multi-threaded reductions can
change the last bits of a float sum; ANTsPy's docstring wants ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1`` for perfect
reproducibility. :func:`syn_register` sets that variable to ``settings.threads`` (default 1) while it runs and passes
``random_seed`` (``--random-seed``).

The field, from ANTs' convention to ours (:mod:`nnunet_ext.metrics.registration`: ``(ndim, *spatial)`` in voxels,
components in array-axis order ``(z, y, x)``, pull-back ``warped(x) = moving(x + u(x))``):

* our arrays are numpy ``(z, y, x)`` as SimpleITK returns them; an ANTs image's numpy view is in ITK index order
  ``(i, j, k) = (x, y, z)``. The ANTs images are built from ``array.T`` with spacing ``(s_x, s_y, s_z)``, origin 0 and
  the identity direction, so the physical point of index ``(i, j, k)`` is ``(i s_x, j s_y, k s_z)`` mm;
* ANTs' forward transforms (``fwdtransforms``: the SyN warp and the identity initial transform) are composed by
  ``antsApplyTransforms`` into ONE displacement field on the fixed grid (``apply_transforms(compose=...)``). Its
  vectors ``d(p)`` are physical (mm, ITK's LPS physical space, components ``(x, y, z)``) and map a fixed point ``p``
  to the moving point ``p + d(p)``, the point ``apply_transforms`` samples: a pull-back field like ours;
* in index units that is ``diag(1/s) D^T d`` (``D``: the direction matrix, the identity here, so LPS vs RAS never
  flips a sign); the field image's numpy view ``(X, Y, Z, 3)`` is transposed to ``(3, Z, Y, X)`` and its components
  reversed to ``(z, y, x)``.

``tests/methods/dca/test_syn.py`` checks the conversion: :func:`~nnunet_ext.metrics.registration.warp_labels` with
the converted field reproduces ANTs' own ``apply_transforms(..., interpolator="nearestNeighbor")`` of the moving
labels (returned here as ``warped_labels``) on all but a few voxels, on anisotropic grids in 2D and 3D.

antspyx is imported lazily; without it :func:`syn_register` raises a one-line UserInputError naming the extra.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from typing import NamedTuple, Optional, Sequence

import numpy as np

from nnunet_ext.env import environ_set
from nnunet_ext.errors import UserInputError

TRANSFORM = "SyNOnly"
EXTRA = "registration-bench"
MISSING_ANTS = (f"the ANTs SyN baseline needs antspyx, a benchmark-only extra: "
                f"pip install 'nnunet-ext[{EXTRA}]' (or pip install antspyx)")
THREADS_VARIABLE = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
METRICS = ("mattes", "CC", "meansquares", "demons")  # ants.registration's syn_metric values


def import_ants():
    """``import ants`` (antspyx), or a one-line UserInputError naming the extra."""
    try:
        import ants
    except ImportError:
        raise UserInputError(MISSING_ANTS) from None
    return ants


def ants_version() -> Optional[str]:
    """antspyx's version, None if it is not installed (imports nothing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("antspyx")
    except PackageNotFoundError:
        return None


@dataclasses.dataclass(frozen=True)
class SyNSettings:
    """Parameters of ``ants.registration`` (module docstring); defaults are ANTsPy's for SyN.

    Args:
        syn_metric: ``mattes`` (mutual information), ``CC``, ``meansquares`` or ``demons``.
        syn_sampling: histogram bins (``mattes``) or radius (``CC``).
        reg_iterations: iterations per level, coarsest first (ANTsPy sets shrink factors and smoothing from its
            length).
        grad_step: gradient step.
        flow_sigma: smoothing of the update field.
        total_sigma: smoothing of the total field.
        seed: ``random_seed``.
        threads: ITK threads while ANTs runs (1: reproducible to the bit).
    """

    syn_metric: str = "mattes"
    syn_sampling: int = 32
    reg_iterations: tuple = (40, 20, 0)
    grad_step: float = 0.2
    flow_sigma: float = 3.0
    total_sigma: float = 0.0
    seed: int = 1
    threads: int = 1

    def __post_init__(self):
        object.__setattr__(self, "reg_iterations", tuple(self.reg_iterations))

    def check(self) -> None:
        """UserInputError for a setting out of range."""
        if self.syn_metric not in METRICS:
            raise UserInputError(f"syn_metric must be one of {', '.join(METRICS)}, got '{self.syn_metric}'")
        iterations = self.reg_iterations
        if not iterations or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0
                                 for n in iterations) or not any(iterations):
            raise UserInputError(f"SyN iterations must be integers >= 0, not all 0, got {list(iterations)}")
        for name in ("syn_sampling", "threads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserInputError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserInputError(f"seed must be an integer >= 0, got {self.seed}")
        for name in ("grad_step", "flow_sigma", "total_sigma"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0) or (name == "grad_step" and value == 0):
                raise UserInputError(f"{name} must be a finite number {'>' if name == 'grad_step' else '>='} 0, "
                                     f"got {value}")

    def arguments(self) -> dict:
        """Keyword arguments of ``ants.registration`` besides the images and the output prefix."""
        return {"type_of_transform": TRANSFORM, "syn_metric": self.syn_metric, "syn_sampling": self.syn_sampling,
                "reg_iterations": self.reg_iterations, "grad_step": self.grad_step, "flow_sigma": self.flow_sigma,
                "total_sigma": self.total_sigma, "random_seed": self.seed}


class SyNResult(NamedTuple):
    """Output of :func:`syn_register`."""

    displacement: np.ndarray  # (ndim, *spatial) float32, voxels, array-axis order, pull-back
    warped: np.ndarray  # moving image (original intensities) warped by ANTs, linear, 0 outside, float32
    warped_labels: Optional[np.ndarray]  # moving labels warped by ANTs' own nearest neighbour, or None
    seconds: float  # wall time of ants.registration
    settings: dict  # the ants.registration arguments used, threads included


def _to_ants(ants, array: np.ndarray, spacing: Sequence[float]):
    """Our ``(z, y, x)`` / ``(y, x)`` array -> an ANTs image: index order reversed, spacing ``(s_x, s_y[, s_z])``,
    origin 0, identity direction."""
    return ants.from_numpy(np.ascontiguousarray(np.asarray(array, dtype=np.float32).T),
                           origin=[0.0] * array.ndim, spacing=[float(s) for s in reversed(spacing)])


def ants_field_to_voxels(vectors: np.ndarray, spacing_xyz: Sequence[float], direction: np.ndarray) -> np.ndarray:
    """An ANTs displacement field's numpy view -> our voxel field (module docstring).

    Args:
        vectors: ``(X, Y, Z, 3)`` / ``(X, Y, 2)``, physical vectors (mm) in ITK's ``(x, y, z)`` components.
        spacing_xyz: the field image's spacing in ITK order.
        direction: its direction matrix (columns: the physical directions of the index axes).

    Returns:
        ``(3, Z, Y, X)`` / ``(2, Y, X)`` float32: displacement in voxels, components ``(z, y, x)``.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    ndim = vectors.ndim - 1
    if vectors.shape[-1] != ndim or ndim not in (2, 3):
        raise ValueError(f"expected an ANTs field (X, Y, Z, 3) or (X, Y, 2), got {vectors.shape}")
    to_index = np.diag(1.0 / np.asarray(spacing_xyz, dtype=np.float64)) @ np.asarray(direction, np.float64).T
    index = vectors @ to_index.T  # per voxel: diag(1/s) D^T d, components (i, j[, k]) = (x, y[, z])
    field = np.moveaxis(index, -1, 0).transpose(0, *range(ndim, 0, -1))  # (c, Z, Y, X), c in (x, y, z) order
    return np.ascontiguousarray(field[::-1], dtype=np.float32)


def syn_register(fixed: np.ndarray, moving: np.ndarray, spacing: Sequence[float] | None = None,
                 settings: SyNSettings = SyNSettings(), moving_labels: Optional[np.ndarray] = None) -> SyNResult:
    """Register ``moving`` onto ``fixed`` with ANTs SyN (SyNOnly) and return the field in our convention.

    Args:
        fixed, moving: images of one shape, 2D ``(y, x)`` or 3D ``(z, y, x)``.
        spacing: voxel spacing in mm in the same axis order (default 1 mm).
        settings: see :class:`SyNSettings`.
        moving_labels: optional integer label map of the moving image; ANTs warps it by nearest neighbour
            (``warped_labels``, the reference for the field conversion).
    """
    settings.check()
    fixed, moving = np.asarray(fixed), np.asarray(moving)
    if fixed.shape != moving.shape or fixed.ndim not in (2, 3):
        raise ValueError(f"fixed {fixed.shape} and moving {moving.shape} must be 2D or 3D of one shape")
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0,) * fixed.ndim))
    if len(spacing) != fixed.ndim or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must have {fixed.ndim} positive entries, got {spacing}")
    if moving_labels is not None and np.shape(moving_labels) != moving.shape:
        raise ValueError(f"moving_labels {np.shape(moving_labels)} must have the moving image's shape {moving.shape}")
    ants = import_ants()
    from nnunet_ext.methods.dca.register import minmax_normalise

    fixed_image = _to_ants(ants, minmax_normalise(fixed), spacing)
    threads = {THREADS_VARIABLE: str(int(settings.threads))}
    with tempfile.TemporaryDirectory(prefix="nnunet_ext_syn_") as folder, environ_set(threads):
        start = time.perf_counter()
        result = ants.registration(fixed_image, _to_ants(ants, minmax_normalise(moving), spacing),
                                   outprefix=os.path.join(folder, "syn_"), **settings.arguments())
        seconds = time.perf_counter() - start
        transforms = result["fwdtransforms"]
        composed = ants.apply_transforms(fixed_image, fixed_image, transforms,
                                         compose=os.path.join(folder, "forward_"))
        if composed is None:
            raise RuntimeError(f"antsApplyTransforms did not compose {transforms} into a displacement field")
        field_image = ants.image_read(composed)
        displacement = ants_field_to_voxels(field_image.numpy(), field_image.spacing, field_image.direction)
        warped = ants.apply_transforms(fixed_image, _to_ants(ants, moving, spacing), transforms,
                                       interpolator="linear").numpy().T
        warped_labels = None
        if moving_labels is not None:
            labels = np.asarray(moving_labels)
            warped_labels = ants.apply_transforms(fixed_image, _to_ants(ants, labels, spacing), transforms,
                                                  interpolator="nearestNeighbor").numpy().T
            warped_labels = np.rint(warped_labels).astype(labels.dtype if labels.dtype.kind in "iub" else np.int64)
    used = {**settings.arguments(), "reg_iterations": list(settings.reg_iterations), "threads": settings.threads,
            "normalisation": "min-max to [0, 1] per image", "antspyx": ants_version()}
    return SyNResult(displacement, np.ascontiguousarray(warped, dtype=np.float32), warped_labels, seconds, used)
