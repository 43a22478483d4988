"""``nnunet-ext postprocess breast-mask -i PRED -m MASKS -o OUT``: keep predicted lesion voxels inside the breast.

The contrastive paper removes over-segmentation outside the breast with a whole-breast segmentation network
S^Breast (Sect. 2.2, last paragraph). Its masks come from any breast model (a plain nnU-Net trained on breast masks,
``nnUNetv2_predict`` of it) or from the breast masks a converter or the phantom wrote: for each prediction
``CASE.nii.gz`` the mask is ``MASKS/CASE.nii.gz``, ``MASKS/CASE_breast.nii.gz`` (phantom extras, MAMA-MIA
``breast_masks``) or ``MASKS/CASE_0000.nii.gz``. Labels outside the mask (mask value 0) become background; the
image geometry of mask and prediction must agree. OUT is written completely or not at all.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nnunet_ext.errors import UserInputError

MASK_SUFFIXES = ("", "_breast", "_0000")


def mask_file(masks: Path, case: str, ending: str) -> Path:
    for suffix in MASK_SUFFIXES:
        candidate = masks / f"{case}{suffix}{ending}"
        if candidate.is_file():
            return candidate
    raise UserInputError(f"no breast mask for case {case} in {masks} (looked for "
                         f"{', '.join(case + s + ending for s in MASK_SUFFIXES)})")


def apply_breast_masks(predictions: str | Path, masks: str | Path, output: str | Path, overwrite: bool = False
                       ) -> list[str]:
    """Mask every prediction in ``predictions`` with its breast mask; returns the case names written."""
    import SimpleITK as sitk

    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.geometry import geometry_mismatch
    from nnunet_ext.imageio import read_sitk_image
    from nnunet_ext.metrics.evaluate import case_name

    predictions, masks = Path(predictions), Path(masks)
    for folder, what in ((predictions, "prediction"), (masks, "mask")):
        if not folder.is_dir():
            raise UserInputError(f"{what} folder not found: {folder}")
    files = sorted(p for p in predictions.iterdir() if p.name.endswith((".nii.gz", ".nii", ".mha", ".nrrd")))
    if not files:
        raise UserInputError(f"no prediction images in {predictions}")
    pairs = []
    for file in files:  # every mask found and readable before anything is written
        case = case_name(file)
        pairs.append((file, mask_file(masks, case, file.name[len(case):])))
    written = []
    with atomic_output_dir(output, overwrite, inputs=[predictions, masks],
                           written_by="nnunet-ext postprocess breast-mask") as tmp:
        for file, mask_path in pairs:
            prediction, mask = read_sitk_image(file, "prediction"), read_sitk_image(mask_path, "breast mask")
            mismatch = geometry_mismatch(prediction, mask)
            if mismatch:
                raise UserInputError(f"{mask_path}: geometry differs from the prediction {file} ({mismatch})")
            labels = sitk.GetArrayFromImage(prediction)
            kept = np.where(sitk.GetArrayFromImage(mask) > 0, labels, 0).astype(labels.dtype)
            image = sitk.GetImageFromArray(kept)
            image.CopyInformation(prediction)
            sitk.WriteImage(image, str(tmp / file.name), useCompression=True)
            written.append(case_name(file))
    return written


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("breast-mask", help="set predicted labels outside the breast mask to background")
    s.add_argument("-i", required=True, help="folder of predicted label maps")
    s.add_argument("-m", required=True, help="folder of breast masks (CASE.nii.gz, CASE_breast.nii.gz or "
                                             "CASE_0000.nii.gz; nonzero = breast)")
    s.add_argument("-o", required=True, help="output folder (written completely or not at all)")
    s.add_argument("--overwrite", action="store_true", help="replace an output folder this command wrote before")


def run(args: argparse.Namespace) -> int:
    cases = apply_breast_masks(args.i, args.m, args.o, args.overwrite)
    print(f"masked {len(cases)} prediction(s) -> {args.o}")
    return 0
