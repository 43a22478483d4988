"""Pairwise registration with TM-DCA by instance optimisation (``nnunet-ext register``, issue #10 item 3).

Instance optimisation ("IO" in the registration literature): a freshly initialised :class:`~.network.TMDCA` (seeded;
``network="convnet"``, ``--network convnet``: the :class:`~.convnet.ConvNetRegistration` with the same decoder) is
fitted to ONE (fixed, moving) pair by optimising its weights with Adam for ``iterations`` steps; the field it predicts
after the last step is the registration. No training data and no trained model are needed. With a trained
``DCARegSegTrainer`` model (:mod:`.model`) the same loop starts from its weights (``iterations`` steps of
fine-tuning, or 0: the model applied as it is) and the images are normalised as its training cases were.
``downsample`` fits at a lower resolution (:func:`upsample_field` brings the field back to the input grid).

Loss, minimised over the network weights ``theta`` with ``u = Net_theta(m, f)`` (voxels, pull-back convention of
:mod:`.transform`: the warped moving image is ``m(x + u(x))``)::

    L = NCC_9(f, m o phi) + lambda_reg * Diff(u) + lambda_seg * (1 - SoftDice(onehot(s_m) o phi, onehot(s_f)))

* ``NCC_9``: :func:`local_ncc`, VoxelMorph's local normalised cross-correlation over 9^n windows (negative: -1 is a
  perfect match);
* ``Diff``: :func:`diffusion_regulariser`, the mean squared forward differences of ``u`` (VoxelMorph's
  ``Grad('l2')`` diffusion term, averaged over the axes); for ``diffeomorphic`` it is applied to the integrated
  displacement, like every other term;
* ``SoftDice``: :func:`soft_dice_loss` between the linearly warped one-hot maps of the moving labels and the fixed
  labels, over the foreground labels of either map; only with both segmentations and ``lambda_seg > 0`` (the
  one-hot maps stay on the device: 35 labels at 160 x 192 x 224 are ~1 GB per map in float32).

Both images are min-max normalised to [0, 1] per image before the optimisation (a constant image becomes 0), as
VoxelMorph/SynthMorph want their inputs; outputs are computed from the original intensities.

Defaults (:class:`IOSettings`) and their sources: ``iterations=100`` and ``lr=1e-3`` (Adam) are the issue's choice
for a CPU-affordable fit of one pair (10x VoxelMorph's training rate 1e-4, since only one pair is fitted, for ~100
steps); ``lambda_reg=1.0`` is VoxelMorph's setting for the NCC loss (README, "Parameter choices": "For the CC loss
function, we found a reg parameter of 1 to work best"); NCC window 9 is VoxelMorph's default; ``lambda_seg=0``
(unsupervised); ``network="tmdca"``; ``preset="small"`` is the CPU-sized network (``paper``, the authors' 283
M-parameter size, wants a GPU); ``seed=0``. Stochastic depth is switched off (``drop_path_rate=0``): one pair is
fitted, and the field of the last forward pass is the one written. The network stays in training mode throughout (its
offset networks' BatchNorm uses the statistics of this pair), the final field included.

Inputs: any image SimpleITK reads (NIfTI, MHA, NRRD, PNG...), or ``.npz`` files as VoxelMorph and Learn2Reg
distribute them: the image is the array ``vol`` (else ``vol_data``), the label map the array ``seg`` (the
VoxelMorph/neurite-OASIS layout ``{vol, seg}`` in one file; pass the file to ``-m`` and ``-ms``); an ``.npz``
holding a single array is read as that array. ``.npz`` arrays are in VoxelMorph's ``(x, y[, z])`` axis order (that
of nibabel's ``get_fdata``, which VoxelMorph's ``load_volfile`` uses for NIfTI too) and are transposed to our
``(z, y, x)``; they carry no geometry: spacing 1 mm, origin 0, identity direction. The fixed and the moving image must
have the same shape and spacing (nothing is resampled; the origin and direction of the moving image are ignored:
registration is in voxel space), finite values (NaN in a NIfTI is found through nibabel: SimpleITK reads it as 0),
and at least :data:`MIN_SIZE` voxels per axis. Label maps must match their image's shape and spacing and hold
non-negative integers (a float file with integral values is fine). A 3D image of a single slice (nnU-Net's 2D
layout) is registered in 2D.

Outputs, all with the fixed image's geometry (``<fixed>``/``<moving>``: the file names without extension):

* ``warped_<moving>.nii.gz``: the moving image warped by linear interpolation (0 outside), original intensities;
* ``warped_seg_<moving>.nii.gz`` (with ``-ms``): the moving labels warped by nearest neighbour exactly as Learn2Reg
  warps them (:func:`~nnunet_ext.metrics.registration.warp_labels`, ``map_coordinates(order=0)``);
* ``disp_<fixed>_<moving>.nii.gz``: the displacement in the Learn2Reg 2022+ layout: the NIfTI's data array is
  ``[X, Y, Z, 3]`` as nibabel reads it (components ``(x, y, z)``, voxel units, pull: Learn2Reg's evaluation warps
  with ``map_coordinates(moving, identity + disp.transpose(3, 0, 1, 2))``); 2D: ``[X, Y, 2]``. Back to our
  ``(3, Z, Y, X)`` with ``disp_from_learn2reg(field, channel_axis=-1)``. For a single-slice 3D image the field is
  ``[X, Y, 1, 3]`` with a zero z component;
* ``jacdet_<fixed>_<moving>.nii.gz``: ``det(I + grad u)`` per voxel
  (:func:`~nnunet_ext.metrics.registration.jacobian_determinant`);
* ``register.json``: inputs, settings (``network``: ``tmdca`` or ``convnet``; ``network_config``: its size), seconds,
  the loss curve (initial, final, best, up to :data:`CURVE_POINTS` points), field statistics (max/mean ``|u|``,
  det J range, % det J <= 0, Learn2Reg's SDlogJ) and, with both segmentations,
  :func:`~nnunet_ext.metrics.registration.registration_metrics` before (identity) and after registration (Dice,
  HD95 in mm of the fixed spacing, SDlogJ, % det J <= 0, % NDV; labels: the foreground labels of either map).
  JSON has no NaN: undefined values are ``null``.

The outputs are written to a temporary folder and moved into place when complete (:mod:`nnunet_ext.atomic`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from nnunet_ext.errors import UserInputError
from nnunet_ext.jsonio import json_ready

NCC_WINDOW = 9  # VoxelMorph's default window
NCC_EPS = 1e-5  # VoxelMorph's stabiliser of the NCC denominator
INTEGRATION_STEPS = 7  # scaling-and-squaring steps of --diffeomorphic (TMDCA's default, VoxelMorph's int_steps)
MIN_SIZE = 5  # voxels per axis: Learn2Reg's SDlogJ crops 2 from each side
CURVE_POINTS = 101  # loss values kept in register.json
NPZ_IMAGE_KEYS = ("vol", "vol_data")
NPZ_LABEL_KEYS = ("seg",)
DEVICES = ("cpu", "cuda")
NETWORKS = ("tmdca", "convnet")  # TM-DCA, or the ConvNet with TM-DCA's decoder (:mod:`.convnet`)
NORMALISATION = "min-max to [0, 1] per image (a constant image becomes 0)"


# ------------------------------------------------------------------ loss terms
def local_ncc(fixed, warped, window: int = NCC_WINDOW, eps: float = NCC_EPS):
    """Local normalised cross-correlation loss of VoxelMorph: ``-mean(local_ncc_map(...))``."""
    return -local_ncc_map(fixed, warped, window, eps).mean()


def local_ncc_map(fixed, warped, window: int = NCC_WINDOW, eps: float = NCC_EPS):
    """Per-voxel squared local correlation ``cc`` of VoxelMorph's NCC loss (``voxelmorph/torch/losses.py``,
    ``NCC``), ``(B, C, *spatial)``; :func:`local_ncc` is ``-mean(cc)``.

    With box sums ``S[.]`` over the ``w^n`` window around every voxel (zero padding, stride 1), ``N = w^n`` and
    ``mu_I = S[I] / N``::

        cross = S[IJ] - mu_J S[I] - mu_I S[J] + mu_I mu_J N
        var_I = S[I^2] - 2 mu_I S[I] + mu_I^2 N        (var_J alike)
        cc    = cross^2 / (var_I var_J + eps)           loss = -mean(cc)

    so the loss is -1 where the windows match up to a linear intensity change (away from the zero-padded border,
    which only scaling leaves unchanged) and 0 for unrelated ones. Because ``eps`` is added in units of the box
    sums, a window of little contrast scores ``cc < 1`` even against itself, and more once contrast is pulled into
    it: on smooth images with flat tails the identity is not the optimum and the field drifts a little there
    (windows of zero variance have ``cc = 0`` and no gradient).

    Args:
        fixed: ``I``, ``(B, C, *spatial)``, 2D or 3D.
        warped: ``J``, the warped moving image, same shape.
        window: ``w``, odd.
        eps: added to the denominator (VoxelMorph: 1e-5, in units of the box sums).
    """
    import torch.nn.functional as F

    if fixed.shape != warped.shape:
        raise ValueError(f"fixed {tuple(fixed.shape)} and warped {tuple(warped.shape)} must have one shape")
    ndim = fixed.dim() - 2
    if ndim not in (2, 3):
        raise ValueError(f"expected (B, C, *spatial) with 2 or 3 spatial axes, got {tuple(fixed.shape)}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 1, got {window}")
    pool = F.avg_pool2d if ndim == 2 else F.avg_pool3d
    size = window ** ndim

    def box_sum(x):  # = conv with a ones kernel, padding window // 2 (count_include_pad: the zeros count)
        return pool(x, window, stride=1, padding=window // 2, count_include_pad=True) * size

    sum_i, sum_j = box_sum(fixed), box_sum(warped)
    sum_ii, sum_jj, sum_ij = box_sum(fixed * fixed), box_sum(warped * warped), box_sum(fixed * warped)
    mu_i, mu_j = sum_i / size, sum_j / size
    cross = sum_ij - mu_j * sum_i - mu_i * sum_j + mu_i * mu_j * size
    var_i = sum_ii - 2 * mu_i * sum_i + mu_i * mu_i * size
    var_j = sum_jj - 2 * mu_j * sum_j + mu_j * mu_j * size
    return cross * cross / (var_i * var_j + eps)


def diffusion_regulariser(displacement):
    """Diffusion regulariser: ``1/n sum_axes mean((u(x + e_a) - u(x))^2)``, the mean squared forward differences of
    every component along every spatial axis, averaged over the axes (VoxelMorph's ``Grad('l2')`` term).

    Args:
        displacement: ``(B, ndim, *spatial)``.
    """
    axes = range(2, displacement.dim())
    return sum((displacement.diff(dim=axis) ** 2).mean() for axis in axes) / len(axes)


def soft_dice_loss(warped, target, eps: float = NCC_EPS):
    """``1 - mean_k 2 sum(a_k b_k) / max(sum(a_k + b_k), eps)`` over the channels ``k`` (VoxelMorph's ``Dice``,
    shifted to [0, 1]).

    Args:
        warped: warped one-hot (or soft) maps of the moving labels, ``(B, K, *spatial)``.
        target: one-hot maps of the fixed labels, same shape.
    """
    axes = tuple(range(2, warped.dim()))
    top = 2 * (warped * target).sum(dim=axes)
    bottom = (warped + target).sum(dim=axes).clamp_min(eps)
    return 1 - (top / bottom).mean()


def minmax_normalise(array: np.ndarray) -> np.ndarray:
    """``(a - min) / (max - min)`` as float32; a constant image becomes zeros."""
    array = np.asarray(array, dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros_like(array)
    return (array - low) / (high - low)


# ------------------------------------------------------------------ settings and the optimisation
@dataclasses.dataclass(frozen=True)
class IOSettings:
    """Settings of one instance optimisation (module docstring for the defaults' sources).

    Args:
        iterations: Adam steps.
        preset: network preset (``small``, ``paper``; the same names for both networks).
        lr: Adam learning rate.
        lambda_reg: weight of the diffusion regulariser.
        lambda_seg: weight of the soft Dice term (needs both label maps when > 0).
        diffeomorphic: predict a stationary velocity field and use the displacement of its exponential.
        device: ``cpu`` or ``cuda``.
        seed: seeds the network's initialisation.
        ncc_window: NCC window per axis (odd).
        network: ``tmdca`` (:class:`~.network.TMDCA`) or ``convnet`` (:class:`~.convnet.ConvNetRegistration`).
        downsample: fit at 1/``downsample`` resolution (images average-pooled by that factor per axis); the field is
            upsampled (linearly, its vectors scaled) to the input grid, where everything is warped and measured.
    """

    iterations: int = 100
    preset: str = "small"
    lr: float = 1e-3
    lambda_reg: float = 1.0
    lambda_seg: float = 0.0
    diffeomorphic: bool = False
    device: str = "cpu"
    seed: int = 0
    ncc_window: int = NCC_WINDOW
    network: str = "tmdca"
    downsample: int = 1

    def check(self) -> None:
        """Raise UserInputError (named by the CLI flag) for a setting out of range."""
        from nnunet_ext.methods.dca.network import PRESETS

        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 0:
            raise UserInputError(f"--iterations must be >= 0, got {self.iterations}")
        if isinstance(self.downsample, bool) or not isinstance(self.downsample, int) or self.downsample < 1:
            raise UserInputError(f"--downsample must be an integer >= 1, got {self.downsample}")
        if self.network not in NETWORKS:
            raise UserInputError(f"--network must be {' or '.join(NETWORKS)}, got '{self.network}'")
        if self.preset not in PRESETS:
            raise UserInputError(f"--preset {self.preset}: unknown TM-DCA preset; choose one of "
                                 f"{', '.join(sorted(PRESETS))}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserInputError(f"--lr must be a number > 0, got {self.lr}")
        for name in ("lambda_reg", "lambda_seg"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UserInputError(f"--{name} must be a number >= 0, got {value}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserInputError(f"--seed must be an integer >= 0, got {self.seed}")
        if not isinstance(self.ncc_window, int) or self.ncc_window < 1 or self.ncc_window % 2 == 0:
            raise UserInputError(f"ncc_window must be an odd integer >= 1, got {self.ncc_window}")
        if self.device not in DEVICES:
            raise UserInputError(f"--device must be {' or '.join(DEVICES)}, got '{self.device}'")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise UserInputError("--device cuda: no CUDA device is available on this machine (use --device cpu)")


class IOResult(NamedTuple):
    """Output of :func:`instance_optimise`."""

    displacement: np.ndarray  # (ndim, *spatial) float32, voxels, pull-back (moving(x + u(x)) ~ fixed(x))
    warped: np.ndarray  # the moving image (original intensities) warped linearly, float32, 0 outside
    history: list  # per iteration the loss terms before that iteration's step
    final: dict  # loss terms of the returned field
    parameters: int  # trainable parameters of the network
    seconds: float  # wall time of the optimisation (network built to field returned)


def foreground_labels(*label_maps: np.ndarray) -> list[int]:
    """The nonzero labels of any of ``label_maps``, sorted."""
    return sorted(set().union(*(np.unique(m).tolist() for m in label_maps)) - {0})


def _one_hot(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    return np.stack([labels == value for value in values]).astype(np.float32)


def upsample_field(displacement, shape: Sequence[int]):
    """A voxel displacement ``(B, ndim, *coarse)`` resampled linearly onto ``shape`` (corner-aligned, as
    :func:`~.transform.warp` indexes voxels), its components scaled by ``(n - 1) / (m - 1)`` per axis."""
    import torch.nn.functional as F

    coarse = displacement.shape[2:]
    if tuple(coarse) == tuple(shape):
        return displacement
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    field = F.interpolate(displacement, size=tuple(shape), mode=mode, align_corners=True)
    scale = [(n - 1) / max(m - 1, 1) for n, m in zip(shape, coarse)]
    return field * field.new_tensor(scale).view((1, -1) + (1,) * len(shape))


def instance_optimise(fixed: np.ndarray, moving: np.ndarray, settings: IOSettings = IOSettings(),
                      fixed_labels: Optional[np.ndarray] = None, moving_labels: Optional[np.ndarray] = None,
                      trained=None) -> IOResult:
    """Fit a seeded TM-DCA (or ConvNet, ``settings.network``) to one pair (module docstring); return its final field.

    Args:
        fixed, moving: images of one shape, 2D ``(y, x)`` or 3D ``(z, y, x)``, any intensities (normalised inside).
        settings: see :class:`IOSettings` (checked here).
        fixed_labels, moving_labels: integer label maps of that shape; used by the Dice term when
            ``settings.lambda_seg > 0`` (both required then).
        trained: a :class:`~.model.TrainedModel` to start from instead of a freshly initialised network (fine-tuned
            for ``settings.iterations`` steps, or applied as it is with 0 iterations; a copy is fitted); the images
            are then normalised as its training cases were, else min-max.
    """
    import copy

    import torch
    import torch.nn.functional as F

    from nnunet_ext.methods.dca.convnet import build_network
    from nnunet_ext.methods.dca.network import count_parameters
    from nnunet_ext.methods.dca.transform import warp

    settings.check()
    if fixed.shape != moving.shape or fixed.ndim not in (2, 3):
        raise ValueError(f"fixed {fixed.shape} and moving {moving.shape} must be 2D or 3D of one shape")
    if settings.iterations == 0 and trained is None:
        raise UserInputError("--iterations 0 registers with a trained model only (give --model or -tr/-d/-c)")
    use_dice = settings.lambda_seg > 0
    if use_dice and (fixed_labels is None or moving_labels is None):
        raise ValueError("lambda_seg > 0 needs fixed_labels and moving_labels")
    start = time.perf_counter()
    device = torch.device(settings.device)
    factor = settings.downsample
    pool = (F.avg_pool2d if fixed.ndim == 2 else F.avg_pool3d) if factor > 1 else None

    def tensor(array: np.ndarray, pooled: bool = True):
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).unsqueeze(0).to(device)
        return pool(t, factor, ceil_mode=True) if pooled and pool is not None else t

    normalise = minmax_normalise if trained is None else trained.normalise
    fixed_t, moving_t = tensor(normalise(fixed)[None]), tensor(normalise(moving)[None])
    if use_dice:
        values = foreground_labels(fixed_labels, moving_labels)
        use_dice = bool(values)  # no foreground label anywhere: nothing to overlap
    if use_dice:
        fixed_one_hot, moving_one_hot = tensor(_one_hot(fixed_labels, values)), tensor(_one_hot(moving_labels, values))
    torch.manual_seed(settings.seed)
    if trained is None:
        model = build_network(settings.network, fixed_t.shape[2:], config=settings.preset,
                              diffeomorphic=settings.diffeomorphic, integration_steps=INTEGRATION_STEPS,
                              drop_path_rate=0.0)
        model = model.to(device).train()
    else:  # fine-tuning keeps the trained BatchNorm statistics (eval mode); the caller's network is left alone
        model = copy.deepcopy(trained.network).to(device).eval()
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)

    def evaluate():
        displacement = model(moving_t, fixed_t)
        terms = {"ncc": local_ncc(fixed_t, warp(moving_t, displacement), settings.ncc_window),
                 "diffusion": diffusion_regulariser(displacement)}
        total = terms["ncc"] + settings.lambda_reg * terms["diffusion"]
        if use_dice:
            terms["dice"] = soft_dice_loss(warp(moving_one_hot, displacement), fixed_one_hot)
            total = total + settings.lambda_seg * terms["dice"]
        terms["total"] = total
        return displacement, terms

    def numbers(terms) -> dict:
        return {name: float(value.detach()) for name, value in terms.items()}

    history = []
    for _ in range(settings.iterations):
        optimiser.zero_grad(set_to_none=True)
        _, terms = evaluate()
        terms["total"].backward()
        optimiser.step()
        history.append(numbers(terms))
    with torch.no_grad():
        displacement, terms = evaluate()
        if not history:  # a trained model applied as it is: its loss on the pair is the whole curve
            history.append(numbers(terms))
        displacement = upsample_field(displacement, fixed.shape)
        warped = warp(tensor(moving[None], pooled=False), displacement, "bilinear", "zeros")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return IOResult(displacement[0].cpu().numpy().astype(np.float32), warped[0, 0].cpu().numpy(), history,
                    numbers(terms), count_parameters(model), time.perf_counter() - start)


# ------------------------------------------------------------------ reading inputs
@dataclasses.dataclass
class Volume:
    """An input as read: ``array`` in our axis order ``(z, y, x)`` / ``(y, x)``, ``spacing`` in the same order, and
    ``geometry``, a SimpleITK image carrying its size, spacing, origin and direction (for the outputs)."""

    path: Path
    what: str  # role and flag, e.g. "moving image (-m)"
    array: np.ndarray
    spacing: tuple
    geometry: Any

    @property
    def grid(self) -> np.ndarray:
        """The array registered: a 3D array of a single slice is that slice (nnU-Net's 2D layout)."""
        return self.array[0] if _single_slice(self.array.shape) else self.array

    @property
    def grid_spacing(self) -> tuple:
        return self.spacing[1:] if _single_slice(self.array.shape) else self.spacing


def _single_slice(shape: Sequence[int]) -> bool:
    return len(shape) == 3 and shape[0] == 1


def file_stem(path: str | Path) -> str:
    """The file name without its extension (``.nii.gz`` counts as one)."""
    name = Path(path).name
    return name[:-len(".nii.gz")] if name.lower().endswith(".nii.gz") else Path(name).stem


def _read_npz(path: Path, what: str, keys: Sequence[str]) -> np.ndarray:
    import zipfile

    if not path.is_file():
        raise UserInputError(f"missing file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            key = next((k for k in keys if k in names), names[0] if len(names) == 1 else None)
            if key is None:
                raise UserInputError(f"{what} {path} has no array {' or '.join(repr(k) for k in keys)} "
                                     f"(arrays: {', '.join(names) or 'none'})")
            return np.asarray(archive[key])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UserInputError(f"cannot read {what} {path}: not a readable .npz file ({reason})") from None


def _nifti_non_finite(path: Path) -> int:
    """NaN/inf voxels stored in a NIfTI file (SimpleITK's reader turns NaN into 0: read the raw data with nibabel)."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return 0
    try:
        import nibabel

        image = nibabel.load(str(path))
        if not np.issubdtype(image.get_data_dtype(), np.floating):
            return 0
        return int(np.count_nonzero(~np.isfinite(np.asanyarray(image.dataobj))))
    except Exception:  # noqa: BLE001 - a second look at a file SimpleITK already read; no verdict if nibabel can't
        return 0


def read_volume(path: str | Path, what: str, labels: bool = False) -> Volume:
    """Read and check an image (``labels=False``) or a label map (module docstring: formats, ``.npz`` keys, rules).

    Args:
        path: the file.
        what: its role and flag for messages, e.g. ``"moving image (-m)"``.
    """
    import SimpleITK as sitk

    from nnunet_ext.imageio import read_sitk_image

    path = Path(path)
    non_finite = 0
    if path.name.lower().endswith(".npz"):
        array = _read_npz(path, what, NPZ_LABEL_KEYS if labels else NPZ_IMAGE_KEYS).T  # (x, y[, z]) -> ours
        geometry = None
    else:
        geometry = read_sitk_image(path, what)
        if geometry.GetNumberOfComponentsPerPixel() != 1:
            raise UserInputError(f"{what} {path} has {geometry.GetNumberOfComponentsPerPixel()} components per "
                                 f"voxel; register needs a scalar (one-channel) image")
        array = sitk.GetArrayFromImage(geometry)
        non_finite = _nifti_non_finite(path)
    if array.ndim not in (2, 3):
        raise UserInputError(f"{what} {path}: register needs a 2D or 3D image, got an array of shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise UserInputError(f"{what} {path}: unsupported voxel type {array.dtype}")
    if geometry is None:  # .npz: no geometry, 1 mm voxels
        geometry = sitk.Image([int(n) for n in reversed(array.shape)], sitk.sitkUInt8)
    spacing = tuple(float(s) for s in reversed(geometry.GetSpacing()))
    if array.dtype.kind == "f":
        non_finite = max(non_finite, int(np.count_nonzero(~np.isfinite(array))))
    if non_finite:
        raise UserInputError(f"{what} {path} contains {non_finite} NaN or infinite voxel(s)")
    volume = Volume(path, what, array, spacing, geometry)
    if min(volume.grid.shape) < MIN_SIZE:
        raise UserInputError(f"{what} {path} has shape {array.shape}: register needs at least {MIN_SIZE} voxels "
                             f"along every axis")
    if labels:
        if array.dtype.kind == "f":
            fractional = array[array != np.round(array)]
            if fractional.size:
                raise UserInputError(f"{what} {path}: labels must be non-negative integers, found "
                                     f"{fractional.flat[0]:g}")
        if array.dtype.kind != "b" and array.min() < 0:
            raise UserInputError(f"{what} {path}: labels must be non-negative integers, found {array.min():g}")
        volume.array = array.astype(np.int64)
    return volume


def _check_same_grid(first: Volume, second: Volume) -> None:
    """Same shape and spacing (nothing is resampled); a one-line UserInputError naming both otherwise."""
    if first.array.shape != second.array.shape:
        raise UserInputError(f"{first.what} {first.path} has shape {first.array.shape} but {second.what} "
                             f"{second.path} has shape {second.array.shape}: register does not resample, bring both "
                             f"onto one grid first")
    if not np.allclose(first.spacing, second.spacing, rtol=1e-4, atol=1e-6):
        raise UserInputError(f"{first.what} {first.path} has spacing {first.spacing} but {second.what} "
                             f"{second.path} has spacing {second.spacing}: register does not resample, bring both "
                             f"onto one grid first")


def check_inputs(fixed: str | Path, moving: str | Path, moving_seg: str | Path | None = None,
                 fixed_seg: str | Path | None = None) -> tuple[Volume, Volume, Optional[Volume], Optional[Volume]]:
    """Read the inputs and check them against each other (module docstring); UserInputError on bad input."""
    fixed_v = read_volume(fixed, "fixed image (-f)")
    moving_v = read_volume(moving, "moving image (-m)")
    _check_same_grid(fixed_v, moving_v)
    moving_seg_v = read_volume(moving_seg, "moving segmentation (-ms)", labels=True) if moving_seg else None
    fixed_seg_v = read_volume(fixed_seg, "fixed segmentation (-fs)", labels=True) if fixed_seg else None
    if moving_seg_v is not None:
        _check_same_grid(moving_v, moving_seg_v)
    if fixed_seg_v is not None:
        _check_same_grid(fixed_v, fixed_seg_v)
    return fixed_v, moving_v, moving_seg_v, fixed_seg_v


# ------------------------------------------------------------------ writing outputs
def _write_like(path: Path, array: np.ndarray, reference) -> None:
    """Write ``array`` (the registered grid) with the geometry of ``reference`` (a SimpleITK image)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array.reshape(tuple(reversed(reference.GetSize())))))
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path), useCompression=True)


