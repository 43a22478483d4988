"""Convert the Learn2Reg OASIS brain-MRI download (Learn2Reg 2021 task 3) into an nnU-Net raw dataset (T1, 35 labels).

Learn2Reg 2021 task 3 is inter-patient brain MRI registration on the neurite-oasis preprocessing of OASIS-1 (Hoopes
et al., HyperMorph, MELBA 2022: FreeSurfer + SAMSEG, affinely aligned, 160 x 192 x 224 at 1 mm, 35 anatomical
labels). Source layout (the unpacked OASIS download; -i is that folder or the folder holding ``OASIS/``)::

    SRC/OASIS_dataset.json                the Learn2Reg dataset description (required: the pairs are read from it)
    SRC/imagesTr/OASIS_0001_0000.nii.gz   T1 image of subject 0001
    SRC/labelsTr/OASIS_0001_0000.nii.gz   its label map, same file name (OASIS_0001.nii.gz is accepted too)
    SRC/masksTr/OASIS_0001_0000.nii.gz    brain mask (not converted: nnU-Net has no place for it)

What was verified, and where (the download itself sits behind the challenge's registration; these facts come from
public code that reads it, found with the project's code search, and from the pages named):

* the folder holds ``OASIS_dataset.json``, ``imagesTr/``, ``labelsTr/`` and ``masksTr/``, and image and label share
  the file name ``OASIS_NNNN_0000.nii.gz`` (several public Learn2Reg OASIS loaders, e.g. ones reading
  ``imagesTr/OASIS_0001_0000.nii.gz`` with ``labelsTr/OASIS_0001_0000.nii.gz``);
* ``OASIS_dataset.json`` keys read by those loaders: ``training`` (entries ``{"image": "./imagesTr/...", "label":
  "./labelsTr/...", "mask": "./masksTr/..."}``), ``registration_val`` (entries ``{"fixed": "./imagesTr/
  OASIS_0438_0000.nii.gz", "moving": "./imagesTr/OASIS_0439_0000.nii.gz"}``), ``registration_test``, ``test`` and
  ``tensorImageShape`` (``{"0": [160, 192, 224]}``); labels 0..35, evaluated on 1..35;
* ``training_paired_images`` (with ``numPairedTraining``) is the Learn2Reg key for training pairs, in the same
  ``{"fixed", "moving"}`` form (it is filled in the paired tasks, e.g. the ThoraxCBCT_dataset.json of Learn2Reg
  2022/23, whose ``labels`` may also be ``{}``); OASIS is unpaired inter-patient registration, so the list may be
  empty or absent;
* task 3 = ">400 unpaired training scans" of inter-patient brain MRI (learn2reg.grand-challenge.org/Learn2Reg2021);
  the neurite-oasis collection has 414 subjects (github.com/adalca/medical-datasets, neurite-oasis.md).

Not verified (no copy of ``OASIS_dataset.json`` was found): the form of its ``labels``. Both nnU-Net v1 style
(``{"0": "background", "1": "..."}``) and v2 style (``{"background": 0, ...}``) are read; an absent or empty
``labels`` means background + ``label_1``..``label_35``. Declared values must be 0..K (nnU-Net's rule).

The output (nnU-Net case id = file name without ``_0000.nii.gz``, e.g. ``OASIS_0001``):

* imagesTr/labelsTr: every image of imagesTr/ that has a label (images without one are skipped and listed in
  ``conversion.images_without_label``); channel 0 is ``T1``;
* dataset.json ``registration_pairs``: ``training_paired_images`` as ``[{"fixed": ID, "moving": ID}]`` (empty when
  the source has none), and ``registration_val`` the same way when the source has it. The validation images stay in
  imagesTr (they are in the download's imagesTr); hold them out of training splits yourself. ``registration_test``
  is not read (its images are not in the public download);
* ``--max_cases N``: the images of the ``registration_val`` pairs first (in pair order), then the others in sorted
  order, the first N of them; a pair is kept when both its images are (dropped ones are counted in
  ``conversion.pairs_dropped``).

Checks, each one line naming the file (the source is only read; nothing is written unless every check passes): no
``OASIS_dataset.json`` (or unreadable), no imagesTr/, a pair naming an image that is not in imagesTr/ or has no
label, a malformed pair entry, a label without image, a label off its image's grid (size, spacing, origin,
direction), label values that are not integers or not among the declared labels, unreadable or truncated NIfTI,
non-3D images, NaN voxels.

Example::

    nnunet-ext convert oasis_learn2reg -i OASIS -d 440 --raw $nnUNet_raw
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from nnunet_ext.errors import UserInputError

CONVERTER = "datasets_conversion.oasis_learn2reg"
DEFAULT_NAME = "OASIS"
FILE_ENDING = ".nii.gz"
JSON_NAME = "OASIS_dataset.json"
CHANNEL = "T1"
N_LABELS = 35
DEFAULT_LABELS = {"background": 0, **{f"label_{v}": v for v in range(1, N_LABELS + 1)}}
PAIR_KEYS = ("training_paired_images", "registration_val")
REFERENCE = ("Hoopes et al., Learning the Effect of Registration Hyperparameters with HyperMorph, MELBA 2022 "
             "(doi:10.59275/j.melba.2022-74f1); Marcus et al., OASIS, J Cogn Neurosci 2007 "
             "(doi:10.1162/jocn.2007.19.9.1498); Learn2Reg 2021 task 3 (learn2reg.grand-challenge.org)")
_SUFFIX = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


def case_id(file_name: str) -> str:
    """``OASIS_0001`` for ``OASIS_0001_0000.nii.gz`` (the channel suffix ``_0000`` and the format dropped)."""
    stem = _SUFFIX.sub("", file_name)
    return stem[:-5] if stem.endswith("_0000") and len(stem) > 5 else stem


def find_root(source: Path) -> Path:
    """The folder holding ``OASIS_dataset.json``: -i itself or its ``OASIS/`` sub-folder."""
    if not source.is_dir():
        raise UserInputError(f"source folder {source} does not exist or is not a folder")
    for folder in (source, source / "OASIS"):
        if (folder / JSON_NAME).is_file():
            return folder
    raise UserInputError(f"no {JSON_NAME} in {source} (the Learn2Reg OASIS download: {JSON_NAME}, imagesTr/, "
                         f"labelsTr/); the registration pairs are read from it")


def read_description(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path} holds a {type(data).__name__}, expected an object with Learn2Reg keys")
    return data


def declared_labels(data: dict, path: Path) -> dict[str, int]:
    """``{name: value}`` from the description's ``labels`` (v1 ``{"1": name}`` or v2 ``{name: 1}``), else the
    default background + label_1..label_35; values must be 0..K."""
    raw = data.get("labels")
    if raw is None or raw == {} or raw == []:
        return dict(DEFAULT_LABELS)
    if not isinstance(raw, dict):
        raise UserInputError(f"{path}: 'labels' must be an object (value: name), got {type(raw).__name__}")
    pairs = []
    for key, value in raw.items():
        if isinstance(value, str) and re.fullmatch(r"\d+", str(key).strip()):
            pairs.append((value.strip(), int(key)))
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            pairs.append((str(key).strip(), value))
        else:
            raise UserInputError(f"{path}: labels entry {key!r}: {value!r} is neither \"VALUE\": \"NAME\" nor "
                                 f"\"NAME\": VALUE")
    values = sorted(v for _, v in pairs)
    if len(set(values)) != len(values):
        raise UserInputError(f"{path}: labels give one value two names")
    if 0 not in values:
        pairs.append(("background", 0))
        values = [0] + values
    if values != list(range(len(values))):
        raise UserInputError(f"{path}: labels must be the values 0..K without gaps (nnU-Net's rule), got "
                             f"{', '.join(map(str, values))}")
    labels: dict[str, int] = {}
    for name, value in sorted(pairs, key=lambda item: item[1]):
        name = name or f"label_{value}"
        labels[name if name not in labels else f"{name}_{value}"] = value
    return labels


def nifti_files(folder: Path) -> dict[str, Path]:
    """``{case id: file}`` of the NIfTI files in ``folder`` (two files of one case id are an error)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not _SUFFIX.search(path.name):
            continue
        identifier = case_id(path.name)
        if identifier in files:
            raise UserInputError(f"{folder} holds two files of case {identifier} ({files[identifier].name} and "
                                 f"{path.name}); keep one")
        files[identifier] = path
    return files


