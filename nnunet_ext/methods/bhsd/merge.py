"""Merge one-class predictions into one multi-class label map (BHSD Table 3, "5class-Merge").

Each input folder is the ``nnUNetv2_predict`` output of one ``BHSDSingleClassTrainer_X`` model: binary label maps
(1 = the model's class); the folder's ``dataset.json``, copied by nnU-Net from the model, records which class of the
dataset that is (``nnunet_ext_single_class``; a plain one-label dataset.json names it by its value).
Binary models disagree where their masks overlap; the paper reports "extensive overlapping and conflicting
prediction outcomes" without saying how it resolved them, so two documented rules are offered:

- ``probability`` (default): a voxel takes the class whose model is most confident, among the models that predict
  it (probability > 0.5); it needs the probability files of ``nnUNetv2_predict --save_probabilities``
  (``CASE.npz``). This is the argmax a multi-class model would take, restricted to the classes that fire.
- ``priority``: label maps only; a voxel claimed by several models takes the class listed first in ``--priority``
  (default: the order of ``-i``).

Voxels no model claims are background. Outputs have the geometry of the inputs (checked to agree).

With ``--reference LABELS`` (the multi-class references), ``merge.json`` also holds each one-class model's own Dice
(its mask against ``reference == its class``; nnU-Net's convention, NaN when both are empty): the "1class-X" rows of
Table 3, as ``Dice_1class_<name>`` means and ``per_case`` values.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nnunet_ext.errors import UserInputError

RULES = ("probability", "priority")
THRESHOLD = 0.5


def merge_by_probability(probabilities: Mapping[int, np.ndarray], threshold: float = THRESHOLD) -> np.ndarray:
    """Label map: per voxel the class of the largest probability if it exceeds ``threshold``, else 0."""
    classes = list(probabilities)
    stacked = np.stack([np.asarray(probabilities[c], dtype=np.float32) for c in classes])
    best = stacked.argmax(0)
    merged = np.asarray(classes, dtype=np.uint8)[best]
    merged[stacked.max(0) <= threshold] = 0
    return merged


def merge_by_priority(masks: Mapping[int, np.ndarray], priority: Sequence[int]) -> np.ndarray:
    """Label map from each class's mask (nonzero voxels), earlier classes of ``priority`` winning overlaps."""
    shape = next(iter(masks.values())).shape
    merged = np.zeros(shape, dtype=np.uint8)
    for label in reversed(list(priority)):  # later writes win: write the most important class last
        merged[np.asarray(masks[label]) != 0] = label
    return merged


def folder_class(folder: Path) -> int:
    """The class id a one-class prediction folder holds, from its dataset.json (nnU-Net copies the model's)."""
    path = folder / "dataset.json"
    if not path.is_file():
        raise UserInputError(f"{folder} has no dataset.json: pass nnUNetv2_predict output folders of one-class models")
    data = json.loads(path.read_text())
    record = data.get("nnunet_ext_single_class")
    if isinstance(record, dict) and isinstance(record.get("value"), int):
        return int(record["value"])
    labels = data.get("labels", {})
    foreground = {name: value for name, value in labels.items() if value not in (0, [0])}
    if len(foreground) != 1:
        raise UserInputError(f"{path}: a one-class model has exactly one foreground label, found "
                             f"{foreground or 'none'}")
    value = next(iter(foreground.values()))
    if isinstance(value, list):
        if len(value) != 1:
            raise UserInputError(f"{path}: region {value} of several labels cannot be merged back into classes")
        value = value[0]
    return int(value)


def _probability(folder: Path, case: str, label: int) -> np.ndarray:
    path = folder / f"{case}.npz"
    if not path.is_file():
        raise UserInputError(f"--rule probability needs {path} (predict with --save_probabilities, or use --rule "
                             f"priority)")
    try:
        probabilities = np.load(path)["probabilities"]
    except (OSError, KeyError, ValueError) as exc:
        raise UserInputError(f"cannot read probabilities from {path} ({exc.__class__.__name__})") from None
    # region models store one sigmoid channel; a plain binary softmax model stores background and the class
    return probabilities[0] if len(probabilities) == 1 else probabilities[1]


def _class_name(folder: Path, label: int) -> str:
    record = json.loads((folder / "dataset.json").read_text()).get("nnunet_ext_single_class") or {}
    return str(record.get("name", label))


