"""DKM inference helpers: sliding-window post-contrast synthesis with a trained diffusion module (Sect. 2.1) and its
image-similarity metrics, for validation, ``nnunet-ext dkm synthesize-post`` and the benchmarks."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nnunet_ext.errors import UserInputError
from nnunet_ext.methods.dkm.diffusion import LinearDiffusionSchedule


def synthesize_volume(dm: nn.Module, schedule: LinearDiffusionSchedule, pre: torch.Tensor,
                      patch_size: Sequence[int], timesteps: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Post-contrast estimate of a preprocessed pre-contrast volume ``pre`` (Z, Y, X) (or (Y, X)), by
    Gaussian-weighted sliding windows of the DM's one-step synthesis (:meth:`LinearDiffusionSchedule.synthesize_post`).
    A 2D DM (``len(patch_size) == 2``) runs slice by slice over Z."""
    from monai.inferers import sliding_window_inference

    def window(x: torch.Tensor) -> torch.Tensor:
        return schedule.synthesize_post(dm, x, timesteps, seed=seed)

    batch = pre[:, None] if len(patch_size) == 2 and pre.ndim == 3 else pre[None, None]
    roi = [min(p, s) for p, s in zip(patch_size, batch.shape[2:])]
    with torch.no_grad():
        out = sliding_window_inference(batch, roi, 1, window, overlap=0.5, mode="gaussian")
    return out[:, 0] if len(patch_size) == 2 and pre.ndim == 3 else out[0, 0]


def image_similarity(estimate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM (skimage, data range of the reference) of a synthesized image."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    data_range = float(reference.max() - reference.min()) or 1.0
    small_axis = min(reference.shape)
    win = min(7, small_axis if small_axis % 2 else small_axis - 1)
    return {"PSNR": float(peak_signal_noise_ratio(reference, estimate, data_range=data_range)),
            "SSIM": float(structural_similarity(reference, estimate, data_range=data_range, win_size=win))}


def _model_folder(dataset: str, configuration: str, trainer: str, plans: str) -> Path:
    import os

    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    results = os.environ.get("nnUNet_results")
    if not results:
        raise UserInputError("nnUNet_results is not set: run eval \"$(nnunet-ext env)\" first")
    if not dataset.startswith("Dataset") and not dataset.isdigit():
        raise UserInputError(f"-d must be a dataset id or a DatasetXXX_Name folder name, got '{dataset}'")
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as exc:
        reason = "ambiguous" if "More than one" in str(exc) else "not found"
        raise UserInputError(f"dataset {dataset} {reason} in nnUNet_raw/nnUNet_preprocessed/nnUNet_results") from None
    trained = Path(results) / name
    folder = trained / f"{trainer}__{plans}__{configuration}"
    if not folder.is_dir():
        # name what exists, so a wrong -c, -tr or -p is obvious from the one line
        found = sorted(p.name for p in trained.glob("*__*__*") if p.is_dir()) if trained.is_dir() else []
        raise UserInputError(f"no trained diffusion module at {folder}"
                             + (f" (found: {', '.join(found)})" if found else ""))
    return folder


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserInputError(f"model folder lacks {path.name}: {path}")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(content, dict):
        raise UserInputError(f"{path} is not a JSON object")
    return content


def _check_readable_image(path: Path, role: str) -> tuple[int, ...]:
    """Read an image fully (a truncated or corrupt file fails here, not mid-run); return its array shape."""
    from nnunet_ext.imageio import read_image

    array, _ = read_image(path)
    if array.ndim not in (2, 3):
        raise UserInputError(f"{role} {path} has {array.ndim} array dimensions; expected a 3D (or 2D) image")
    if not np.isfinite(array).all():
        raise UserInputError(f"{role} {path} contains NaN or infinite voxels")
    return array.shape


def _check_checkpoint(path: Path) -> None:
    """The checkpoint opens and looks like nnU-Net's (``network_weights``, ``trainer_name``)."""
    import pickle
    import zipfile

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"cannot load checkpoint {path}: {first}") from None
    if not isinstance(checkpoint, dict) or not {"network_weights", "trainer_name"} <= set(checkpoint):
        raise UserInputError(f"{path} is not an nnU-Net checkpoint (no network_weights/trainer_name)")


def zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(float(x.std()), 1e-8)


