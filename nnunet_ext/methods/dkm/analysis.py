"""How well the DKM diffusion module predicts contrast enhancement inside the lesions.

The DM is trained to turn a pre-contrast image x_0 into the post-contrast x_k (Sect. 2.1). Its kinetic code can
only help segmentation if it carries the lesions' enhancement, so the benchmark measures, per test case, with
intensities z-scored per image (the DM's nnU-Net preprocessing; :func:`nnunet_ext.methods.dkm.inference.zscore`):

- true enhancement ``E = z(x_k) - z(x_0)``, predicted enhancement ``Ê = s - z(x_0)`` with ``s`` the synthesized
  post-contrast image (:func:`~nnunet_ext.methods.dkm.inference.synthesize_post_folder`);
- ``lesion_enhancement_corr``: Pearson's r of Ê against E over the lesion voxels (label > 0); NaN when the lesion
  has fewer than two voxels or either enhancement is constant there;
- ``lesion_PSNR``: 10 log10(R^2 / MSE) of s against z(x_k) over the lesion voxels, R the data range of z(x_k) over
  the whole image (as the whole-image PSNR); infinite for a perfect estimate;
- ``PSNR``/``SSIM`` over the whole image (from ``synthesize_post_folder``) and ``identity_PSNR``, the whole-image
  PSNR of the trivial estimate "post = pre", which the DM has to beat.

Command line (used by the DKM benchmark spec as a command row)::

    python -m nnunet_ext.methods.dkm.analysis -i DCE_imagesTs -l labelsTs -d DCE_ID -o analysis.json \\
        [-c 3d_fullres] [-f all] [-tr DKMDiffusionTrainer_small] [-p nnUNetPlansCPU] [-device cpu]

writes ``analysis.json`` with the means and ``per_case`` values (NaN as null).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from nnunet_ext.errors import UserInputError
from nnunet_ext.jsonio import json_ready


def _psnr(estimate: np.ndarray, reference: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((np.asarray(estimate, np.float64) - np.asarray(reference, np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range ** 2 / mse)


def enhancement_agreement(pre: np.ndarray, post: np.ndarray, synthesized: np.ndarray,
                          lesion: np.ndarray) -> dict[str, float]:
    """Lesion-restricted agreement of synthesized and true enhancement (all images z-scored, same shape).

    Returns ``lesion_enhancement_corr``, ``lesion_PSNR``, ``identity_PSNR`` and ``n_lesion_voxels``.
    """
    pre, post, synthesized = (np.asarray(a, np.float64) for a in (pre, post, synthesized))
    lesion = np.asarray(lesion) > 0
    if not pre.shape == post.shape == synthesized.shape == lesion.shape:
        raise ValueError(f"shapes differ: pre {pre.shape}, post {post.shape}, synthesized {synthesized.shape}, "
                         f"lesion {lesion.shape}")
    data_range = float(post.max() - post.min()) or 1.0
    n = int(lesion.sum())
    corr = math.nan
    lesion_psnr = math.nan
    if n >= 1:
        lesion_psnr = _psnr(synthesized[lesion], post[lesion], data_range)
    if n >= 2:
        true_enhancement = (post - pre)[lesion]
        predicted_enhancement = (synthesized - pre)[lesion]
        if np.ptp(true_enhancement) > 0 and np.ptp(predicted_enhancement) > 0:
            from scipy.stats import pearsonr

            corr = float(pearsonr(predicted_enhancement, true_enhancement).statistic)
    return {"lesion_enhancement_corr": corr, "lesion_PSNR": lesion_psnr,
            "identity_PSNR": _psnr(pre, post, data_range), "n_lesion_voxels": n}


def _mean(values) -> float:
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return float(x.mean()) if x.size else math.nan


def analyze_folder(images: str | Path, labels: str | Path, synthesized: str | Path,
                   similarity: dict | None = None) -> dict:
    """Per-case :func:`enhancement_agreement` of ``synthesized/<case>.nii.gz`` against the nnU-Net images folder
    ``images`` (``<case>_0000`` pre-contrast, the last time point post-contrast: a ``SUB`` channel named so in the
    dataset.json beside the folder is none) and lesion masks ``labels/<case>``.
    ``similarity`` is ``synthesize_post_folder``'s per-case PSNR/SSIM, merged in. Returns means and ``per_case``."""
    from nnunet_ext.datasets_conversion._dce_common import phase_files
    from nnunet_ext.imageio import read_image
    from nnunet_ext.methods.dkm.inference import zscore

    images, labels, synthesized = Path(images), Path(labels), Path(synthesized)
    per_case = {}
    for pre_file in sorted(images.glob("*_0000.nii.gz")):
        case = pre_file.name[:-len("_0000.nii.gz")]
        channels = phase_files(images, case)
        if len(channels) < 2:
            raise UserInputError(f"{images}: case {case} has no post-contrast channel")
        for path in (labels / f"{case}.nii.gz", synthesized / f"{case}.nii.gz"):
            if not path.is_file():
                raise UserInputError(f"missing {path}")
        pre = zscore(read_image(pre_file)[0].astype(np.float64))
        post = zscore(read_image(channels[-1])[0].astype(np.float64))
        estimate = read_image(synthesized / f"{case}.nii.gz")[0].astype(np.float64)
        lesion = read_image(labels / f"{case}.nii.gz")[0]
        per_case[case] = {**(similarity or {}).get(case, {}), **enhancement_agreement(pre, post, estimate, lesion)}
    if not per_case:
        raise UserInputError(f"no pre-contrast images (*_0000.nii.gz) in {images}")
    metrics = sorted({m for values in per_case.values() for m in values if m != "n_lesion_voxels"})
    return {**{m: _mean(values.get(m) for values in per_case.values()) for m in metrics},
            "n_cases": len(per_case), "per_case": per_case}


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.atomic import atomic_output_file
    from nnunet_ext.methods.dkm.inference import synthesize_post_folder

    p = argparse.ArgumentParser(prog="python -m nnunet_ext.methods.dkm.analysis", description=__doc__.split("\n")[0])
    p.add_argument("-i", required=True, help="DCE images folder (nnU-Net layout, <case>_0000 = pre-contrast)")
    p.add_argument("-l", required=True, help="lesion label maps <case>.nii.gz")
    p.add_argument("-d", required=True, help="dataset id or name of the DM (the DCE dataset)")
    p.add_argument("-o", required=True, help="output JSON")
    p.add_argument("--synth_dir", default=None, help="where the synthesized images go (default: next to -o)")
    p.add_argument("-c", default="3d_fullres")
    p.add_argument("-f", default="all")
    p.add_argument("-tr", default="DKMDiffusionTrainer_small")
    p.add_argument("-p", default="nnUNetPlansCPU")
    p.add_argument("-device", default="cpu")
    args = p.parse_args(argv)
    try:
        output = Path(args.o)
        synth_dir = Path(args.synth_dir) if args.synth_dir else output.with_name(output.stem + "_synthesized")
        similarity = synthesize_post_folder(args.i, synth_dir, args.d, args.c, args.f, args.tr, args.p,
                                            reference_folder=args.i, device=args.device, overwrite=True)
        result = analyze_folder(args.i, args.l, synth_dir, similarity)
    except UserInputError as exc:
        print(f"dkm analysis: error: {exc}")
        return 2
    with atomic_output_file(output) as tmp:
        tmp.write_text(json.dumps(json_ready(result), indent=2) + "\n")
    print(json.dumps({k: v for k, v in json_ready(result).items() if k != "per_case"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
