"""Benchmark tool of the fusion studies (``benchmarks/specs/contrastive.yaml``, ``fusion.yaml``):

``python -m nnunet_ext.methods.contrastive.bench distractor-fp -p PRED -m MASKS -o JSON``: predicted lesion volume
(ml) inside the enhancing non-tumour tissue of each test case, the ``distractor`` masks ``nnunet-ext synth
breast_dce --option distractor_masks=true`` writes (vessels, benign foci, FGT with moderate or marked background
parenchymal enhancement; ``MASKS/<case>_distractor.nii.gz``): the over-segmentation the contrastive pretraining is
meant to cut (Sect. 1, Fig. 4). JSON: ``distractor_fp_ml`` (mean) and ``per_case: {case: {distractor_fp_ml}}``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nnunet_ext.errors import UserInputError


def distractor_false_positive_ml(prediction: np.ndarray, distractor: np.ndarray, spacing) -> float:
    """Millilitres of predicted foreground (any nonzero label) inside the distractor mask."""
    if prediction.shape != distractor.shape:
        raise UserInputError(f"prediction shape {prediction.shape} differs from its distractor mask's "
                             f"{distractor.shape}")
    return float(((prediction != 0) & (distractor != 0)).sum()) * float(np.prod(spacing)) / 1000.0


def distractor_scores(predictions: str | Path, masks: str | Path) -> dict:
    from nnunet_ext.imageio import read_image
    from nnunet_ext.metrics.evaluate import case_name

    files = sorted(Path(predictions).glob("*.nii.gz"))
    if not files:
        raise UserInputError(f"no predictions in {predictions}")
    per_case = {}
    for file in files:
        case = case_name(file)
        prediction, spacing = read_image(file)
        distractor, _ = read_image(Path(masks) / f"{case}_distractor.nii.gz")
        per_case[case] = {"distractor_fp_ml": distractor_false_positive_ml(prediction, distractor, spacing)}
    return {"distractor_fp_ml": float(np.mean([c["distractor_fp_ml"] for c in per_case.values()])),
            "per_case": per_case}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnunet_ext.methods.contrastive.bench", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    fp = sub.add_parser("distractor-fp", help="predicted lesion ml inside the distractor masks")
    fp.add_argument("-p", required=True, help="folder of predicted label maps")
    fp.add_argument("-m", required=True, help="folder of <case>_distractor.nii.gz masks (extrasTs)")
    fp.add_argument("-o", required=True, help="output JSON")
    args = parser.parse_args(argv)
    Path(args.o).write_text(json.dumps(distractor_scores(args.p, args.m), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
