"""``nnunet-ext dkm synthesize-post``: post-contrast images predicted from pre-contrast images by a trained DKM
diffusion module (Sect. 2.1), with PSNR/SSIM against real post-contrast images when given.

The raw pre-contrast image goes through nnU-Net's own preprocessing (plans of the DM's training), the DM's one-step
synthesis runs by sliding windows (:func:`nnunet_ext.methods.dkm.inference.synthesize_volume`), and the result is
mapped back to the input's geometry (resample -> uncrop -> transpose back, as nnU-Net exports predictions). Output intensities are
in the units the DM learned: the z-scored post-contrast phase (nnU-Net's per-image ZScore normalization); the
reference is z-scored the same way before PSNR/SSIM.
"""
from __future__ import annotations

import argparse


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
                   help="timesteps averaged by the one-step synthesis, each in 0..999 (the DM's linear schedule)")
    s.add_argument("-device", default="cpu", help="cpu, cuda or mps (checked before anything is loaded)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace -o if it is an earlier output of this command (never any other folder)")


def run(args: argparse.Namespace) -> int:
    # every argument, input and the model are validated by synthesize_post_folder before it writes anything
    from nnunet_ext.methods.dkm.inference import synthesize_post_folder

    metrics = synthesize_post_folder(args.i, args.o, args.d, args.c, args.f, args.tr, args.p, args.reference,
                                     tuple(args.timesteps), device=args.device,
                                     overwrite=args.overwrite)
    if metrics:
        for case, m in metrics.items():
            print(f"{case}: PSNR {m['PSNR']:.2f} dB  SSIM {m['SSIM']:.3f}")
    print(f"wrote {args.o}")
    return 0