def synthesize_post_folder(input_folder: str | Path, output_folder: str | Path, dataset: str, configuration: str,
                           fold: str = "all", trainer: str = "DKMDiffusionTrainer_small", plans: str = "nnUNetPlansCPU",
                           reference_folder: str | Path | None = None, timesteps=(50, 100, 200),
                           checkpoint: str = "checkpoint_final.pth", device: str = "cpu",
                           overwrite: bool = False) -> dict:
    """Synthesize ``<case>_0000`` (pre-contrast) images of ``input_folder`` into ``output_folder/<case>.nii.gz``.

    ``reference_folder`` holds real post-contrast images named ``<case>.nii.gz`` or ``<case>_XXXX.nii.gz`` (the last
    time point of an nnU-Net images folder is used: a ``SUB`` channel named so in the dataset.json beside the folder
    is none); then a ``metrics.json`` with per-case and mean PSNR/SSIM is written.
    ``output_folder`` must not exist (or, with ``overwrite``, be an earlier nnunet-ext output) and must not equal,
    contain or lie inside the input or reference folders. Every argument, input image, the model's plans and
    configuration and the checkpoint are checked before anything is written (one-line UserInputError).
    """
    import SimpleITK as sitk
    import torch
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    from nnunet_ext.atomic import atomic_output_dir, check_disjoint, check_replaceable
    from nnunet_ext.datasets_conversion._dce_common import phase_files
    from nnunet_ext.imageio import read_image
    from nnunet_ext.pipeline import check_device

    # Bad input fails here, in this order, before the model is loaded or any output exists:
    # 1. arguments (nothing read yet)
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    reference_folder = Path(reference_folder) if reference_folder is not None else None
    timesteps = tuple(timesteps)
    schedule_length = LinearDiffusionSchedule().num_timesteps
    if not timesteps:
        raise UserInputError("--timesteps needs at least one timestep")
    bad = [t for t in timesteps if not 0 <= int(t) < schedule_length]
    if bad:
        raise UserInputError(f"--timesteps must lie in 0..{schedule_length - 1} (the diffusion schedule has "
                             f"{schedule_length} steps), got {bad[0]}")
    fold = str(fold)
    if fold != "all" and not fold.isdigit():
        raise UserInputError(f"-f must be a fold number or 'all', got '{fold}'")
    check_device(device)
    inputs = [input_folder, reference_folder]
    check_disjoint(output_folder, inputs, role="-o")
    check_replaceable(output_folder, overwrite, what="-o")

    # 2. inputs: every image present and readable
    if not input_folder.is_dir():
        raise UserInputError(f"input folder does not exist: {input_folder}")
    if reference_folder is not None and not reference_folder.is_dir():
        raise UserInputError(f"--reference folder does not exist: {reference_folder}")
    files = sorted(input_folder.glob("*_0000.nii.gz"))
    if not files:
        raise UserInputError(f"no pre-contrast images (*_0000.nii.gz) in {input_folder}")
    references = {}
    for f in files:
        shape = _check_readable_image(f, "pre-contrast image")
        if reference_folder is None:
            continue
        case = f.name[:-len("_0000.nii.gz")]
        candidates = sorted(reference_folder.glob(f"{case}.nii.gz")) or phase_files(reference_folder, case)
        if not candidates:
            raise UserInputError(f"no reference post-contrast image for case {case} in {reference_folder}")
        references[case] = candidates[-1]
        reference_shape = _check_readable_image(references[case], "reference image")
        if reference_shape != shape:
            raise UserInputError(f"reference {references[case]} has shape {reference_shape}, the pre-contrast "
                                 f"image {f} has {shape}")

    # 3. model folder, its plans and the configuration
    model = _model_folder(dataset, configuration, trainer, plans)
    model_plans = _read_json(model / "plans.json")
    _read_json(model / "dataset.json")
    available = sorted((model_plans.get("configurations") or {}).keys())
    if configuration not in available:
        raise UserInputError(f"-c {configuration} is not a configuration of {model / 'plans.json'} (has: "
                             f"{', '.join(available) or 'none'})")

    # 4. checkpoint
    checkpoint_file = model / f"fold_{fold}" / checkpoint
    if not checkpoint_file.is_file():
        raise UserInputError(f"missing checkpoint {checkpoint_file}")
    _check_checkpoint(checkpoint_file)

    predictor = nnUNetPredictor(device=torch.device(device), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), [fold if fold == "all" else int(fold)], checkpoint)
    dm = predictor.network.eval()
    dm.load_state_dict(predictor.list_of_parameters[0])
    schedule = LinearDiffusionSchedule().to(device)
    plans_manager, config = predictor.plans_manager, predictor.configuration_manager
    preprocessor = DefaultPreprocessor(verbose=False)
    metrics = {}
    with atomic_output_dir(output_folder, overwrite=overwrite, inputs=inputs,
                           written_by="nnunet-ext dkm synthesize-post") as tmp:
        for f in files:
            case = f.name[:-len("_0000.nii.gz")]
            data, _, props = preprocessor.run_case([str(f)], None, plans_manager, config, predictor.dataset_json)
            volume = torch.from_numpy(np.asarray(data[0], dtype=np.float32)).to(device)
            estimate = synthesize_volume(dm, schedule, volume, config.patch_size, timesteps).cpu().numpy()
            # back to the input geometry, in the order nnU-Net exports predictions: resample, uncrop, transpose
            spacing_t = [props["spacing"][i] for i in plans_manager.transpose_forward]
            current = config.spacing if len(config.spacing) == len(props["shape_after_cropping_and_before_resampling"]) \
                else [spacing_t[0], *config.spacing]
            resampled = np.asarray(config.resampling_fn_probabilities(
                estimate[None], props["shape_after_cropping_and_before_resampling"], current, spacing_t))[0]
            full = insert_crop_into_image(np.zeros(props["shape_before_cropping"], np.float32), resampled,
                                          props["bbox_used_for_cropping"])
            full = np.asarray(full).transpose(plans_manager.transpose_backward)
            image = sitk.GetImageFromArray(full.astype(np.float32))
            image.CopyInformation(sitk.ReadImage(str(f)))
            sitk.WriteImage(image, str(tmp / f"{case}.nii.gz"), useCompression=True)
            if case in references:
                ref, _ = read_image(references[case])
                metrics[case] = image_similarity(full, zscore(ref.astype(np.float32)))
        if metrics:
            mean = {m: float(np.mean([c[m] for c in metrics.values()])) for m in ("PSNR", "SSIM")}
            (tmp / "metrics.json").write_text(json.dumps({"mean": mean, "per_case": metrics}, indent=2))
    return metrics


