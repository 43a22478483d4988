"""Benchmark tools of the HCNet study (``benchmarks/specs/hcnet.yaml``):

- ``python -m nnunet_ext.methods.hcnet.bench postsub -d DCE -o ID``: the Table 1 post-contrast reference dataset,
  channels ``post1`` and ``sub = post1 - pre`` computed from the RAW intensities (nnU-Net z-scores every channel on
  its own, which would erase a subtraction it was asked to learn), for the labelled training cases and every test
  case of the DCE dataset, same case ids and geometry.
- ``python -m nnunet_ext.methods.hcnet.bench hipm-scores -p PRED -l LABELS -K K -o JSON``: mean class accuracy and
  mean IoU (Sect. 3.2, Fig. 3) of predicted heterogeneity maps, over the confusion matrix pooled across all test
  cases and all K + 1 classes (0 = outside the ROI), plus per-case values.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nnunet_ext.errors import UserInputError

FILE_ENDING = ".nii.gz"


def write_postsub_dataset(dce: str, dataset_id: int, name: str = "BreastPostSub", raw: str | None = None,
                          overwrite: bool = False) -> Path:
    import SimpleITK as sitk

    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.imageio import read_sitk_image
    from nnunet_ext.methods.hcnet.cluster import find_cases, raw_dataset_folder, read_dataset_json
    from nnunet_ext.synth.base import dataset_folder_name, existing_dataset_with_id

    folder = raw_dataset_folder(dce)
    meta = read_dataset_json(folder)
    cases = [c for c in find_cases(folder, meta) if c.label is not None]
    raw_root = Path(raw) if raw else folder.parent
    if existing_dataset_with_id(raw_root, dataset_id) is not None and not overwrite:
        raise UserInputError(f"dataset id {dataset_id} already exists in {raw_root} (pass --overwrite)")
    output = raw_root / dataset_folder_name(dataset_id, name)
    with atomic_output_dir(output, overwrite=overwrite, inputs=[folder], written_by="hcnet bench postsub") as tmp:
        for case in cases:
            images, labels = tmp / f"images{case.split}", tmp / f"labels{case.split}"
            images.mkdir(exist_ok=True)
            labels.mkdir(exist_ok=True)
            pre, post = read_sitk_image(case.images[0]), read_sitk_image(case.images[1])
            subtraction = sitk.Cast(post, sitk.sitkFloat32) - sitk.Cast(pre, sitk.sitkFloat32)
            sitk.WriteImage(sitk.Cast(post, sitk.sitkFloat32), str(images / f"{case.identifier}_0000{FILE_ENDING}"),
                            useCompression=True)
            sitk.WriteImage(subtraction, str(images / f"{case.identifier}_0001{FILE_ENDING}"), useCompression=True)
            (labels / f"{case.identifier}{FILE_ENDING}").write_bytes(case.label.read_bytes())
        (tmp / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "post1", "1": "sub"}, "labels": meta["labels"],
            "numTraining": sum(c.split == "Tr" for c in cases), "file_ending": FILE_ENDING, "name": name,
            "description": f"post1 and post1 - pre (raw intensities) of the labelled cases of {folder.name}",
            "source_dataset": folder.name}, indent=2))
    return output


def hipm_scores(predictions: str | Path, labels: str | Path, n_clusters: int) -> dict:
    from nnunet_ext.imageio import read_image
    from nnunet_ext.metrics.clustering import accuracy_from_confusion, confusion_matrix, iou_from_confusion

    predictions, labels = Path(predictions), Path(labels)
    references = sorted(labels.glob(f"*{FILE_ENDING}"))
    if not references:
        raise UserInputError(f"no reference maps (*{FILE_ENDING}) in {labels}")
    n_classes = n_clusters + 1
    pooled = np.zeros((n_classes, n_classes), np.int64)
    per_case = {}
    for reference in references:
        prediction = predictions / reference.name
        if not prediction.is_file():
            raise UserInputError(f"missing prediction {prediction} for {reference}")
        truth, _ = read_image(reference)
        predicted, _ = read_image(prediction)
        matrix = confusion_matrix(predicted, truth, n_classes)
        pooled += matrix
        per_case[reference.name[:-len(FILE_ENDING)]] = {"mean_accuracy": accuracy_from_confusion(matrix),
                                                        "mean_iou": iou_from_confusion(matrix)}
    return {"mean_accuracy": accuracy_from_confusion(pooled), "mean_iou": iou_from_confusion(pooled),
            "n_cases": len(references), "per_case": per_case}


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.cli import run_module_cli

    def configure(p: argparse.ArgumentParser) -> None:
        sub = p.add_subparsers(dest="action", required=True)
        s = sub.add_parser("postsub", help="post1 + (post1 - pre) dataset of the labelled cases of a DCE dataset")
        s.add_argument("-d", required=True, help="DCE dataset (id, name or folder path)")
        s.add_argument("-o", required=True, type=int, help="dataset id to write")
        s.add_argument("--name", default="BreastPostSub")
        s.add_argument("--raw", default=None, help="nnU-Net raw folder (default: the DCE dataset's)")
        s.add_argument("--overwrite", action="store_true")
        h = sub.add_parser("hipm-scores", help="mean accuracy and mean IoU of predicted heterogeneity maps")
        h.add_argument("-p", required=True, help="folder of predicted maps")
        h.add_argument("-l", required=True, help="folder of reference maps (the map dataset's labelsTs)")
        h.add_argument("-K", required=True, type=int, help="number of clusters")
        h.add_argument("-o", required=True, help="output JSON")

    def run(args: argparse.Namespace) -> int:
        if args.action == "postsub":
            print(f"wrote {write_postsub_dataset(args.d, args.o, args.name, args.raw, args.overwrite)}")
            return 0
        scores = hipm_scores(args.p, args.l, args.K)
        Path(args.o).write_text(json.dumps(scores, indent=2))
        print(f"mean accuracy {scores['mean_accuracy']:.4f}  mean IoU {scores['mean_iou']:.4f}")
        return 0

    return run_module_cli("python -m nnunet_ext.methods.hcnet.bench", __doc__, configure, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