def read_pairs(data: dict, key: str, json_path: Path, images: dict[str, Path], labels: dict[str, Path],
               images_folder: Path, labels_folder: Path) -> list[dict] | None:
    """``[{"fixed": ID, "moving": ID}]`` of one pair list of the description (None when the key is absent)."""
    entries = data.get(key)
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise UserInputError(f"{json_path}: '{key}' must be a list of {{\"fixed\": ..., \"moving\": ...}} pairs, got "
                             f"{type(entries).__name__}")
    by_name = {path.name: identifier for identifier, path in images.items()}
    pairs = []
    for index, entry in enumerate(entries):
        where = f"{json_path.name} {key}[{index}]"
        if not isinstance(entry, dict) or not all(isinstance(entry.get(r), str) for r in ("fixed", "moving")):
            raise UserInputError(f"{json_path}: {key}[{index}] is not a {{\"fixed\": PATH, \"moving\": PATH}} pair "
                                 f"(got {str(entry)[:80]})")
        pair = {}
        for role in ("fixed", "moving"):
            value = entry[role]
            base = value.strip().replace("\\", "/").rsplit("/", 1)[-1]
            identifier = by_name.get(base, case_id(base))
            if identifier not in images:
                raise UserInputError(f"{where} names {role} image {value}, which is not in {images_folder}")
            if identifier not in labels:
                raise UserInputError(f"{where} names {role} image {value}, which has no label in {labels_folder} "
                                     f"(the training cases are the images with labels)")
            pair[role] = identifier
        pairs.append(pair)
    return pairs


