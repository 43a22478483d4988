"""Convert the CAMUS echocardiography challenge data into an nnU-Net raw dataset (2D: LV cavity, myocardium, atrium).

CAMUS (Leclerc et al., IEEE TMI 2019) holds apical two- and four-chamber views (2CH, 4CH) of 500 patients at end
diastole (ED) and end systole (ES), each with an expert segmentation. Source layouts::

    2019 release (MetaImage: a .mhd header next to its .raw pixel file)
    SRC/training/patientNNNN/patientNNNN_{2CH|4CH}_{ED|ES}.mhd      B-mode frame, 8-bit
    SRC/training/patientNNNN/patientNNNN_{2CH|4CH}_{ED|ES}_gt.mhd   its segmentation, values 0..3
    SRC/testing/patientNNNN/patientNNNN_{2CH|4CH}_{ED|ES}.mhd       challenge test frames, no segmentation

    2023 release (CAMUS_public, NIfTI)
    SRC/database_nifti/patientNNNN/patientNNNN_{2CH|4CH}_{ED|ES}[_gt].nii.gz
    SRC/patientNNNN/...                                             patient folders directly in -i also work
                                                                    (e.g. -i CAMUS_public/database_nifti)

Both releases also hold whole-cycle files (``*_sequence*``, ``*_half_sequence*``) and ``Info_{2CH|4CH}.cfg``: they
are not read, nor is any other file. A frame stored as a 3D image with one slice (the .mhd files are x * y * 1) is
written as 2D, keeping its in-plane spacing (mm). Labels: 0 background, 1 LV cavity (inside the endocardium),
2 LV myocardium, 3 left atrium.

A frame with a segmentation goes to imagesTr/labelsTr, one without to imagesTs. Case ids are
``camus_patientNNNN_{view}_{phase}``; the 2019 ``testing/`` folder numbers its patients from patient0001 again, so its
cases get a ``_test`` suffix (``camus_patient0001_2CH_ED_test``). The frames of one patient share a group
(``case_groups`` in dataset.json) so a split keeps a patient's views and phases together. Source files are only read.

Example::

    nnunet-ext convert camus -i CAMUS_public -d 420 --views 4CH --raw $nnUNet_raw
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_ext.datasets_conversion._2d_common import read_sitk_2d, shape_text, spacing_text
from nnunet_ext.datasets_conversion._common import raw_dataset_target
from nnunet_ext.errors import UserInputError

CONVERTER = "datasets_conversion.camus"
DEFAULT_NAME = "CAMUS"
FILE_ENDING = ".nii.gz"
LABELS = {"background": 0, "LV_cavity": 1, "LV_myocardium": 2, "left_atrium": 3}
VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
# the formats of the two releases (and the uncompressed NIfTI a user may have unpacked)
FRAME_SUFFIXES = (".mhd", ".nii.gz", ".nii")
SPLIT_FOLDERS = ("training", "testing")
NIFTI_FOLDER = "database_nifti"
_PATIENT = re.compile(r"^patient\d+$")


def check_choices(values: Sequence[str], allowed: Sequence[str], flag: str) -> list[str]:
    """``values`` upper-cased, each one of ``allowed``, duplicates dropped (order kept)."""
    if isinstance(values, str):
        values = [values]
    chosen: list[str] = []
    for value in values:
        key = str(value).upper()
        if key not in allowed:
            raise UserInputError(f"{flag} {value}: unknown value (choose from {', '.join(allowed)})")
        if key not in chosen:
            chosen.append(key)
    if not chosen:
        raise UserInputError(f"{flag} needs at least one of {', '.join(allowed)}")
    return chosen


def patient_folders(source: Path) -> tuple[list[Path], list[tuple[Path, bool]]]:
    """``(roots, patients)``: the folders searched and ``(patient folder, from the 2019 testing folder)`` each."""
    if not source.is_dir():
        raise UserInputError(f"source folder {source} does not exist or is not a folder")
    splits = [source / name for name in SPLIT_FOLDERS if (source / name).is_dir()]
    if splits and (source / NIFTI_FOLDER).is_dir():
        raise UserInputError(f"{source} holds both the 2019 layout (training/, testing/) and the 2023 one "
                             f"({NIFTI_FOLDER}/); pass -i the folder of one release")
    roots = splits or ([source / NIFTI_FOLDER] if (source / NIFTI_FOLDER).is_dir() else [source])
    patients = [(folder, root.name == "testing" and root != source) for root in roots
                for folder in sorted(root.iterdir()) if folder.is_dir() and _PATIENT.match(folder.name)]
    if not patients:
        raise UserInputError(f"no patient folders (patientNNNN/) in {', '.join(map(str, roots))}")
    return roots, patients


def find_frame(folder: Path, stem: str) -> Path | None:
    """The file ``stem`` + one of :data:`FRAME_SUFFIXES` in ``folder`` (None if absent; two formats are an error)."""
    found = [folder / f"{stem}{suffix}" for suffix in FRAME_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if len(found) > 1:
        raise UserInputError(f"{folder} holds {stem} twice ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def plan_cases(source: Path, views: Sequence[str] = VIEWS, phases: Sequence[str] = PHASES
               ) -> tuple[list[Path], list[dict]]:
    """Scan the source (names only) and return the folders searched and one record per frame."""
    roots, patients = patient_folders(source)
    cases = []
    for folder, is_test in patients:
        suffix = "_test" if is_test else ""
        for view in views:
            for phase in phases:
                stem = f"{folder.name}_{view}_{phase}"
                image = find_frame(folder, stem)
                if image is None:
                    raise UserInputError(f"missing {stem}.mhd or .nii.gz in {folder} (asked for by --views {view} "
                                         f"--phases {phase})")
                segmentation = find_frame(folder, f"{stem}_gt")
                cases.append({"id": f"camus_{stem}{suffix}", "group": f"{folder.name}{suffix}", "image": image,
                              "segmentation": segmentation, "split": "Tr" if segmentation else "Ts"})
    if not any(case["split"] == "Tr" for case in cases):
        raise UserInputError(f"no segmentation (*_gt.mhd or *_gt.nii.gz) in {', '.join(map(str, roots))}: "
                             f"nothing to train on")
    return roots, cases


def read_segmentation(path: Path, image: Path, shape: tuple[int, ...], spacing: tuple[float, float]) -> np.ndarray:
    """The segmentation at ``path`` as uint8, checked against its image's grid and CAMUS's labels 0..3."""
    segmentation, own_spacing = read_sitk_2d(path, "segmentation")
    if segmentation.shape != shape:
        raise UserInputError(f"segmentation {path} is {shape_text(segmentation.shape)} but its image {image.name} is "
                             f"{shape_text(shape)}")
    # both come from one acquisition: only the decimal rounding of the header may differ
    if not np.allclose(own_spacing, spacing, rtol=1e-4, atol=0.0):
        raise UserInputError(f"segmentation {path} has spacing {spacing_text(own_spacing)} mm but its image "
                             f"{image.name} has {spacing_text(spacing)} mm")
    unexpected = [v for v in np.unique(segmentation).tolist() if v not in LABELS.values()]
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        raise UserInputError(f"segmentation {path} has values {shown}; CAMUS labels are 0..3 (background, LV "
                             f"cavity, LV myocardium, left atrium)")
    return segmentation.astype(np.uint8)


def convert(source: str | Path, dataset_id: int, name: str = DEFAULT_NAME, raw: str | None = None,
            overwrite: bool = False, views: Sequence[str] = VIEWS, phases: Sequence[str] = PHASES,
            progress=None) -> Path:
    """Python API behind the CLI: write the dataset and return its folder."""
    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.imageio import write_image

    source = Path(source)
    views = check_choices(views, VIEWS, "--views")
    phases = check_choices(phases, PHASES, "--phases")
    folder, retire = raw_dataset_target(raw, dataset_id, name, overwrite)
    roots, cases = plan_cases(source, views, phases)
    with atomic_output_dir(folder, overwrite=overwrite, inputs=[source], retire=retire,
                           written_by=f"nnunet-ext convert {CONVERTER}") as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for index, case in enumerate(cases, start=1):
            image, spacing = read_sitk_2d(case["image"])
            write_image(tmp / f"images{case['split']}" / f"{case['id']}_0000{FILE_ENDING}", image, spacing)
            if case["segmentation"] is not None:
                label = read_segmentation(case["segmentation"], case["image"], image.shape, spacing)
                write_image(tmp / "labelsTr" / f"{case['id']}{FILE_ENDING}", label, spacing)
            if progress is not None:
                progress(f"[{index}/{len(cases)}] {case['image'].name} -> {case['id']} (images{case['split']})")
        training = [c for c in cases if c["split"] == "Tr"]
        dataset = {
            "channel_names": {"0": "US"}, "labels": LABELS, "numTraining": len(training),
            "file_ending": FILE_ENDING, "name": name,
            "description": "CAMUS 2D echocardiography (Leclerc et al., IEEE TMI 2019): apical 2CH/4CH views at ED/ES; "
                           "labels LV cavity, LV myocardium, left atrium; spacing from the source files in mm",
            "reference": "doi:10.1109/TMI.2019.2900516",
            "case_groups": {c["id"]: c["group"] for c in training},
            "conversion": {"converter": CONVERTER, "source": str(source.resolve()),
                           "patient_folders": [str(root.relative_to(source)) for root in roots],
                           "views": views, "phases": phases,
                           "cases": {c["id"]: str(c["image"].relative_to(source)) for c in cases}},
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", dest="input", required=True,
                        help="CAMUS folder: the 2019 release (training/, testing/), the 2023 one (database_nifti/) or "
                             "a folder of patientNNNN/ folders (read only, never modified)")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1..999)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"dataset name (default {DEFAULT_NAME})")
    parser.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--views", nargs="+", default=list(VIEWS), metavar="VIEW",
                        help=f"views to convert, of {', '.join(VIEWS)} (default both)")
    parser.add_argument("--phases", nargs="+", default=list(PHASES), metavar="PHASE",
                        help=f"cardiac phases to convert, of {', '.join(PHASES)} (default both)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def run(args: argparse.Namespace) -> int:
    folder = convert(args.input, args.dataset_id, name=args.name, raw=args.raw, overwrite=args.overwrite,
                     views=args.views, phases=args.phases, progress=print)
    print(f"wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.datasets_conversion._common import cli_main

    return cli_main(f"python -m {CONVERTER}", __doc__.splitlines()[0], configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
