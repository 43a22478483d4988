"""Metrics of deformable registration as the Learn2Reg challenge reports them (numpy + scipy only).

Displacement field convention
-----------------------------
A displacement field ``disp`` is a float array of shape ``(3, Z, Y, X)`` (3D) or ``(2, Y, X)`` (2D): the spatial
axes are those of the image arrays nnU-Net reads (SimpleITK order), ``disp[c]`` is the displacement along spatial
array axis ``c`` (component order = array axis order), in VOXEL units. It defines the deformation

    phi(x) = x + u(x)

as a "pull" (backward) field on the fixed image grid: the warped moving image is ``warped(x) = moving(x + u(x))``,
which is what ``scipy.ndimage.map_coordinates(moving, grid + disp)`` computes (see :func:`warp_labels`). Because
both ``x`` and ``u`` are in voxels, the Jacobian ``J = I + grad u`` is dimensionless and its determinant is the same
as that of the field in millimetres (``det(S^-1 J S) = det J`` for the diagonal spacing matrix ``S``).

Learn2Reg files store the same kind of field (voxel units, pull, applied with ``map_coordinates``), but with the
nibabel array order ``(X, Y, Z)`` and components ``(x, y, z)``:

* Learn2Reg 2020/2021 ``disp_<fixed>_<moving>.npz``: shape ``[3, X, Y, Z]`` ("[[x, y, z], X, Y, Z]", float16,
  some tasks at half resolution; https://learn2reg.grand-challenge.org/Submission/) -> ``channel_axis=0``;
* Learn2Reg 2022+ ``disp_<fixed>_<moving>.nii.gz`` / ``.npz``: shape ``[X, Y, Z, 3]`` (``expected_shape`` of the
  configs in https://github.com/MDL-UzL/L2R/tree/main/evaluation, warped with
  ``map_coordinates(moving, identity + disp.transpose(3, 0, 1, 2))``) -> ``channel_axis=-1``.

:func:`disp_from_learn2reg` / :func:`disp_to_learn2reg` convert between the two: reverse the spatial axes and the
component order, ``disp[c, k, j, i] = l2r[n - 1 - c, i, j, k]`` (``n`` = 3 or 2). Half-resolution fields must be
upsampled (and their values scaled) by the caller. Every metric here is unchanged by this conversion (a permutation
of axes and components leaves ``det J`` unchanged).

Metrics
-------
``jacobian_determinant``: ``det J`` at every voxel, ``J = I + grad u`` with ``np.gradient`` (central differences
``(u[i+1] - u[i-1]) / 2`` inside, one-sided ``u[1] - u[0]`` / ``u[-1] - u[-2]`` at the first/last voxel of an
axis; exact for affine fields everywhere).

``sdlogj`` (Learn2Reg's "LogJacDetStd", read in MDL-UzL/L2R ``evaluation/evaluation.py`` and ``evaluation/utils.py``
at commit 8847509, https://github.com/MDL-UzL/L2R/blob/main/evaluation/evaluation.py): central differences of ``u``
(``[-0.5, 0, 0.5]``, zero padding outside), the 2-voxel border cropped from every side (``[2:-2]``), then

    SDlogJ = std( log( clip(det J + 3, 1e-9, 1e9) ) )        (population std, ddof = 0)

optionally over the fixed mask (also cropped). The ``+ 3`` offset and the clipping keep the log defined on folded
voxels but also compress the numbers: it is NOT ``std(log det J)``; ``offset=0`` gives that (folds clipped to
``log 1e-9``). Learn2Reg also counts ``num_foldings`` on the shifted and clipped values, which are always > 0 there,
so that count is always 0; use :func:`negative_jacobian_percent` instead.

``negative_jacobian_percent``: ``100 * #{det J <= 0} / #voxels`` on the whole grid (border by one-sided
differences, as above), the "% |J| <= 0" of VoxelMorph/TransMorph-style tables.

``non_diffeomorphic_volume_percent``: non-diffeomorphic volume (NDV) of Liu et al., "On finite difference Jacobian
computation in deformable image registration", IJCV 2024 (arXiv:2212.06060), as in their package
``digital-diffeomorphism`` 1.1.1 (https://github.com/yihao6/digital_diffeomorphism, ``jacobian_calculator_torch.py``
and ``non_diffeomorphic_measures.py``). Around every voxel ``p`` the deformation ``phi`` is linear on simplices whose
edges are differences of ``phi`` between neighbouring voxels; a simplex with ``det <= 0`` is folded. In 3D ten
tetrahedra per voxel: the eight with edges ``(s_z e_z, s_y e_y, s_x e_x)``, ``s in {+1, -1}``, i.e. the
determinants ``|J^{s_z s_y s_x}|`` of the forward/backward difference Jacobians (``D+ f = f(p + e) - f(p)``,
``D- f = f(p) - f(p - e)``), volume ``|J| / 6`` each, and the two central tetrahedra ``J1*`` (edges
``phi(p - a - b) - phi(p)`` for the axis pairs ``(a, b) = (z, y), (z, x), (y, x)``) and ``J2*`` (edges
``phi(p + a + b) - phi(p)`` for ``(z, y), (y, x), (z, x)``), volume ``|J*| / 6`` each. The eight plus two tetrahedra
of all voxels tile space twice, so

    NDV = sum_p 1/2 * sum_{T in 10 tetrahedra of p} max(-|J_T|, 0) / 6,      NDV% = 100 * NDV / #voxels

(2D: the four triangles ``(s_y e_y, s_x e_x)``, area ``|J| / 2``: ``NDA = sum_p 1/2 sum_T max(-|J_T|, 0) / 2``).
Beyond the border the displacement is continued by its edge value (``np.pad(mode="edge")``), as in the package.
The identity has NDV 0; a fold along one axis gives the negative length of the folded intervals per unit area.

Label overlap: :func:`dice_per_label` and :func:`hd95_per_label` call :mod:`nnunet_ext.metrics.segmentation` per
label (Dice NaN when the label is absent from both maps; HD95 in mm, 0.0 when absent from both, NaN when absent from
one). Learn2Reg averages with ``nanmean``, scores NaN for a label missing from the fixed or the moving map (pass
``labels`` accordingly) and computes HD95 with unit spacing (voxels): pass ``spacing=(1, 1, 1)`` to reproduce that.
"""
from __future__ import annotations