def plan_source(source: Path, max_cases: int | None = None) -> dict:
    """Scan the source (names and the description only) and return what :func:`convert` writes."""
    if max_cases is not None and (isinstance(max_cases, bool) or not isinstance(max_cases, int) or max_cases < 1):
        raise UserInputError(f"--max_cases must be a positive integer, got {max_cases!r}")
    root = find_root(source)
    json_path = root / JSON_NAME
    data = read_description(json_path)
    labels_declared = declared_labels(data, json_path)
    images_folder, labels_folder = root / "imagesTr", root / "labelsTr"
    if not images_folder.is_dir():
        raise UserInputError(f"no imagesTr/ folder in {root} (beside {JSON_NAME})")
    images = nifti_files(images_folder)
    if not images:
        raise UserInputError(f"no NIfTI images (OASIS_NNNN_0000.nii.gz) in {images_folder}")
    labels = nifti_files(labels_folder) if labels_folder.is_dir() else {}
    for identifier, path in labels.items():
        if identifier not in images:
            raise UserInputError(f"label without image: {path} (no {identifier}_0000.nii.gz in {images_folder})")
    if not labels:
        raise UserInputError(f"no labels in {labels_folder} (labelsTr/OASIS_NNNN_0000.nii.gz); the training cases are "
                             f"the images with labels")
    pairs = {key: read_pairs(data, key, json_path, images, labels, images_folder, labels_folder) for key in PAIR_KEYS}
    cases = sorted(identifier for identifier in images if identifier in labels)
    if max_cases is not None:
        first = [c for pair in pairs["registration_val"] or [] for c in (pair["fixed"], pair["moving"])]
        cases = list(dict.fromkeys(first + cases))[:max_cases]
    kept = set(cases)
    dropped = {}
    for key, listed in pairs.items():
        if listed is not None:
            pairs[key] = [p for p in listed if p["fixed"] in kept and p["moving"] in kept]
            dropped[key] = len(listed) - len(pairs[key])
    return {"root": root, "json": json_path, "data": data, "labels": labels_declared, "images": images,
            "label_files": labels, "cases": cases, "pairs": pairs, "dropped": dropped,
            "without_label": sorted(set(images) - set(labels))}


