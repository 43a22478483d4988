"""Convert the BraTS 2023 adult glioma release (BraTS-GLI) into an nnU-Net raw dataset (MRI; regions WT, TC, ET).

BraTS 2023 GLI (the RSNA-ASNR-MICCAI BraTS 2021 training and validation data, renamed; Baid et al. 2021,
arXiv:2107.02314; Synapse syn51156910) holds skull-stripped multi-parametric MRI co-registered to one 1 mm grid, with
expert tumour segmentations for the training cases. Source layout (the unpacked archives)::

    SRC/BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-t1n.nii.gz   native (pre-contrast) T1
    SRC/BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-t1c.nii.gz   post-contrast (Gd) T1
    SRC/BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-t2w.nii.gz   T2-weighted
    SRC/BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-t2f.nii.gz   T2 FLAIR
    SRC/BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-seg.nii.gz   segmentation (training cases only)

XXXXX is the patient, YYY the timepoint. Case folders may sit directly in SRC or one level down (e.g.
SRC/ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/ and SRC/ASNR-MICCAI-BraTS2023-GLI-Challenge-ValidationData/);
other folders and files are not read, and the source is never modified. Uncompressed ``.nii`` files are read too.

Channels: ``_0000`` = t1n and ``_0001`` = t1c (pre- and post-contrast T1, the input pair of residual-fusion
networks; ``--modalities t1``, the default). ``--modalities all`` adds ``_0002`` = t2w and ``_0003`` = t2f.
``channel_names`` are the release's suffixes, so nnU-Net z-scores every channel per image. Modalities that are not
chosen are neither read nor required.

Labels are written as released (1 NCR necrotic tumour core, 2 ED peritumoral edema, 3 ET enhancing tumour; uint8)
and declared as BraTS's evaluation regions, trained with nnU-Net's region-based losses::

    "labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [1, 3], "enhancing_tumor": [3]}
    "regions_class_order": [2, 1, 3]

(a predicted region map turns back into labels by painting WT as 2, then TC as 1, then ET as 3).

The output: case id = the case folder name (``BraTS-GLI-00000-000``). Cases with a segmentation go to
imagesTr/labelsTr; cases without one (the validation release) go to imagesTs, unlabelled. ``case_groups`` maps every
training case to its patient (``BraTS-GLI-XXXXX``), so nnunet-ext's planners write grouped folds
(``splits_final.json``) that keep a patient's timepoints together.

Checks, each one line naming the case and the file (nothing is written unless every case passes): no case folder
found, a case folder found twice, a chosen modality missing, a modality or the segmentation off the t1n grid (size,
spacing, origin, direction; within the DCE converters' tolerances the t1n header is copied), segmentation values
outside 0..3 (4 is the BraTS 2021 label of enhancing tumour: map 4 -> 3 first) or not integers, NaN voxels,
unreadable or truncated NIfTI, non-3D images, no labelled case at all.

Example::

    nnunet-ext convert brats2023 -i BraTS2023 -d 450 --modalities all --raw $nnUNet_raw
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from nnunet_ext.errors import UserInputError

CONVERTER = "datasets_conversion.brats2023"
DEFAULT_NAME = "BraTS2023GLI"
FILE_ENDING = ".nii.gz"
SUFFIXES = (".nii.gz", ".nii")
#: ``--modalities``: the release's file suffixes in channel order
MODALITIES = {"t1": ("t1n", "t1c"), "all": ("t1n", "t1c", "t2w", "t2f")}
DEFAULT_MODALITIES = "t1"
SEGMENTATION = "seg"
RELEASED_LABELS = {1: "NCR", 2: "ED", 3: "ET"}
LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [1, 3], "enhancing_tumor": [3]}
REGIONS_CLASS_ORDER = [2, 1, 3]
REFERENCE = ("Baid U. et al., The RSNA-ASNR-MICCAI BraTS 2021 Benchmark on Brain Tumor Segmentation and "
             "Radiogenomic Classification, arXiv:2107.02314 (2021); Menze B. et al., IEEE TMI 2015 "
             "(doi:10.1109/TMI.2014.2377694); Bakas S. et al., Scientific Data 2017 (doi:10.1038/sdata.2017.117)")
_CASE = re.compile(r"^(?P<patient>BraTS-GLI-\d{5})-(?P<timepoint>\d{3})$")


# ----------------------------------------------------------------------------------------------------------------------
# the release's files (names only)


def case_folders(source: Path) -> list[Path]:
    """The ``BraTS-GLI-XXXXX-YYY/`` folders in ``source`` or one level down, sorted by name (a name twice is an
    error)."""
    if not source.is_dir():
        raise UserInputError(f"source folder {source} does not exist or is not a folder")
    parents = [source] + sorted(p for p in source.iterdir()
                                if p.is_dir() and not p.name.startswith(".") and not _CASE.match(p.name))
    found: dict[str, Path] = {}
    for parent in parents:
        for folder in sorted(parent.iterdir()):
            if not folder.is_dir() or not _CASE.match(folder.name):
                continue
            if folder.name in found:
                raise UserInputError(f"case {folder.name} is in {source} twice ({found[folder.name]} and {folder}); "
                                     f"keep one")
            found[folder.name] = folder
    if not found:
        raise UserInputError(f"no BraTS-GLI case folders (BraTS-GLI-XXXXX-YYY/) in {source} or its subfolders")
    return [found[name] for name in sorted(found)]


def case_file(folder: Path, suffix: str) -> Path | None:
    """``folder/<case>-<suffix>.nii.gz`` (or ``.nii``); None if absent, both is an error."""
    present = [folder / f"{folder.name}-{suffix}{ending}" for ending in SUFFIXES
               if (folder / f"{folder.name}-{suffix}{ending}").is_file()]
    if len(present) > 1:
        raise UserInputError(f"case {folder.name}: {suffix} is given twice ({present[0].name} and {present[1].name} "
                             f"in {folder}); keep one")
    return present[0] if present else None


def check_modalities(modalities: str) -> tuple[str, ...]:
    if modalities not in MODALITIES:
        raise UserInputError(f"--modalities {modalities}: unknown value (choose from {', '.join(MODALITIES)})")
    return MODALITIES[modalities]


def plan_cases(source: Path, modalities: str = DEFAULT_MODALITIES) -> list[dict]:
    """One record per case (no pixel read): id, patient group, image files in channel order, segmentation (or
    None), split ``Tr``/``Ts``."""
    channels = check_modalities(modalities)
    cases = []
    for folder in case_folders(source):
        images = []
        for modality in channels:
            path = case_file(folder, modality)
            if path is None:
                raise UserInputError(f"case {folder.name}: {modality} image missing ({folder / folder.name}-"
                                     f"{modality}{FILE_ENDING} not found; --modalities {modalities} needs "
                                     f"{', '.join(channels)})")
            images.append(path)
        label = case_file(folder, SEGMENTATION)
        cases.append({"id": folder.name, "group": _CASE.match(folder.name)["patient"], "folder": folder,
                      "images": images, "label": label, "split": "Tr" if label is not None else "Ts"})
    if not any(case["split"] == "Tr" for case in cases):
        raise UserInputError(f"no case in {source} has a segmentation (<case>-{SEGMENTATION}{FILE_ENDING}): nothing "
                             f"to train on ({len(cases)} unlabelled case(s) found)")
    return cases


# ----------------------------------------------------------------------------------------------------------------------
# reading and checking volumes


def read_case_volume(path: Path, case: str, what: str):
    """The 3D scalar volume at ``path``; unreadable, truncated, non-3D or NaN-holding files are one-line errors."""
    from nnunet_ext.datasets_conversion.registration_pairs import read_volume

    try:
        return read_volume(path, what)
    except UserInputError as exc:
        raise UserInputError(f"case {case}: {exc}") from None


def on_grid(image, path: Path, reference, reference_path: Path, case: str, what: str):
    """``image`` with the header of ``reference`` (the case's t1n), after checking that it lies on its grid."""
    from nnunet_ext.geometry import geometry_mismatch

    reason = geometry_mismatch(reference, image)
    if reason is not None:
        raise UserInputError(f"case {case}: {what} {path} is not on the grid of {reference_path.name} ({reason})")
    image.CopyInformation(reference)  # identical headers for nnU-Net's exact geometry check
    return image


def checked_segmentation(label, path: Path, case: str):
    """The segmentation as uint8 with its values checked: integers in 0..3 (BraTS 2023: 1 NCR, 2 ED, 3 ET)."""
    from nnunet_ext.datasets_conversion.registration_pairs import integer_values, label_image

    try:
        values = integer_values(label, path, "segmentation")
    except UserInputError as exc:
        raise UserInputError(f"case {case}: {exc}") from None
    unexpected = sorted(set(np.unique(values).tolist()) - {0, *RELEASED_LABELS})
    if unexpected:
        shown = ", ".join(map(str, unexpected[:5])) + (", ..." if len(unexpected) > 5 else "")
        hint = ("; 4 is the BraTS 2021 label of enhancing tumour, which BraTS 2023 renamed to 3: map 4 -> 3"
                if 4 in unexpected else "")
        raise UserInputError(f"case {case}: segmentation {path} has values {shown}; BraTS 2023 labels are 0..3 (1 NCR, "
                             f"2 ED, 3 ET){hint}")
    return label_image(values, label)


# ----------------------------------------------------------------------------------------------------------------------
# the dataset


def convert(source: str | Path, dataset_id: int, name: str = DEFAULT_NAME, raw: str | None = None,
            overwrite: bool = False, modalities: str = DEFAULT_MODALITIES, progress=None) -> Path:
    """Python API behind the CLI: write the dataset and return its folder."""
    import SimpleITK as sitk

    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.datasets_conversion._common import raw_dataset_target

    source = Path(source)
    channels = check_modalities(modalities)
    folder, retire = raw_dataset_target(raw, dataset_id, name, overwrite)
    cases = plan_cases(source, modalities)
    with atomic_output_dir(folder, overwrite=overwrite, inputs=[source], retire=retire,
                           written_by=f"nnunet-ext convert {CONVERTER}") as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for index, case in enumerate(cases, start=1):
            reference_path = case["images"][0]
            reference = read_case_volume(reference_path, case["id"], f"{channels[0]} image")
            images = [reference]
            for modality, path in zip(channels[1:], case["images"][1:]):
                image = read_case_volume(path, case["id"], f"{modality} image")
                images.append(on_grid(image, path, reference, reference_path, case["id"], f"{modality} image"))
            for channel, image in enumerate(images):
                sitk.WriteImage(image, str(tmp / f"images{case['split']}" / f"{case['id']}_{channel:04d}{FILE_ENDING}"),
                                True)
            if case["label"] is not None:
                label = on_grid(read_case_volume(case["label"], case["id"], "segmentation"), case["label"], reference,
                                reference_path, case["id"], "segmentation")
                label = checked_segmentation(label, case["label"], case["id"])
                sitk.WriteImage(label, str(tmp / "labelsTr" / f"{case['id']}{FILE_ENDING}"), True)
            if progress is not None:
                progress(f"[{index}/{len(cases)}] {case['id']} (images{case['split']}, "
                         f"{'labelled' if case['label'] is not None else 'unlabelled'})")
        training = [c for c in cases if c["split"] == "Tr"]
        dataset = {
            "channel_names": {str(k): modality for k, modality in enumerate(channels)},
            "labels": LABELS, "regions_class_order": REGIONS_CLASS_ORDER,
            "numTraining": len(training), "file_ending": FILE_ENDING, "name": name,
            "description": "BraTS 2023 adult glioma (BraTS-GLI) multi-parametric brain MRI; labels as released (1 NCR, "
                           "2 ED, 3 ET), trained as the regions whole tumour, tumour core and enhancing tumour; "
                           "imagesTs = cases without a segmentation",
            "reference": REFERENCE,
            "licence": "see the BraTS 2023 data terms (Synapse syn51156910)",
            "released_labels": {str(value): label for value, label in RELEASED_LABELS.items()},
            "case_groups": {c["id"]: c["group"] for c in training},
            "conversion": {"converter": CONVERTER, "source": str(source.resolve()), "modalities": modalities,
                           "unlabelled_cases": [c["id"] for c in cases if c["split"] == "Ts"],
                           "cases": {c["id"]: str(c["folder"].relative_to(source)) for c in cases}},
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", dest="input", required=True,
                        help="folder holding BraTS-GLI-XXXXX-YYY/ case folders, directly or one level down (read "
                             "only, never modified)")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1..999)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"dataset name (default {DEFAULT_NAME})")
    parser.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--modalities", choices=list(MODALITIES), default=DEFAULT_MODALITIES,
                        help="t1: channels t1n, t1c (default); all: t1n, t1c, t2w, t2f")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def run(args: argparse.Namespace) -> int:
    folder = convert(args.input, args.dataset_id, name=args.name, raw=args.raw, overwrite=args.overwrite,
                     modalities=args.modalities, progress=print)
    print(f"wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.datasets_conversion._common import cli_main

    return cli_main(f"python -m {CONVERTER}", __doc__.splitlines()[0], configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