import itertools
from typing import Optional, Sequence

import numpy as np
from scipy.ndimage import map_coordinates

from nnunet_ext.metrics.segmentation import dice, hd95

#: Learn2Reg's SDlogJ: offset added to det J before the log, clipping range, and border cropped from every side.
L2R_SDLOGJ_OFFSET = 3.0
L2R_SDLOGJ_CLIP = (1e-9, 1e9)
L2R_SDLOGJ_CROP = 2


def _check_disp(disp: np.ndarray) -> np.ndarray:
    disp = np.asarray(disp, dtype=np.float64)
    ndim = disp.ndim - 1
    if ndim not in (2, 3) or disp.shape[0] != ndim:
        raise ValueError(f"displacement field must have shape (3, Z, Y, X) or (2, Y, X), got {disp.shape}")
    if min(disp.shape[1:]) < 2:
        raise ValueError(f"displacement field needs at least 2 voxels along every axis, got {disp.shape[1:]}")
    return disp


def _check_mask(mask: Optional[np.ndarray], shape: Sequence[int]) -> Optional[np.ndarray]:
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} differs from the field's spatial shape {tuple(shape)}")
    return mask


def _det(m: list) -> np.ndarray:
    """Determinant of a 2x2 or 3x3 matrix given as nested lists of equally shaped arrays, ``m[row][col]``."""
    if len(m) == 2:
        return m[0][0] * m[1][1] - m[0][1] * m[1][0]
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))


