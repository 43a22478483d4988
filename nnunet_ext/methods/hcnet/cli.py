"""``nnunet-ext hcnet cluster``: HCNet stage 1, TIC clustering of a DCE dataset into a heterogeneity-map dataset
(:mod:`nnunet_ext.methods.hcnet.cluster`). Stages 2 and 3 are nnU-Net trainers (``HCNetHIPMTrainer`` on the map
dataset, ``HCNetTrainer`` on the pre-contrast-only labelled dataset)."""
from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("cluster", help="DCE dataset -> heterogeneity-map dataset (pre-contrast image, K clusters)")
    s.add_argument("-d", required=True, help="DCE dataset (id or DatasetXXX_Name in nnUNet_raw, or its folder's "
                                             "path): channel 0 pre-contrast, then post-contrast phases")
    s.add_argument("-o", required=True, type=int, help="dataset id of the map dataset to write")
    s.add_argument("-K", type=int, default=10, help="number of clusters (paper: 10)")
    s.add_argument("--preset", default="paper", help="VQ-VAE schedule: paper (300 epochs, all points) or small "
                                                     "(CPU: 30 epochs on 100k sampled points)")
    s.add_argument("--roi", default="breast", help="breast (mask from breast_masks/ or extrasTr/*_breast), box "
                                                   "(tumour bounding box + margin) or image")
    s.add_argument("--box_margin_mm", type=float, default=10.0, help="margin around the tumour box (--roi box)")
    s.add_argument("--normalization", default="case", help="min-max per case (default) or per voxel")
    s.add_argument("--kmeans", action="store_true", help="scikit-learn KMeans instead of the VQ-VAE (reference)")
    s.add_argument("--literal", action="store_true",
                   help="Eq. 1 as printed (reconstruction + beta codebook term, no commitment term)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--name", default=None, help="map dataset name (default <DCE name>HCNetMapK<K>)")
    s.add_argument("--raw", default=None, help="nnU-Net raw folder to write the map dataset into (default: the DCE "
                                               "dataset's)")
    s.add_argument("-device", default="cpu", help="cpu, cuda or mps (VQ-VAE training)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing map dataset written by this command")


def run(args: argparse.Namespace) -> int:
    from nnunet_ext.methods.hcnet.cluster import cluster_dataset

    cluster_dataset(args.d, args.o, n_clusters=args.K, preset=args.preset, roi=args.roi,
                    normalization=args.normalization, kmeans=args.kmeans, literal=args.literal, seed=args.seed,
                    overwrite=args.overwrite, name=args.name, device=args.device, box_margin_mm=args.box_margin_mm,
                    raw=args.raw)
    return 0
