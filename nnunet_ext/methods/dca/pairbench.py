"""Register one image pair with one method and write its Learn2Reg metrics as a benchmark JSON.

``python -m nnunet_ext.methods.dca.pairbench --method {tmdca_io,convnet_io,syn} --fixed A --moving B
[--fixed_seg SA --moving_seg SB [--labels labels.npz]] [--both_directions] [--iterations N] [--preset small]
[--device cpu] -o OUT.json``

Methods:

* ``tmdca_io``: TM-DCA fitted to the pair by instance optimisation (:func:`~.register.instance_optimise`, the
  settings of ``nnunet-ext register``: local NCC 9 + diffusion regulariser, Adam; ``--iterations``, ``--preset``,
  ``--lr``, ``--lambda_reg``, ``--seed``, ``--diffeomorphic``, ``--device``);
* ``convnet_io``: the same with :class:`~.convnet.ConvNetRegistration` (a conv encoder with TM-DCA's decoder);
* ``trained``: a trained ``DCARegSegTrainer`` model (``--model FOLDER --fold F``, :mod:`.model`), applied as it is
  (``--iterations 0``) or fine-tuned on the pair for ``--iterations`` steps; inputs normalised as its training data;
* ``syn``: ANTs SyN without an affine stage (:func:`~.syn.syn_register`, ANTsPy's default SyN parameters unless
  ``--syn_metric`` / ``--syn_iterations``; needs the extra ``registration-bench``). CPU only.

Inputs are read as ``nnunet-ext register`` reads them (:func:`~.register.read_volume`: any SimpleITK image, or
VoxelMorph/Learn2Reg ``.npz`` with the image in ``vol`` / ``vol_data`` and the labels in ``seg`` or a single array);
both images share one grid. ``--labels``: an ``.npz`` whose array ``labels`` (or single array) lists the label ids to
score (VoxelMorph's ``labels.npz``); default: every nonzero label of either segmentation. ``--both_directions``
registers B onto A (``forward``: moving B, fixed A, as given) and A onto B (``backward``).

Per direction, with :func:`~nnunet_ext.metrics.registration.registration_metrics` (the moving labels warped by
:func:`~nnunet_ext.metrics.registration.warp_labels`, nearest neighbour, for every method alike): Dice and HD95 (mm,
the fixed image's spacing) per label and their NaN-ignoring means, SDlogJ, % det J <= 0, % NDV; Dice and HD95 of the
unregistered pair; wall seconds of the registration (the method's call: network built to field returned, or ANTs'
registration plus composing its field). For ``syn`` with segmentations also the agreement between ANTs' own
nearest-neighbour label warp and ours through the converted field (a check of the conversion).

``-o OUT.json`` (written atomically): top-level numbers, means over the directions, that a benchmark harness reads as
metrics: ``dice``, ``hd95``, ``sdlogj``, ``negjac_pct``, ``ndv_pct``, ``seconds``, ``dice_before`` (and
``seconds_per_iteration`` for the IO methods); ``per_case``: ``"<direction>/label_<id>" -> {"Dice", "HD95"}`` so two
methods can be paired label by label; ``directions``: everything per direction; ``method``, ``settings`` and
``provenance`` (commit, command, torch / numpy / antspyx versions, threads, device). Undefined values are ``null``.
Without segmentations the label metrics are ``null`` and ``per_case`` is empty. Bad arguments: exit 2 with one line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from nnunet_ext.cli import run_module_cli
from nnunet_ext.errors import UserInputError

PROG = "python -m nnunet_ext.methods.dca.pairbench"
METHODS = {"tmdca_io": "tmdca", "convnet_io": "convnet", "syn": None, "trained": "tmdca"}  # method -> IO network
DIRECTIONS = ("forward", "backward")
LABEL_KEYS = ("labels",)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="registration method")
    p.add_argument("--fixed", required=True, help="fixed image A (SimpleITK-readable, or .npz 'vol'/'vol_data')")
    p.add_argument("--moving", required=True, help="moving image B, same grid as A")
    p.add_argument("--fixed_seg", default=None, help="label map of A (.npz: 'seg' or a single array)")
    p.add_argument("--moving_seg", default=None, help="label map of B")
    p.add_argument("--labels", default=None,
                   help=".npz with array 'labels': the label ids to score (default: every nonzero label)")
    p.add_argument("--both_directions", action="store_true", help="also register A onto B")
    p.add_argument("--iterations", type=int, default=100, help="IO methods: Adam steps (default 100)")
    p.add_argument("--preset", default="small", help="IO methods: network size, small (default) or paper")
    p.add_argument("--lr", type=float, default=1e-3, help="IO methods: Adam learning rate (default 1e-3)")
    p.add_argument("--lambda_reg", type=float, default=1.0, help="IO methods: diffusion weight (default 1.0)")
    p.add_argument("--diffeomorphic", action="store_true", help="IO methods: integrate a stationary velocity field")
    p.add_argument("--downsample", type=int, default=1,
                   help="IO methods: fit at 1/N resolution, field upsampled (default 1)")
    p.add_argument("--model", default=None, help="trained: the model folder <trainer>__<plans>__<configuration>")
    p.add_argument("--fold", default="0", help="trained: the model's fold (default 0)")
    p.add_argument("--seed", type=int, default=0, help="IO: network initialisation seed; syn: ANTs random seed")
    p.add_argument("--device", default="cpu", help="IO methods: cpu (default) or cuda; syn runs on the CPU")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch and ITK (default: torch's default, 1 ITK thread for bitwise "
                        "reproducible SyN)")
    p.add_argument("--syn_metric", default="mattes", help="syn: ANTs SyN metric (default mattes, ANTsPy's)")
    p.add_argument("--syn_iterations", type=int, nargs="+", default=[40, 20, 0],
                   help="syn: iterations per level, coarsest first (default 40 20 0, ANTsPy's)")
    p.add_argument("-o", required=True, metavar="OUT.json", help="output JSON file")


# ------------------------------------------------------------------ inputs
def read_labels(path: str | Path) -> list[int]:
    """Label ids from an ``.npz`` (array ``labels`` or a single array); one-line UserInputError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"missing file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            key = next((k for k in LABEL_KEYS if k in names), names[0] if len(names) == 1 else None)
            if key is None:
                raise UserInputError(f"--labels {path} has no array 'labels' (arrays: {', '.join(names) or 'none'})")
            values = np.asarray(archive[key])
    except (OSError, ValueError, EOFError) as exc:
        raise UserInputError(f"cannot read --labels {path}: not a readable .npz file "
                             f"({' '.join(str(exc).split()) or type(exc).__name__})") from None
    if values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iuf" or np.any(values != np.round(values)) \
            or np.any(values <= 0):
        raise UserInputError(f"--labels {path}: expected a 1D array of positive integer label ids, got shape "
                             f"{values.shape} {values.dtype}")
    return [int(v) for v in values]