def disp_from_learn2reg(field: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """Learn2Reg displacement field (x-first axes and components) -> this module's ``(3, Z, Y, X)`` convention.

    Args:
        field: ``[3, X, Y, Z]`` (``channel_axis=0``, Learn2Reg 2020/2021 ``.npz``) or ``[X, Y, Z, 3]``
            (``channel_axis=-1``, Learn2Reg 2022+ ``.nii.gz``); 2D ``[2, X, Y]`` / ``[X, Y, 2]``. Voxel units.

    Returns:
        ``disp`` with ``disp[c, k, j, i] = l2r[n - 1 - c, i, j, k]``, float32 or wider (float16 is promoted).
    """
    field = np.moveaxis(np.asarray(field), channel_axis, 0)
    if field.ndim - 1 not in (2, 3) or field.shape[0] != field.ndim - 1:
        raise ValueError(f"expected a Learn2Reg field [3, X, Y, Z] / [X, Y, Z, 3] (or 2D), got {field.shape}")
    field = field.astype(np.promote_types(field.dtype, np.float32), copy=False)
    return np.ascontiguousarray(field[::-1].transpose(0, *range(field.ndim - 1, 0, -1)))


def disp_to_learn2reg(disp: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """This module's ``(3, Z, Y, X)`` field -> Learn2Reg's ``[3, X, Y, Z]`` (``channel_axis=0``) or ``[X, Y, Z, 3]``
    (``channel_axis=-1``); the inverse of :func:`disp_from_learn2reg`. The dtype is kept (Learn2Reg 2021 wanted
    float16: cast the result)."""
    disp = np.asarray(disp)
    if disp.ndim - 1 not in (2, 3) or disp.shape[0] != disp.ndim - 1:
        raise ValueError(f"displacement field must have shape (3, Z, Y, X) or (2, Y, X), got {disp.shape}")
    field = disp[::-1].transpose(0, *range(disp.ndim - 1, 0, -1))
    return np.ascontiguousarray(np.moveaxis(field, 0, channel_axis))


def warp_labels(moving_labels: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Pull a moving label map onto the fixed grid: ``warped(x) = moving(x + u(x))``, nearest neighbour, background
    (0) outside the moving image, as Learn2Reg warps its segmentations (``map_coordinates(..., order=0)``)."""
    disp = _check_disp(disp)
    moving_labels = np.asarray(moving_labels)
    if moving_labels.ndim != disp.shape[0]:
        raise ValueError(f"moving labels have {moving_labels.ndim} dims, the field {disp.shape[0]}")
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in disp.shape[1:]], indexing="ij")
    coordinates = np.stack(grid) + disp
    return map_coordinates(moving_labels, coordinates, order=0, mode="constant", cval=0)


def jacobian_determinant(disp: np.ndarray) -> np.ndarray:
    """Determinant of the Jacobian of ``phi(x) = x + u(x)`` at every voxel, ``det(I + grad u)``.

    ``grad u`` by ``np.gradient``: central differences ``(u[i+1] - u[i-1]) / 2`` inside, first-order one-sided
    differences at the first and last voxel of every axis (so affine fields are exact everywhere).

    Args:
        disp: displacement field ``(3, Z, Y, X)`` or ``(2, Y, X)`` in voxels (module docstring).

    Returns:
        float64 array of the spatial shape.
    """
    disp = _check_disp(disp)
    jacobian = []
    for component in range(disp.shape[0]):
        row = list(np.gradient(disp[component]))  # d u_component / d x_axis for every axis
        row[component] = row[component] + 1.0
        jacobian.append(row)
    return _det(jacobian)


def sdlogj(disp: np.ndarray, mask: Optional[np.ndarray] = None, offset: float = L2R_SDLOGJ_OFFSET,
           crop: int = L2R_SDLOGJ_CROP) -> float:
    """Standard deviation of the log Jacobian determinant, with Learn2Reg's numbers.

    ``std(log(clip(det J + offset, 1e-9, 1e9)))`` over the field with ``crop`` voxels removed from every side of
    every axis (and, if given, inside ``mask`` cropped the same way); population std. Learn2Reg (MDL-UzL/L2R,
    ``evaluation/evaluation.py`` + ``evaluation/utils.py``,
    https://github.com/MDL-UzL/L2R/blob/main/evaluation/evaluation.py) uses ``offset=3`` and ``crop=2``; inside the
    crop its zero-padded central differences equal :func:`jacobian_determinant`'s. ``offset=0`` gives the plain
    ``std(log det J)`` (folded voxels clipped to ``log 1e-9``).

    Args:
        disp: displacement field ``(3, Z, Y, X)`` or ``(2, Y, X)`` in voxels.
        mask: optional boolean mask of the spatial shape (Learn2Reg's fixed-image mask).
        offset: added to det J before the log.
        crop: border voxels dropped from each side of each axis.
    """
    jacdet = jacobian_determinant(disp)
    mask = _check_mask(mask, jacdet.shape)
    inner = tuple(slice(crop, n - crop) for n in jacdet.shape)
    log_jacdet = np.log(np.clip(jacdet[inner] + offset, *L2R_SDLOGJ_CLIP))
    if mask is not None:
        log_jacdet = log_jacdet[mask[inner]]
    if log_jacdet.size == 0:
        raise ValueError(f"no voxel left after cropping {crop} voxels from a field of shape {jacdet.shape}"
                         + (" inside the mask" if mask is not None else ""))
    return float(np.std(log_jacdet))


def negative_jacobian_percent(disp: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Percentage of voxels (inside ``mask`` if given) with ``det J <= 0`` (:func:`jacobian_determinant`)."""
    jacdet = jacobian_determinant(disp)
    mask = _check_mask(mask, jacdet.shape)
    folded = jacdet <= 0
    if mask is None:
        return 100.0 * float(np.count_nonzero(folded)) / folded.size
    if not mask.any():
        raise ValueError("empty mask")
    return 100.0 * float(np.count_nonzero(folded & mask)) / float(np.count_nonzero(mask))


def _simplex_determinants(disp: np.ndarray) -> list:
    """Determinants of the simplices around every voxel used by the NDV (module docstring), one array each."""
    ndim = disp.shape[0]
    shape = disp.shape[1:]
    padded = np.pad(disp, [(0, 0)] + [(1, 1)] * ndim, mode="edge")
    grid = np.meshgrid(*[np.arange(n + 2, dtype=np.float64) for n in shape], indexing="ij")
    phi = padded + np.stack(grid)  # deformation on the padded grid (constant offset of 1: only differences used)

    def at(offset):
        return phi[(slice(None),) + tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, shape))]

    centre = at((0,) * ndim)

    def edge(*axes_and_signs):
        offset = [0] * ndim
        for axis, sign in axes_and_signs:
            offset[axis] += sign
        return at(offset) - centre

    def det_of_columns(columns):
        return _det([[column[row] for column in columns] for row in range(ndim)])

    determinants = []
    for signs in itertools.product((1, -1), repeat=ndim):
        # forward difference D+ f = f(p + e) - f(p); backward D- f = f(p) - f(p - e) = -(f(p - e) - f(p))
        columns = [sign * edge((axis, sign)) for axis, sign in enumerate(signs)]
        determinants.append(det_of_columns(columns))
    if ndim == 3:
        determinants.append(det_of_columns([edge((0, -1), (1, -1)), edge((0, -1), (2, -1)), edge((1, -1), (2, -1))]))
        determinants.append(det_of_columns([edge((0, 1), (1, 1)), edge((1, 1), (2, 1)), edge((0, 1), (2, 1))]))
    return determinants


def non_diffeomorphic_volume_map(disp: np.ndarray) -> np.ndarray:
    """Non-diffeomorphic volume (3D) or area (2D) at every voxel, in voxels (Liu et al. 2024; module docstring):
    ``1/2 * sum over the voxel's 10 tetrahedra (4 triangles) of max(-det, 0) / 6 (/ 2)``."""
    disp = _check_disp(disp)
    simplex_volume = 6.0 if disp.shape[0] == 3 else 2.0
    volume = np.zeros(disp.shape[1:])
    for determinant in _simplex_determinants(disp):
        volume += np.maximum(-determinant, 0.0)
    return 0.5 * volume / simplex_volume


def non_diffeomorphic_volume_percent(disp: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Non-diffeomorphic volume (NDV, 3D) or area (NDA, 2D) as a percentage of the volume (of ``mask`` if given):
    ``100 * sum(NDV map [* mask]) / #voxels [in mask]`` (Liu et al., IJCV 2024; ``digital-diffeomorphism``)."""
    volume = non_diffeomorphic_volume_map(disp)
    mask = _check_mask(mask, volume.shape)
    if mask is None:
        return 100.0 * float(volume.sum()) / volume.size
    if not mask.any():
        raise ValueError("empty mask")
    return 100.0 * float(volume[mask].sum()) / float(np.count_nonzero(mask))


def _labels_to_score(fixed_labels: np.ndarray, warped_labels: np.ndarray,
                     labels: Optional[Sequence[int]]) -> list[int]:
    if fixed_labels.shape != warped_labels.shape:
        raise ValueError(f"label maps differ in shape: {fixed_labels.shape} vs {warped_labels.shape}")
    if labels is None:
        labels = np.union1d(np.unique(fixed_labels), np.unique(warped_labels))
        labels = labels[labels != 0]
    return [int(label) for label in labels]


def dice_per_label(fixed_labels: np.ndarray, warped_labels: np.ndarray,
                   labels: Optional[Sequence[int]] = None) -> dict[int, float]:
    """Dice of every label between the fixed and the warped moving label map (:func:`segmentation.dice`).

    Args:
        labels: labels to score; default every nonzero label present in either map. NaN for a label absent from
            both.
    """
    fixed_labels, warped_labels = np.asarray(fixed_labels), np.asarray(warped_labels)
    return {label: dice(fixed_labels == label, warped_labels == label)
            for label in _labels_to_score(fixed_labels, warped_labels, labels)}


def hd95_per_label(fixed_labels: np.ndarray, warped_labels: np.ndarray, spacing: Sequence[float],
                   labels: Optional[Sequence[int]] = None) -> dict[int, float]:
    """HD95 in mm of every label between the fixed and the warped moving label map (:func:`segmentation.hd95`).

    Args:
        spacing: voxel spacing in mm, in the array axis order; ``(1, 1, 1)`` gives Learn2Reg's voxel units.
        labels: as in :func:`dice_per_label`. 0.0 for a label absent from both maps, NaN if absent from one.
    """
    fixed_labels, warped_labels = np.asarray(fixed_labels), np.asarray(warped_labels)
    return {label: hd95(fixed_labels == label, warped_labels == label, spacing)
            for label in _labels_to_score(fixed_labels, warped_labels, labels)}


def _nanmean(values) -> float:
    values = np.asarray(list(values), dtype=np.float64)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


def registration_metrics(disp: np.ndarray, fixed_labels: np.ndarray, warped_labels: np.ndarray,
                         spacing: Sequence[float], labels: Optional[Sequence[int]] = None,
                         mask: Optional[np.ndarray] = None) -> dict:
    """Learn2Reg's metrics of one registered pair in one call.

    Args:
        disp: displacement field ``(3, Z, Y, X)`` / ``(2, Y, X)`` in voxels on the fixed grid.
        fixed_labels: fixed label map; warped_labels: moving label map warped by ``disp`` (:func:`warp_labels`).
        spacing: voxel spacing in mm (array axis order), for HD95.
        labels: labels to score (default: every nonzero label of either map).
        mask: optional fixed-image mask for the field metrics (SDlogJ, % det J <= 0, % NDV).

    Returns:
        ``{"dice_mean", "hd95_mean"`` (NaN-ignoring means over labels), ``"dice", "hd95"`` (per label),
        ``"sdlogj", "negative_jacobian_percent", "ndv_percent"}``.
    """
    disp = _check_disp(disp)
    if np.shape(fixed_labels) != disp.shape[1:]:
        raise ValueError(f"label maps of shape {np.shape(fixed_labels)} do not match the field {disp.shape}")
    dice_values = dice_per_label(fixed_labels, warped_labels, labels)
    hd95_values = hd95_per_label(fixed_labels, warped_labels, spacing, labels)
    return {
        "dice_mean": _nanmean(dice_values.values()),
        "hd95_mean": _nanmean(hd95_values.values()),
        "dice": dice_values,
        "hd95": hd95_values,
        "sdlogj": sdlogj(disp, mask),
        "negative_jacobian_percent": negative_jacobian_percent(disp, mask),
        "ndv_percent": non_diffeomorphic_volume_percent(disp, mask),
    }
