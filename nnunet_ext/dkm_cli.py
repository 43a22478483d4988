"""``nnunet-ext dkm synthesize-post``: post-contrast images predicted from pre-contrast images by a trained DKM
diffusion module (Sect. 2.1), with PSNR/SSIM against real post-contrast images when given.

The raw pre-contrast image goes through nnU-Net's own preprocessing (plans of the DM's training), the DM's one-step
synthesis runs by sliding windows (``nnunet_ext.training.dkm.synthesize_volume``), and the result is mapped back to
the input's geometry (resample -> uncrop -> transpose back, as nnU-Net exports predictions). Output intensities are
in the units the DM learned: the z-scored post-contrast phase (nnU-Net's per-image ZScore normalization); the
reference is z-scored the same way before PSNR/SSIM.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nnunet_ext.errors import UserInputError


def _model_folder(dataset: str, configuration: str, trainer: str, plans: str) -> Path:
    import os

    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    results = os.environ.get("nnUNet_results")
    if not results:
        raise UserInputError("nnUNet_results is not set: run eval \"$(nnunet-ext env)\" first")
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError:
        raise UserInputError(f"dataset {dataset} not found in nnUNet_raw/nnUNet_preprocessed/nnUNet_results") from None
    folder = Path(results) / name / f"{trainer}__{plans}__{configuration}"
    if not folder.is_dir():
        raise UserInputError(f"no trained diffusion module at {folder}")
    return folder


def zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(float(x.std()), 1e-8)


def synthesize_post_folder(input_folder: str | Path, output_folder: str | Path, dataset: str, configuration: str,
                           fold: str = "all", trainer: str = "DKMDiffusionTrainer_small", plans: str = "nnUNetPlansCPU",
                           reference_folder: str | Path | None = None, timesteps=(50, 100, 200),
                           checkpoint: str = "checkpoint_final.pth", device: str = "cpu") -> dict:
    """Synthesize ``<case>_0000`` (pre-contrast) images of ``input_folder`` into ``output_folder/<case>.nii.gz``.

    ``reference_folder`` holds real post-contrast images named ``<case>.nii.gz`` or ``<case>_XXXX.nii.gz`` (the last
    channel of an nnU-Net images folder is used); then a ``metrics.json`` with per-case and mean PSNR/SSIM is written.
    """
    import SimpleITK as sitk
    import torch
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.diffusion import LinearDiffusionSchedule
    from nnunet_ext.imageio import read_image
    from nnunet_ext.training.dkm import image_similarity, synthesize_volume

    input_folder, output_folder = Path(input_folder), Path(output_folder)
    if not input_folder.is_dir():
        raise UserInputError(f"input folder does not exist: {input_folder}")
    files = sorted(input_folder.glob("*_0000.nii.gz"))
    if not files:
        raise UserInputError(f"no pre-contrast images (*_0000.nii.gz) in {input_folder}")
    model = _model_folder(dataset, configuration, trainer, plans)
    if not (model / f"fold_{fold}" / checkpoint).is_file():
        raise UserInputError(f"missing checkpoint {model / f'fold_{fold}' / checkpoint}")
    references = {}
    if reference_folder is not None:
        for f in files:
            case = f.name[:-len("_0000.nii.gz")]
            candidates = sorted(Path(reference_folder).glob(f"{case}.nii.gz")) or \
                sorted(Path(reference_folder).glob(f"{case}_[0-9][0-9][0-9][0-9].nii.gz"))
            if not candidates:
                raise UserInputError(f"no reference post-contrast image for case {case} in {reference_folder}")
            references[case] = candidates[-1]

    predictor = nnUNetPredictor(device=torch.device(device), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), [fold if fold == "all" else int(fold)], checkpoint)
    dm = predictor.network.eval()
    dm.load_state_dict(predictor.list_of_parameters[0])
    schedule = LinearDiffusionSchedule().to(device)
    plans_manager, config = predictor.plans_manager, predictor.configuration_manager
    preprocessor = DefaultPreprocessor(verbose=False)
    metrics = {}
    with atomic_output_dir(output_folder, overwrite=True) as tmp:
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
                if ref.shape != full.shape:
                    raise UserInputError(f"reference {references[case]} has shape {ref.shape}, the pre-contrast "
                                         f"image {f} has {full.shape}")
                metrics[case] = image_similarity(full, zscore(ref.astype(np.float32)))
        if metrics:
            mean = {m: float(np.mean([c[m] for c in metrics.values()])) for m in ("PSNR", "SSIM")}
            (tmp / "metrics.json").write_text(json.dumps({"mean": mean, "per_case": metrics}, indent=2))
    return metrics


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("synthesize-post", help="predict post-contrast images from pre-contrast images")
    s.add_argument("-i", required=True, help="folder with pre-contrast images <case>_0000.nii.gz")
    s.add_argument("-o", required=True, help="output folder (<case>.nii.gz, metrics.json with --reference)")
    s.add_argument("-d", required=True, help="dataset (id or name) the diffusion module was trained on")
    s.add_argument("-c", default="3d_fullres", help="configuration")
    s.add_argument("-f", default="all", help="fold of the diffusion module (default all)")
    s.add_argument("-tr", default="DKMDiffusionTrainer_small", help="diffusion module trainer")
    s.add_argument("-p", default="nnUNetPlansCPU", help="plans identifier")
    s.add_argument("--reference", default=None, help="folder with real post-contrast images for PSNR/SSIM")
    s.add_argument("--timesteps", type=int, nargs="+", default=[50, 100, 200],
                   help="timesteps averaged by the one-step synthesis")
    s.add_argument("-device", default="cpu")


def run(args: argparse.Namespace) -> int:
    metrics = synthesize_post_folder(args.i, args.o, args.d, args.c, args.f, args.tr, args.p, args.reference,
                                     tuple(args.timesteps), device=args.device)
    if metrics:
        for case, m in metrics.items():
            print(f"{case}: PSNR {m['PSNR']:.2f} dB  SSIM {m['SSIM']:.3f}")
    print(f"wrote {args.o}")
    return 0