@dataclasses.dataclass
class Pair:
    """The inputs as read: grids in our axis order, spacing of the registered grid."""

    images: dict  # "A", "B" -> array
    segs: Optional[dict]  # "A", "B" -> int array, or None
    spacing: tuple
    labels: Optional[list]
    paths: dict


def read_pair(args: argparse.Namespace) -> Pair:
    from nnunet_ext.methods.dca.register import _check_same_grid, foreground_labels, read_volume

    if (args.fixed_seg is None) != (args.moving_seg is None):
        raise UserInputError("--fixed_seg and --moving_seg go together (Dice compares the warped moving labels with "
                             "the fixed labels)")
    if args.labels is not None and args.fixed_seg is None:
        raise UserInputError("--labels needs --fixed_seg and --moving_seg")
    labels = read_labels(args.labels) if args.labels is not None else None
    a = read_volume(args.fixed, "fixed image (--fixed)")
    b = read_volume(args.moving, "moving image (--moving)")
    _check_same_grid(a, b)
    segs = None
    if args.fixed_seg is not None:
        sa = read_volume(args.fixed_seg, "fixed segmentation (--fixed_seg)", labels=True)
        sb = read_volume(args.moving_seg, "moving segmentation (--moving_seg)", labels=True)
        _check_same_grid(a, sa)
        _check_same_grid(b, sb)
        segs = {"A": sa.grid, "B": sb.grid}
        if labels is None:
            labels = foreground_labels(sa.grid, sb.grid)
    paths = {"fixed": args.fixed, "moving": args.moving, "fixed_seg": args.fixed_seg, "moving_seg": args.moving_seg,
             "labels": args.labels}
    return Pair({"A": a.grid, "B": b.grid}, segs, tuple(a.grid_spacing), labels, paths)