def convert(source: str | Path, dataset_id: int, name: str = DEFAULT_NAME, raw: str | None = None,
            overwrite: bool = False, max_cases: int | None = None, progress=None) -> Path:
    """Python API behind the CLI: write the dataset and return its folder."""
    import SimpleITK as sitk

    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.datasets_conversion._common import raw_dataset_target
    from nnunet_ext.datasets_conversion.registration_pairs import (integer_values, label_image, label_on_grid,
                                                                   read_volume)

    source = Path(source)
    folder, retire = raw_dataset_target(raw, dataset_id, name, overwrite)
    plan = plan_source(source, max_cases)
    declared = plan["labels"]
    allowed = set(declared.values())
    with atomic_output_dir(folder, overwrite=overwrite, inputs=[source], retire=retire,
                           written_by=f"nnunet-ext convert {CONVERTER}") as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for index, identifier in enumerate(plan["cases"], start=1):
            image_path, label_path = plan["images"][identifier], plan["label_files"][identifier]
            image = read_volume(image_path, "image")
            label = label_on_grid(read_volume(label_path, "label"), label_path, image, image_path)
            values = integer_values(label, label_path)
            outside = sorted(set(np.unique(values).tolist()) - allowed)
            if outside:
                shown = ", ".join(map(str, outside[:5])) + (", ..." if len(outside) > 5 else "")
                raise UserInputError(f"label {label_path} has values {shown}, outside the labels declared for the "
                                     f"dataset (0..{max(allowed)}, from {plan['json'].name} or the default 35 "
                                     f"OASIS labels)")
            sitk.WriteImage(image, str(tmp / "imagesTr" / f"{identifier}_0000{FILE_ENDING}"), True)
            sitk.WriteImage(label_image(values, image), str(tmp / "labelsTr" / f"{identifier}{FILE_ENDING}"), True)
            if progress is not None:
                progress(f"[{index}/{len(plan['cases'])}] {image_path.name} -> {identifier}")
        data = plan["data"]
        dataset = {
            "channel_names": {"0": CHANNEL}, "labels": declared, "numTraining": len(plan["cases"]),
            "file_ending": FILE_ENDING, "name": name,
            "description": "OASIS brain T1 MRI as distributed for Learn2Reg 2021 task 3 (neurite-oasis "
                           "preprocessing: affinely aligned, 35 anatomical labels); inter-patient registration",
            "reference": REFERENCE,
            "licence": "OASIS Data Use Agreement (oasis-brains.org); see the Learn2Reg terms",
            "registration_pairs": plan["pairs"]["training_paired_images"] or [],
            "registration_pairs_note": "case ids from training_paired_images of the source (empty: OASIS is unpaired, "
                                       "any two cases may be paired); the moving image is warped onto the fixed one",
        }
        if plan["pairs"]["registration_val"] is not None:
            dataset["registration_val"] = plan["pairs"]["registration_val"]
            dataset["registration_val_note"] = ("Learn2Reg validation pairs (case ids); their images are in imagesTr: "
                                                "hold them out of training splits")
        dataset["conversion"] = {
            "converter": CONVERTER, "source": str(plan["root"].resolve()), "description_file": plan["json"].name,
            "tensorImageShape": data.get("tensorImageShape"), "max_cases": max_cases,
            "pairs_dropped": plan["dropped"], "images_without_label": plan["without_label"],
            "not_converted": "masksTr/ (brain masks), registration_test (images not in the public download)",
            "cases": {identifier: plan["images"][identifier].name for identifier in plan["cases"]},
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", dest="input", required=True,
                        help=f"the OASIS folder holding {JSON_NAME}, imagesTr/, labelsTr/ (or its parent); read only")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1..999)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"dataset name (default {DEFAULT_NAME})")
    parser.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--max_cases", type=int, default=None, metavar="N",
                        help="convert N cases only: the validation-pair images first, then sorted (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def run(args: argparse.Namespace) -> int:
    folder = convert(args.input, args.dataset_id, name=args.name, raw=args.raw, overwrite=args.overwrite,
                     max_cases=args.max_cases, progress=print)
    print(f"wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.datasets_conversion._common import cli_main

    return cli_main(f"python -m {CONVERTER}", __doc__.splitlines()[0], configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
