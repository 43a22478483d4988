"""``nnunet-ext register``: register a moving image onto a fixed one with TM-DCA (or a ConvNet with TM-DCA's decoder,
``--network convnet``) by instance optimisation.

A thin wrapper over :func:`nnunet_ext.methods.dca.register.register_pair`; inputs, loss, defaults and outputs are
documented in :mod:`nnunet_ext.methods.dca.register`.
"""
from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Register MOVING onto FIXED by fitting a freshly initialised TM-DCA network (or, with "
                     "--network convnet, a ConvNet with TM-DCA's decoder) to this one pair "
                     "(instance optimisation: local NCC + diffusion regulariser [+ soft Dice]); writes the warped "
                     "image (and labels), the Learn2Reg displacement field, its Jacobian determinant and "
                     "register.json into -o.")
    p.add_argument("-f", dest="fixed", required=True, metavar="FIXED",
                   help="fixed image: any SimpleITK-readable file, or .npz with array 'vol' (or 'vol_data')")
    p.add_argument("-m", dest="moving", required=True, metavar="MOVING",
                   help="moving image, same shape and spacing as FIXED (nothing is resampled)")
    p.add_argument("-ms", dest="moving_seg", default=None, metavar="MOVING_SEG",
                   help="moving label map (.npz: array 'seg'); warped into warped_seg_<moving>.nii.gz")
    p.add_argument("-fs", dest="fixed_seg", default=None, metavar="FIXED_SEG",
                   help="fixed label map; with -ms: Dice/HD95/Jacobian metrics before and after in register.json")
    p.add_argument("-o", dest="output", required=True, metavar="OUT", help="output folder")
    p.add_argument("--iterations", type=int, default=100, help="Adam steps on this pair (default 100)")
    p.add_argument("--network", default="tmdca",
                   help="tmdca (default: TM-DCA) or convnet (a VoxelMorph-style conv encoder with TM-DCA's decoder)")
    p.add_argument("--preset", default="small",
                   help="network size, for either network: small (default, CPU-sized) or paper (the authors' "
                        "config, for a GPU)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--lambda_reg", type=float, default=1.0,
                   help="weight of the diffusion regulariser (default 1.0, VoxelMorph's setting for NCC)")
    p.add_argument("--lambda_seg", type=float, default=0.0,
                   help="weight of the soft Dice term between the warped -ms and -fs (default 0: unsupervised)")
    p.add_argument("--diffeomorphic", action="store_true",
                   help="predict a stationary velocity field and integrate it (scaling and squaring)")
    p.add_argument("--device", "-device", dest="device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the network's initialisation (default 0)")
    p.add_argument("--downsample", type=int, default=1,
                   help="fit at 1/N resolution and upsample the field (default 1: full resolution)")
    trained = p.add_argument_group("trained model (instead of a freshly initialised network)")
    trained.add_argument("--model", default=None, metavar="FOLDER",
                         help="nnU-Net model folder <trainer>__<plans>__<configuration> of a DCARegSegTrainer")
    trained.add_argument("-tr", dest="trainer", default=None, help="trainer name (with -d and -c, in $nnUNet_results)")
    trained.add_argument("-d", dest="dataset", default=None, help="dataset name or id")
    trained.add_argument("-c", dest="configuration", default=None, help="configuration, e.g. 3d_fullres")
    trained.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    trained.add_argument("--fold", default="0", help="fold of the model (default 0)")
    trained.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file name")
    p.add_argument("--overwrite", action="store_true",
                   help="replace -o if it is an earlier output of nnunet-ext (never any other folder)")


def run(args: argparse.Namespace) -> int:
    from .convnet import NETWORKS
    from .register import IOSettings, register_pair

    settings = IOSettings(iterations=args.iterations, preset=args.preset, lr=args.lr, lambda_reg=args.lambda_reg,
                          lambda_seg=args.lambda_seg, diffeomorphic=args.diffeomorphic, device=args.device,
                          seed=args.seed, network=args.network, downsample=args.downsample)
    model = None
    if args.model or args.trainer or args.dataset or args.configuration:
        from .model import load_model, model_folder

        settings.check()  # the device first
        folder = model_folder(args.model, args.trainer, args.dataset, args.configuration, args.plans)
        model = load_model(folder, args.fold, args.checkpoint, args.device)
    record = register_pair(args.fixed, args.moving, args.output, args.moving_seg, args.fixed_seg, settings,
                           overwrite=args.overwrite, model=model)
    loss = record["loss"]
    what = f"{NETWORKS[args.network]} {args.preset}" if model is None else f"model {model.trainer_name}"
    line = (f"registered {args.moving} onto {args.fixed}: {what}, "
            f"{args.iterations} iterations in "
            f"{record['seconds']['optimisation']:.1f} s, loss {loss['initial']['total']:.4f} -> "
            f"{loss['final']['total']:.4f}")
    if record["metrics"] is not None:
        before, after = record["metrics"]["before"]["dice_mean"], record["metrics"]["after"]["dice_mean"]
        if before is not None and after is not None:
            line += f", mean Dice {before:.3f} -> {after:.3f}"
    print(f"{line}; wrote {args.output}")
    return 0