def check_args(args: argparse.Namespace):
    """Settings of the method (checked), or UserInputError; nothing is read or computed yet."""
    from nnunet_ext.methods.dca.register import IOSettings

    out = Path(args.o)
    if out.is_dir():
        raise UserInputError(f"-o {out} is a folder; give a JSON file name")
    inputs = [args.fixed, args.moving, args.fixed_seg, args.moving_seg, args.labels]
    if any(p is not None and Path(p).resolve() == out.resolve() for p in inputs):
        raise UserInputError(f"-o {out} is one of the inputs")
    if args.threads is not None and args.threads < 1:
        raise UserInputError(f"--threads must be >= 1, got {args.threads}")
    if METHODS[args.method] is None:
        from nnunet_ext.methods.dca.syn import SyNSettings, import_ants

        if args.device != "cpu":
            raise UserInputError(f"--method syn runs ANTs on the CPU; --device {args.device} does not apply")
        settings = SyNSettings(syn_metric=args.syn_metric, reg_iterations=tuple(args.syn_iterations),
                               seed=args.seed, threads=args.threads or 1)
        settings.check()
        import_ants()  # a missing extra is reported before anything is read
        return settings
    if (args.method == "trained") != (args.model is not None):
        raise UserInputError("--model goes with --method trained (and --method trained needs --model)")
    settings = IOSettings(iterations=args.iterations, preset=args.preset, lr=args.lr, lambda_reg=args.lambda_reg,
                          diffeomorphic=args.diffeomorphic, device=args.device, seed=args.seed,
                          network=METHODS[args.method], downsample=args.downsample)
    settings.check()
    if settings.iterations == 0 and args.method != "trained":
        raise UserInputError("--iterations 0 applies to --method trained only")
    return settings


# ------------------------------------------------------------------ one direction
def register_direction(method: str, settings, fixed: np.ndarray, moving: np.ndarray, spacing,
                       moving_seg: Optional[np.ndarray], model=None) -> dict:
    """Run ``method`` on (fixed, moving); the field and what the method reports besides."""
    start = time.perf_counter()
    if METHODS[method] is None:
        from nnunet_ext.methods.dca.syn import syn_register

        result = syn_register(fixed, moving, spacing, settings, moving_labels=moving_seg)
        seconds = time.perf_counter() - start
        return {"displacement": result.displacement, "seconds": seconds, "ants_warped_labels": result.warped_labels,
                "extra": {"ants_registration_seconds": result.seconds}}
    from nnunet_ext.methods.dca.register import instance_optimise

    result = instance_optimise(fixed, moving, settings, trained=model)
    seconds = time.perf_counter() - start
    return {"displacement": result.displacement, "seconds": seconds, "ants_warped_labels": None,
            "extra": {"optimisation_seconds": result.seconds,
                      "seconds_per_iteration": result.seconds / settings.iterations if settings.iterations else None,
                      "parameters": result.parameters, "loss_initial": result.history[0], "loss_final": result.final}}


def evaluate_direction(registered: dict, fixed_seg, moving_seg, spacing, labels) -> dict:
    """Metrics of one registered direction (module docstring)."""
    from nnunet_ext.metrics.registration import (
        _nanmean,
        dice_per_label,
        hd95_per_label,
        negative_jacobian_percent,
        non_diffeomorphic_volume_percent,
        registration_metrics,
        sdlogj,
        warp_labels,
    )

    disp = registered["displacement"]
    magnitude = np.sqrt((disp.astype(np.float64) ** 2).sum(0))
    record = {"seconds": registered["seconds"], **registered["extra"],
              "max_abs_displacement_voxels": float(magnitude.max()),
              "mean_abs_displacement_voxels": float(magnitude.mean())}
    if fixed_seg is None:
        record.update(dice=None, hd95=None, dice_before=None, hd95_before=None, sdlogj=sdlogj(disp),
                      negjac_pct=negative_jacobian_percent(disp), ndv_pct=non_diffeomorphic_volume_percent(disp))
        return record
    warped = warp_labels(moving_seg, disp)
    after = registration_metrics(disp, fixed_seg, warped, spacing, labels)
    before_dice = dice_per_label(fixed_seg, moving_seg, labels)
    before_hd95 = hd95_per_label(fixed_seg, moving_seg, spacing, labels)
    record.update(dice=after["dice_mean"], hd95=after["hd95_mean"], dice_before=_nanmean(before_dice.values()),
                  hd95_before=_nanmean(before_hd95.values()), sdlogj=after["sdlogj"],
                  negjac_pct=after["negative_jacobian_percent"], ndv_pct=after["ndv_percent"],
                  dice_per_label=after["dice"], hd95_per_label=after["hd95"], dice_before_per_label=before_dice,
                  hd95_before_per_label=before_hd95)
    if registered["ants_warped_labels"] is not None:
        record["ants_nearest_neighbour_agreement"] = float(np.mean(warped == registered["ants_warped_labels"]))
    return record


