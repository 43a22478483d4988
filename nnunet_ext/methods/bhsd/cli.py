"""``nnunet-ext bhsd merge``: one-class model predictions -> one multi-class label map per case (BHSD Table 3)."""
from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("merge", help="merge nnUNetv2_predict outputs of one-class models (BHSDSingleClassTrainer_X)")
    s.add_argument("-i", nargs="+", required=True, metavar="DIR",
                   help="prediction folders, one per one-class model (each with nnU-Net's dataset.json)")
    s.add_argument("-o", required=True, help="output folder of merged label maps")
    s.add_argument("--rule", default="probability", choices=("probability", "priority"),
                   help="conflict rule: probability = most confident model (needs --save_probabilities .npz files), "
                        "priority = first class of --priority (default)")
    s.add_argument("--priority", nargs="+", type=int, default=None, metavar="LABEL",
                   help="class order for --rule priority (default: the order of -i)")
    s.add_argument("--reference", default=None, metavar="DIR",
                   help="multi-class reference labels: also write each one-class model's Dice for its class into "
                        "merge.json (Table 3 rows 1class-X)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace -o if it is an earlier output of nnunet-ext (never any other folder)")


def run(args: argparse.Namespace) -> int:
    from .merge import merge_folders

    names = merge_folders(args.i, args.o, rule=args.rule, priority=args.priority, overwrite=args.overwrite,
                          reference=args.reference)
    print(f"merged {len(names)} cases from {len(args.i)} one-class models ({args.rule} rule) -> {args.o}")
    return 0
