"""Inference speed and peak memory of nnU-Net's 2D U-Net, FFPN and FFPN-R on one input size (the paper's Table 1
FPS / memory columns).

``python -m nnunet_ext.methods.ffpn.speed --plans PLANS.json -o speed.json [--size 416] [--device cpu]`` measures
each model in a fresh subprocess, so one model's allocations cannot hide another's:

- the U-Net is built from the plans' 2d configuration (the same plans the FFPN rows train with), as
  ``nnUNetv2_predict`` builds it; its input is the image padded to the U-Net's divisibility (as nnU-Net pads);
  ``unet_default_width`` is the same U-Net at nnU-Net's default widths (32 base, 512 max features), for context;
- FFPN / FFPN-R are the trainers' networks at ``--size`` (the paper's 416), with 9 random anchors.

Per model: ``warmup`` untimed forward passes, then ``repeats`` timed ones, batch 1, ``torch.inference_mode``;
images/s = repeats / elapsed. Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (what the paper reports); on
CPU the peak resident set size of the process minus its size before the model was built (weights + activations;
``ru_maxrss``), in MB.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from nnunet_ext.benchmark.timing import peak_memory_mb, reset_peak_memory, rss_mb, run_json_child

MODELS = ("unet", "ffpn", "ffpn_r", "unet_default_width")


def _build(model: str, plans: dict, size: int):
    import numpy as np

    if model.startswith("unet"):
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        arch = plans["configurations"]["2d"]["architecture"]
        kwargs = dict(arch["arch_kwargs"])
        if model == "unet_default_width":  # nnU-Net's default planner: 32 base features, at most 512 in 2D
            kwargs["features_per_stage"] = [min(32 * 2 ** i, 512) for i in range(kwargs["n_stages"])]
        num_classes = 2
        network = get_network_from_plans(arch["network_class_name"], kwargs,
                                         arch["_kw_requires_import"], 1, num_classes, deep_supervision=False)
        divisor = 2 ** (arch["arch_kwargs"]["n_stages"] - 1)
        padded = int(math.ceil(size / divisor) * divisor)
        return network, padded
    from nnunet_ext.methods.ffpn.network import FFPN

    anchors = np.random.default_rng(0).uniform(0.05, 0.3, (9, 7, 4))
    return FFPN(1, 1, anchors, input_size=size, preset="resnet18", refine=model == "ffpn_r"), size


def measure(model: str, plans: dict, size: int, device: str, warmup: int, repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    before = rss_mb()
    network, input_size = _build(model, plans, size)
    network = network.to(device).eval()
    x = torch.randn(1, 1, input_size, input_size, device=device)
    reset_peak_memory(device)
    with torch.inference_mode():
        for _ in range(warmup):
            network(x)
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(repeats):
            network(x)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t
    return {"images_per_s": repeats / elapsed, "peak_mem_mb": peak_memory_mb(device, before),
            "input": [input_size, input_size], "parameters": sum(p.numel() for p in network.parameters()),
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnunet_ext.methods.ffpn.speed",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--plans", required=True, help="nnU-Net plans JSON with a 2d configuration (the U-Net)")
    parser.add_argument("-o", required=True, help="output JSON")
    parser.add_argument("--size", type=int, default=416, help="input size (default 416, the paper's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)  # one model, in a child process
    args = parser.parse_args(argv)
    plans = json.loads(Path(args.plans).read_text())
    if args.model:
        print(json.dumps(measure(args.model, plans, args.size, args.device, args.warmup, args.repeats)))
        return 0
    results = {}
    for model in MODELS:
        results[model] = run_json_child([sys.executable, "-m", "nnunet_ext.methods.ffpn.speed", "--plans", args.plans,
                                         "-o", args.o, "--size", str(args.size), "--device", args.device, "--warmup",
                                         str(args.warmup), "--repeats", str(args.repeats), "--model", model])
        print(f"{model}: {results[model]['images_per_s']:.2f} images/s, peak {results[model]['peak_mem_mb']:.0f} MB")
    flat = {f"{m}_{k}": v for m, r in results.items() for k, v in r.items() if k in ("images_per_s", "peak_mem_mb")}
    flat["ffpn_speedup_vs_unet"] = results["ffpn"]["images_per_s"] / results["unet"]["images_per_s"]
    flat["ffpn_memory_ratio_vs_unet"] = results["ffpn"]["peak_mem_mb"] / results["unet"]["peak_mem_mb"]
    Path(args.o).write_text(json.dumps({**flat, "models": results, "size": args.size, "device": args.device},
                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