# ------------------------------------------------------------------ the command
SUMMARY_KEYS = ("dice", "hd95", "sdlogj", "negjac_pct", "ndv_pct", "seconds", "dice_before")


def _mean_over(directions: dict, key: str):
    values = [d.get(key) for d in directions.values()]
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


def _provenance(args: argparse.Namespace, threads: dict) -> dict:
    from nnunet_ext.methods.dca.syn import ants_version
    from nnunet_ext.provenance import collect

    record = collect(device="cpu" if METHODS[args.method] is None else args.device)
    record["versions"]["antspyx"] = ants_version()
    record["threads"] = threads
    return record


def run(args: argparse.Namespace) -> int:
    from nnunet_ext.atomic import atomic_output_file
    from nnunet_ext.jsonio import json_ready

    settings = check_args(args)
    pair = read_pair(args)
    model = None
    if args.method == "trained":
        from nnunet_ext.methods.dca.model import load_model, model_folder

        model = load_model(model_folder(args.model, None, None, None), args.fold, device=args.device)
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = {"torch": torch.get_num_threads(),
               "itk": settings.threads if METHODS[args.method] is None else None}
    roles = {"forward": ("A", "B"), "backward": ("B", "A")}
    directions = {}
    for name in DIRECTIONS[:2 if args.both_directions else 1]:
        fixed, moving = roles[name]
        segs = pair.segs or {}
        registered = register_direction(args.method, settings, pair.images[fixed], pair.images[moving],
                                        pair.spacing, segs.get(moving), model)
        record = evaluate_direction(registered, segs.get(fixed), segs.get(moving), pair.spacing, pair.labels)
        files = {"A": pair.paths["fixed"], "B": pair.paths["moving"]}
        record = {"fixed": files[fixed], "moving": files[moving], **record}
        directions[name] = record
        dice = "" if record["dice"] is None else f", Dice {record['dice_before']:.3f} -> {record['dice']:.3f}"
        print(f"{args.method} {name}: {record['seconds']:.1f} s{dice}, SDlogJ {record['sdlogj']:.3f}, "
              f"det J <= 0 {record['negjac_pct']:.3f} %")
    per_case = {}
    for name, record in directions.items():
        for label in pair.labels or []:
            per_case[f"{name}/label_{label}"] = {"Dice": record["dice_per_label"][label],
                                                 "HD95": record["hd95_per_label"][label]}
    summary = {key: _mean_over(directions, key) for key in SUMMARY_KEYS}
    if METHODS[args.method] is not None:
        summary["seconds_per_iteration"] = _mean_over(directions, "seconds_per_iteration")
    method_settings = dataclasses.asdict(settings)
    if model is not None:
        method_settings["model"] = model.describe()
    elif METHODS[args.method] is not None:
        from nnunet_ext.methods.dca.register import network_config

        method_settings["network_config"] = network_config(settings)
    output = {**summary, "method": args.method, "settings": method_settings,
              "grid": {"shape": list(pair.images["A"].shape), "spacing": list(pair.spacing)},
              "labels": pair.labels, "per_case": per_case, "directions": directions,
              "provenance": _provenance(args, threads)}
    with atomic_output_file(args.o) as tmp:
        tmp.write_text(json.dumps(json_ready(output), indent=2) + "\n")
    print(f"wrote {args.o}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_module_cli(PROG, __doc__, configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