def merge_folders(inputs: Sequence[str | Path], output: str | Path, rule: str = "probability",
                  priority: Sequence[int] | None = None, overwrite: bool = False,
                  reference: str | Path | None = None) -> list[str]:
    """Merge every case of the one-class prediction folders ``inputs`` into ``output``; returns the case file names.
    ``reference``: folder of multi-class references for the one-class Dice in ``merge.json`` (module docstring)."""
    import SimpleITK as sitk

    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.imageio import read_sitk_image
    from nnunet_ext.metrics.evaluate import case_name

    if rule not in RULES:
        raise UserInputError(f"--rule must be one of {', '.join(RULES)}, got '{rule}'")
    folders = [Path(f) for f in inputs]
    if len(folders) < 2:
        raise UserInputError("merging needs at least two prediction folders (-i)")
    for folder in folders:
        if not folder.is_dir():
            raise UserInputError(f"prediction folder not found: {folder}")
    classes = [folder_class(f) for f in folders]
    if len(set(classes)) != len(classes):
        raise UserInputError(f"two folders hold the same class: {dict(zip(map(str, folders), classes))}")
    priority = list(classes if priority is None else priority)
    if sorted(priority) != sorted(classes):
        raise UserInputError(f"--priority {priority} must list each class of the inputs {classes} once")
    names = sorted(p.name for p in folders[0].glob("*.nii.gz"))
    if not names:
        raise UserInputError(f"no .nii.gz predictions in {folders[0]}")
    if reference is not None:
        reference = Path(reference)
        missing = [n for n in names if not (reference / n).is_file()]
        if not reference.is_dir() or missing:
            raise UserInputError(f"--reference {reference}: no reference {missing[0] if missing else 'folder'}")
    for folder in folders[1:]:
        others = sorted(p.name for p in folder.glob("*.nii.gz"))
        if others != names:
            missing = sorted(set(names) ^ set(others))
            raise UserInputError(f"{folder} and {folders[0]} hold different cases (e.g. {missing[0]})")
    from nnunet_ext.metrics.segmentation import dice

    metric_names = {label: f"Dice_1class_{_class_name(folder, label)}" for label, folder in zip(classes, folders)}
    per_case: dict[str, dict[str, float]] = {}
    with atomic_output_dir(output, overwrite=overwrite, inputs=folders, written_by="nnunet-ext bhsd merge") as tmp:
        for name in names:
            images = {label: read_sitk_image(folder / name, "prediction") for label, folder in zip(classes, folders)}
            first = images[classes[0]]
            for label, image in images.items():
                if image.GetSize() != first.GetSize() or not np.allclose(image.GetSpacing(), first.GetSpacing()):
                    raise UserInputError(f"{name}: the class {label} prediction's geometry differs from the class "
                                         f"{classes[0]} prediction's")
            if rule == "probability":
                merged = merge_by_probability({label: _probability(folder, case_name(name), label)
                                               for label, folder in zip(classes, folders)})
            else:
                merged = merge_by_priority({label: sitk.GetArrayFromImage(image) for label, image in images.items()},
                                           priority)
            out = sitk.GetImageFromArray(merged)
            out.CopyInformation(first)
            sitk.WriteImage(out, str(tmp / name), useCompression=True)
            if reference is not None:
                truth = sitk.GetArrayFromImage(read_sitk_image(reference / name, "reference"))
                if truth.shape != merged.shape:
                    raise UserInputError(f"{reference / name}: shape {truth.shape} differs from the predictions' "
                                         f"{merged.shape}")
                per_case[case_name(name)] = {
                    metric_names[label]: dice(truth == label, sitk.GetArrayFromImage(image) != 0)
                    for label, image in images.items()}
        record = {"rule": rule, "threshold": THRESHOLD, "priority": priority,
                  "inputs": {str(label): str(folder) for label, folder in zip(classes, folders)}}
        if reference is not None:
            for metric in metric_names.values():
                values = [case[metric] for case in per_case.values() if not np.isnan(case[metric])]
                record[metric] = float(np.mean(values)) if values else None
            record["reference"] = str(reference)
            record["per_case"] = {case: {m: (None if np.isnan(v) else v) for m, v in values.items()}
                                  for case, values in per_case.items()}
        (tmp / "merge.json").write_text(json.dumps(record, indent=2) + "\n")
    return names