def full_field(displacement: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The field on the input's array shape: a 2D field of a single-slice 3D image gets a zero z component."""
    if len(shape) == displacement.shape[0] + 1:
        displacement = np.concatenate([np.zeros_like(displacement[:1]), displacement])
    return displacement.reshape((len(shape),) + tuple(shape))


def write_learn2reg_field(path: Path, displacement: np.ndarray, reference) -> None:
    """Write our ``(3, Z, Y, X)`` / ``(2, Y, X)`` voxel field as a Learn2Reg 2022+ NIfTI: data array ``[X, Y, Z, 3]``
    (``[X, Y, 2]``) as nibabel reads it, i.e. the components stacked along a last (4th / 3rd) image axis of spacing
    1 and origin 0; the spatial axes have ``reference``'s geometry."""
    import SimpleITK as sitk

    from nnunet_ext.metrics.registration import disp_to_learn2reg

    field = disp_to_learn2reg(displacement.astype(np.float32), channel_axis=-1)  # [X, Y, Z, 3]
    components = []
    for c in range(field.shape[-1]):
        image = sitk.GetImageFromArray(np.ascontiguousarray(field[..., c].T))  # SimpleITK arrays are (z, y, x)
        image.CopyInformation(reference)
        components.append(image)
    sitk.WriteImage(sitk.JoinSeries(components), str(path), useCompression=True)


def _label_dtype(labels: np.ndarray):
    top = int(labels.max()) if labels.size else 0
    return np.uint8 if top < 2 ** 8 else np.uint16 if top < 2 ** 16 else np.int32


def _curve(history: list) -> dict:
    """Up to :data:`CURVE_POINTS` evenly spaced (iteration, total) points, first and last included."""
    n = len(history)
    picks = sorted(set(np.linspace(0, n - 1, min(n, CURVE_POINTS)).round().astype(int).tolist()))
    return {"iteration": [i + 1 for i in picks], "total": [history[i]["total"] for i in picks]}


def _field_summary(displacement: np.ndarray, jacdet: np.ndarray) -> dict:
    from nnunet_ext.metrics.registration import sdlogj

    magnitude = np.sqrt((displacement.astype(np.float64) ** 2).sum(0))
    return {"max_abs_voxels": float(magnitude.max()), "mean_abs_voxels": float(magnitude.mean()),
            "jacdet_min": float(jacdet.min()), "jacdet_max": float(jacdet.max()),
            "negative_jacobian_percent": 100.0 * float(np.count_nonzero(jacdet <= 0)) / jacdet.size,
            "sdlogj": sdlogj(displacement)}


def network_config(settings: IOSettings) -> dict:
    """The size of the network fitted (register.json's ``settings.network_config``): the preset's fields that the
    network reads (the ConvNet reads no transformer field, :mod:`.convnet`)."""
    from nnunet_ext.methods.dca.network import get_config

    config = dataclasses.asdict(get_config(settings.preset, drop_path_rate=0.0))
    if settings.network == "convnet":
        config = {"embed_dim": config["embed_dim"], "num_stages": len(config["depths"]),
                  "head_channels": config["head_channels"]}
    return config


def output_names(fixed: str | Path, moving: str | Path, with_seg: bool) -> dict[str, str]:
    """Output file names in ``-o`` (module docstring)."""
    f, m = file_stem(fixed), file_stem(moving)
    names = {"warped": f"warped_{m}.nii.gz", "displacement": f"disp_{f}_{m}.nii.gz",
             "jacobian_determinant": f"jacdet_{f}_{m}.nii.gz", "record": "register.json"}
    if with_seg:
        names["warped_seg"] = f"warped_seg_{m}.nii.gz"
    return names


# ------------------------------------------------------------------ the command
def register_pair(fixed: str | Path, moving: str | Path, output: str | Path, moving_seg: str | Path | None = None,
                  fixed_seg: str | Path | None = None, settings: IOSettings = IOSettings(),
                  overwrite: bool = False, model=None) -> dict:
    """Python API of ``nnunet-ext register``: check everything, optimise, write ``output`` atomically.

    ``model``: a :class:`~.model.TrainedModel` to register with (``settings.iterations`` steps of fine-tuning on the
    pair, 0: applied as it is); its network, preset and normalisation replace the settings' ones.

    Returns:
        the record written to ``register.json``.
    """
    from nnunet_ext.atomic import atomic_output_dir, check_disjoint, check_replaceable
    from nnunet_ext.metrics.registration import jacobian_determinant, registration_metrics, warp_labels

    start = time.perf_counter()
    settings.check()
    if settings.lambda_seg > 0 and (moving_seg is None or fixed_seg is None):
        raise UserInputError(f"--lambda_seg {settings.lambda_seg:g} needs both -ms and -fs (the Dice term compares "
                             f"the warped moving labels with the fixed labels)")
    inputs = [p for p in (fixed, moving, moving_seg, fixed_seg) if p is not None]
    check_disjoint(output, inputs)  # refused before minutes of optimisation; atomic_output_dir checks again
    check_replaceable(output, overwrite)
    fixed_v, moving_v, moving_seg_v, fixed_seg_v = check_inputs(fixed, moving, moving_seg, fixed_seg)

    result = instance_optimise(fixed_v.grid, moving_v.grid, settings,
                               fixed_seg_v.grid if fixed_seg_v is not None else None,
                               moving_seg_v.grid if moving_seg_v is not None else None,
                               trained=model)
    displacement = result.displacement
    jacdet = jacobian_determinant(displacement)
    warped_seg = warp_labels(moving_seg_v.grid, displacement) if moving_seg_v is not None else None
    metrics = None
    if moving_seg_v is not None and fixed_seg_v is not None:
        labels = foreground_labels(fixed_seg_v.grid, moving_seg_v.grid)
        spacing = fixed_v.grid_spacing
        metrics = {"labels": labels,
                   "before": registration_metrics(np.zeros_like(displacement), fixed_seg_v.grid, moving_seg_v.grid,
                                                  spacing, labels),
                   "after": registration_metrics(displacement, fixed_seg_v.grid, warped_seg, spacing, labels)}
    names = output_names(fixed, moving, moving_seg_v is not None)
    history = result.history
    best = int(np.argmin([h["total"] for h in history]))
    if model is None:
        mode, trained = "instance optimisation", None
    else:
        mode = "trained model" + (f" + {settings.iterations} fine-tuning steps" if settings.iterations else "")
        trained = {**model.describe(), "spacing_note": model.spacing_note(fixed_v.grid_spacing)}
    record = {
        "command": "nnunet-ext register",
        "mode": mode,
        "model": trained,
        "inputs": {"fixed": str(fixed), "moving": str(moving), "moving_seg": None if moving_seg is None
                   else str(moving_seg), "fixed_seg": None if fixed_seg is None else str(fixed_seg)},
        "grid": {"shape": list(fixed_v.array.shape), "spacing": list(fixed_v.spacing),
                 "registered_in": f"{fixed_v.grid.ndim}D"},
        "settings": {**dataclasses.asdict(settings), "optimiser": "Adam",
                     "normalisation": NORMALISATION if model is None else "the model's nnU-Net normalisation",
                     "drop_path_rate": 0.0, "integration_steps": INTEGRATION_STEPS if settings.diffeomorphic else None,
                     "network_config": network_config(settings) if model is None else None,
                     "parameters": result.parameters},
        "seconds": {"optimisation": result.seconds, "total": None},
        "loss": {"terms": list(history[0]), "initial": history[0], "final": result.final,
                 "best": {"iteration": best + 1, **history[best]}, "curve": _curve(history)},
        "field": _field_summary(displacement, jacdet),
        "metrics": metrics,
        "outputs": names,
    }
    with atomic_output_dir(output, overwrite=overwrite, inputs=inputs, written_by="nnunet-ext register") as out:
        reference = fixed_v.geometry
        _write_like(out / names["warped"], result.warped.astype(np.float32), reference)
        if warped_seg is not None:
            _write_like(out / names["warped_seg"], warped_seg.astype(_label_dtype(warped_seg)), reference)
        write_learn2reg_field(out / names["displacement"], full_field(displacement, fixed_v.array.shape),
                              reference)
        _write_like(out / names["jacobian_determinant"], jacdet.astype(np.float32), reference)
        record["seconds"]["total"] = time.perf_counter() - start
        (out / names["record"]).write_text(json.dumps(json_ready(record), indent=2) + "\n")
    return json_ready(record)
