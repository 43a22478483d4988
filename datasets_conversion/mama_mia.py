"""Convert MAMA-MIA (breast DCE-MRI of ISPY1, ISPY2, DUKE, NACT with expert tumour masks) into the DKM dataset pair.

Dataset: Garrucho L. et al., "A large-scale multicenter breast cancer DCE-MRI benchmark dataset with expert
segmentations", Scientific Data (2025), doi:10.1038/s41597-025-04707-4; data on Synapse (syn60868042). 1,506
pre-treatment DCE-MRI cases from four TCIA collections (I-SPY1/ACRIN 6657, I-SPY2/ACRIN 6698, Breast-MRI-NACT-Pilot,
Duke-Breast-Cancer-MRI), each with an expert primary-tumour segmentation.

What the release looks like (facts and where they come from):

* ``<root>/images/<PID>/<pid>_000k.nii.gz``: one folder per patient, one NIfTI file per DCE phase, ``k = 0`` the
  pre-contrast image and ``k = 1, 2, ...`` the post-contrast images in time order; the number of phases differs
  between cases. Source: ``read_mri_phase_from_patient_id`` in the authors' repository (github.com/LidiaGarrucho/
  MAMA-MIA, ``src/preprocessing.py``: ``{images}/{patient_id}/{patient_id}_000{phase}.nii.gz``, phase 0 = pre-
  contrast, 1 = first post-contrast, ...).
* ``<root>/segmentations/expert/<pid>.nii.gz``: the binary expert tumour mask on the grid of the images (same
  ``src/preprocessing.py``, ``read_segmentation_from_patient_id``); ``segmentations/automatic`` holds the authors'
  nnU-Net masks and is not used here.
* Patient ids are ``<COHORT>_<number>`` (``DUKE_001``, ``ISPY1_1001``, ``ISPY2_100899``, ``NACT_...``). The case of
  the names is not consistent between copies: the authors' notebooks use ``DUKE_001``; users of the release report
  upper-case folders holding lower-case files (``DUKE_001/duke_001_0000.nii.gz``) and lower-case segmentation and
  ``patient_info_files/<pid>.json`` names (public projects built on the download). Names are therefore matched
  case-insensitively, and the case id is the lower-case pid.
* ``clinical_and_imaging_info.xlsx``, ``patient_info_files/`` and ``train_test_splits.csv`` may lie next to
  ``images/``; they are neither required nor read.

What this converter does:

* Cohort = the pid before its first ``_``; ``--cohorts`` (default ``ISPY1 DUKE``) picks the cohorts, and cases of
  other cohorts are not even opened.
* ``--phases N`` keeps the channels pre, post1..postN (default 2, the two post-contrast time points of DKM Sec. 3).
  A case with fewer post-contrast phases is skipped (``skipped_cases`` in dataset.json, and the run summary); a case
  without its pre-contrast file, or with a gap among the kept phases (``_0002`` present, ``_0001`` absent), is an
  error.
* A case without an expert segmentation stays in the DCE dataset as an unlabelled case (see ``_dce_common``).
* Every case is its own patient (one pre-treatment exam each), so the train/test split is grouped by pid.
* ``--box_labels``: DUKE tumour labels become the filled axis-aligned bounding box of the expert mask on the
  pre-contrast grid ("Box-to-Mask"). Only for HCNet stages 1-2, where the label is a clustering ROI; a dataset
  written with it must never be used to train or evaluate segmentation (recorded in dataset.json).
* ``--breast_masks DIR``: ``DIR/<pid>.nii.gz`` breast masks (0/1, on the grid of the case) are checked like the
  tumour label and written to ``<dataset>/breast_masks/<case>.nii.gz`` in both datasets (the pre-contrast-only one
  holds its labelled cases only), as the clustering ROI. Cases without a mask are listed in dataset.json.
* ``--subtraction``: a further DCE channel ``SUB`` = post1 - pre (float32, raw intensities; see ``_dce_common``).

Errors (UserInputError naming the case and the file): missing pre-contrast phase, a gap among the kept phases,
phases / segmentation / breast mask on another voxel grid (unless ``--resample_to_pre``), label values other than
0/1, NaN voxels, unreadable files, no case of the chosen cohorts. See ``_dce_common`` for the two datasets written
(DKM, Lv et al., MICCAI 2023, Sec. 2-3).

Example::

    python -m datasets_conversion.mama_mia -i /data/MAMA-MIA -d 505 --pre_only_id 506 --cohorts ISPY1 DUKE
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import nifti_nan_count

from nnunet_ext.datasets_conversion._dce_common import (CaseMask, CasePlan, LoadedCase, add_common_arguments,
                                                        align_to_reference, binary_label, cli_main, raw_root_from,
                                                        write_paired_datasets)

CONVERTER = "datasets_conversion.mama_mia"
DEFAULT_NAME = "MAMAMIA"
COHORTS = ("DUKE", "ISPY1", "ISPY2", "NACT")
DEFAULT_COHORTS = ("ISPY1", "DUKE")
BOX_COHORT = "DUKE"
BREAST_MASK_FOLDER = "breast_masks"
FILE_ENDING = ".nii.gz"
REFERENCE = ("Garrucho L. et al., A large-scale multicenter breast cancer DCE-MRI benchmark dataset with expert "
             "segmentations, Scientific Data (2025), doi:10.1038/s41597-025-04707-4; data: Synapse syn60868042")
LICENCE = ("MAMA-MIA segmentations and data: CC BY-NC 4.0; images under the licences of their TCIA collections "
           "(I-SPY1 and Breast-MRI-NACT-Pilot CC BY 3.0, I-SPY2 CC BY 4.0, Duke-Breast-Cancer-MRI CC BY-NC 4.0)")
BOX_NOTE = ("Box-to-Mask: the tumour labels of the DUKE cases listed here are the filled axis-aligned bounding box "
            "of the expert segmentation (on the pre-contrast grid). Only for HCNet stages 1-2 (clustering ROI); never "
            "train or evaluate segmentation on this dataset")
BREAST_MASK_NOTE = ("breast masks (0/1, on the pre-contrast grid) for use as the clustering ROI; nnU-Net ignores "
                    "this folder")
_PHASE_FILE = re.compile(r"^(?P<pid>.+)_(?P<phase>[0-9]{4})\.nii(?:\.gz)?$", re.IGNORECASE)


@dataclass
class SourceCase:
    """One patient of the release, found by scanning (no pixel read).

    Attributes:
        pid: lower-case patient id (the case id).
        cohort: upper-case cohort, the pid before its first ``_``.
        folder: ``images/<PID>`` folder.
        phases: phase index -> file (0 = pre-contrast).
        spelled: the pid as the phase files spell it (for messages naming a missing file).
        segmentation: expert segmentation file, if any.
        breast_mask: breast mask file from ``--breast_masks``, if any.
    """

    pid: str
    cohort: str
    folder: Path
    phases: dict[int, Path]
    spelled: str
    segmentation: Path | None = None
    breast_mask: Path | None = None

    def phase_path(self, phase: int) -> Path:
        """The file of ``phase``, or where it would be (for messages)."""
        return self.phases.get(phase, self.folder / f"{self.spelled}_{phase:04d}{FILE_ENDING}")


# ----------------------------------------------------------------------------------------------------------------------
# scanning


def _nifti_stem(name: str) -> str | None:
    lower = name.lower()
    for ending in (".nii.gz", ".nii"):
        if lower.endswith(ending):
            return name[:-len(ending)]
    return None


def index_masks(folder: Path, what: str) -> dict[str, Path]:
    """``{lower-case pid: file}`` for the ``<pid>.nii(.gz)`` files of ``folder``; two files for one pid (names that
    differ in case or ending only) are an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = _nifti_stem(path.name)
        if path.name.startswith(".") or stem is None or not path.is_file():
            continue
        pid = stem.lower()
        if pid in found:
            raise UserInputError(f"case {pid}: two {what} files, {found[pid]} and {path}; keep one")
        found[pid] = path
    return found


def normalise_cohorts(cohorts: Sequence[str]) -> list[str]:
    """Upper-case, de-duplicated cohorts; an unknown one is an error listing the known ones."""
    chosen = list(dict.fromkeys(c.strip().upper() for c in cohorts))
    unknown = [c for c in chosen if c not in COHORTS]
    if unknown or not chosen:
        raise UserInputError(f"unknown cohort(s) {', '.join(unknown) or '(none given)'} in --cohorts; choose from "
                             f"{', '.join(COHORTS)}")
    return chosen


def _cohort_of(pid: str) -> str:
    return pid.split("_", 1)[0].upper()


def _phase_files(folder: Path, pid: str) -> tuple[dict[int, Path], str]:
    """The ``<pid>_<kkkk>.nii(.gz)`` files of one patient folder (pid matched case-insensitively) and the pid as
    they spell it; other files are ignored. The same phase twice is an error."""
    phases: dict[int, Path] = {}
    spelled = pid
    for path in sorted(folder.iterdir()):
        match = _PHASE_FILE.match(path.name)
        if path.name.startswith(".") or match is None or match["pid"].lower() != pid or not path.is_file():
            continue
        phase = int(match["phase"])
        if phase in phases:
            raise UserInputError(f"case {pid}: phase {phase} is given twice ({phases[phase]} and {path})")
        phases[phase] = path
        spelled = match["pid"]
    return phases, spelled


def _skip_reason(case: SourceCase, n_post: int) -> str | None:
    """None if the case has pre, post1..post``n_post``; a reason if it has fewer phases (skipped); an error if the
    pre-contrast file is missing or one of the kept phases is missing while a later one exists."""
    where = f"case {case.pid}"
    if 0 not in case.phases:
        present = ", ".join(p.name for _, p in sorted(case.phases.items())) or "no phase files"
        raise UserInputError(f"{where}: pre-contrast phase missing ({case.phase_path(0)} not found; the folder has "
                             f"{present})")
    last = max(case.phases)
    for phase in range(1, min(last, n_post) + 1):
        if phase not in case.phases:
            raise UserInputError(f"{where}: phase {phase} missing ({case.phase_path(phase)} not found) although the "
                                 f"case has phases up to {case.phase_path(last).name}")
    if last < n_post:
        return f"{last} post-contrast phase(s), fewer than --phases {n_post}"
    return None


def scan_source(root: Path, cohorts: Sequence[str], n_post: int,
                breast_masks: Path | None = None) -> tuple[list[SourceCase], dict[str, str]]:
    """Find the cases of ``cohorts`` under ``root`` (no pixel is read); return the cases to convert (sorted by pid)
    and the skipped ones (pid -> reason)."""
    root = Path(root)
    images, expert = root / "images", root / "segmentations" / "expert"
    if not root.is_dir():
        raise UserInputError(f"source folder {root} does not exist or is not a folder")
    for folder, expected in ((images, "images/<PID>/<pid>_0000.nii.gz, ..."),
                             (expert, "segmentations/expert/<pid>.nii.gz")):
        if not folder.is_dir():
            raise UserInputError(f"{folder} not found: {root} does not look like the MAMA-MIA release (expected "
                                 f"{expected})")
    if breast_masks is not None and not Path(breast_masks).is_dir():
        raise UserInputError(f"--breast_masks folder {breast_masks} does not exist or is not a folder")

    folders: dict[str, Path] = {}
    for folder in sorted(images.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        pid = folder.name.lower()
        if pid in folders:
            raise UserInputError(f"case {pid}: two image folders, {folders[pid]} and {folder}; keep one")
        folders[pid] = folder
    found = Counter(_cohort_of(pid) for pid in folders)
    chosen = {pid: folder for pid, folder in folders.items() if _cohort_of(pid) in cohorts}
    if not chosen:
        seen = ", ".join(f"{c} ({n})" for c, n in sorted(found.items())) or "none"
        raise UserInputError(f"no case of cohort(s) {', '.join(cohorts)} in {images} (patient folders found per "
                             f"cohort: {seen})")

    segmentations = index_masks(expert, "expert segmentation")
    masks = index_masks(Path(breast_masks), "breast mask") if breast_masks is not None else {}
    cases, skipped = [], {}
    for pid, folder in sorted(chosen.items()):
        phases, spelled = _phase_files(folder, pid)
        case = SourceCase(pid=pid, cohort=_cohort_of(pid), folder=folder, phases=phases, spelled=spelled,
                          segmentation=segmentations.get(pid), breast_mask=masks.get(pid))
        reason = _skip_reason(case, n_post)
        if reason is None:
            cases.append(case)
        else:
            skipped[pid] = reason
    return cases, skipped


# ----------------------------------------------------------------------------------------------------------------------
# reading


def read_checked(path: Path, where: str, what: str):
    """The SimpleITK image at ``path``; unreadable, truncated or NaN-holding files are one-line errors."""
    from nnunet_ext.imageio import read_sitk_image

    try:
        image = read_sitk_image(path, what=what)
    except UserInputError as exc:
        raise UserInputError(f"{where}: {exc}") from None
    n_nan = nifti_nan_count(path)
    if n_nan:
        raise UserInputError(f"{where}: {what} {path} contains {n_nan} NaN voxel(s)")
    return image


def bounding_box_label(label):
    """The filled axis-aligned bounding box (voxel grid of ``label``) of all foreground voxels, as uint8 0/1; an
    empty label stays empty."""
    import SimpleITK as sitk

    values = sitk.GetArrayViewFromImage(label)
    box = np.zeros(values.shape, np.uint8)
    foreground = np.nonzero(values)
    if foreground[0].size:
        box[tuple(slice(int(axis.min()), int(axis.max()) + 1) for axis in foreground)] = 1
    out = sitk.GetImageFromArray(box)
    out.CopyInformation(label)
    return out


def checked_breast_mask(path: Path, where: str) -> CaseMask:
    """The breast mask at ``path`` as uint8 0/1 (the shared writer puts it on the pre-contrast grid)."""
    import SimpleITK as sitk

    mask = read_checked(path, where, "breast mask")
    if mask.GetNumberOfComponentsPerPixel() != 1:
        raise UserInputError(f"{where}: breast mask {path} is not a scalar mask")
    values = sitk.GetArrayViewFromImage(mask)
    unexpected = [v for v in np.unique(values).tolist() if v not in (0, 1)]
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:10]) + (", ..." if len(unexpected) > 10 else "")
        raise UserInputError(f"{where}: breast mask {path} has values {shown}; expected a binary mask (0 and 1)")
    binary = sitk.GetImageFromArray(values.astype(np.uint8))
    binary.CopyInformation(mask)
    return CaseMask(binary, str(path), "breast mask")


def _loader(case: SourceCase, n_post: int, box: bool, resample: bool) -> Callable[[], LoadedCase]:
    where = f"case {case.pid}"

    def load() -> LoadedCase:
        names = ["pre"] + [f"post{k}" for k in range(1, n_post + 1)]
        paths = [case.phases[k] for k in range(n_post + 1)]
        images = [read_checked(path, where, f"{name} image") for name, path in zip(names, paths)]
        label, resampled = None, []
        if case.segmentation is not None:
            label = read_checked(case.segmentation, where, "segmentation")
            if box and case.cohort == BOX_COHORT:  # the box is taken on the pre-contrast grid, so align first
                label = binary_label(label, where, str(case.segmentation))
                label, was_resampled = align_to_reference(label, images[0], is_label=True, resample=resample,
                                                          where=where, what="segmentation",
                                                          source=str(case.segmentation))
                resampled += ["seg"] if was_resampled else []
                label = bounding_box_label(label)
        masks = {}
        if case.breast_mask is not None:
            masks[BREAST_MASK_FOLDER] = checked_breast_mask(case.breast_mask, where)
        return LoadedCase(images=images, image_sources=[str(p) for p in paths], label=label,
                          label_source=str(case.segmentation) if case.segmentation is not None else None,
                          resampled=resampled, masks=masks)
    return load


def plan_cases(cases: Sequence[SourceCase], n_post: int, box: bool = False, resample: bool = False
               ) -> list[CasePlan]:
    """One plan per case: case id = lower-case pid, split group = the patient."""
    plans = []
    for case in cases:
        provenance = {"cohort": case.cohort, "folder": case.folder.name,
                      "phases": [case.phases[k].name for k in range(n_post + 1)],
                      "phases_in_source": len(case.phases)}
        if case.segmentation is not None:
            boxed = box and case.cohort == BOX_COHORT
            provenance["segmentation"] = case.segmentation.name + (" (bounding box)" if boxed else "")
        if case.breast_mask is not None:
            provenance["breast_mask"] = case.breast_mask.name
        plans.append(CasePlan(case_id=case.pid, labelled=case.segmentation is not None,
                              load=_loader(case, n_post, box, resample), where=f"case {case.pid}",
                              group=case.pid, provenance=provenance))
    return plans


def convert(source: str | Path, dataset_id: int, pre_only_id: int, name: str = DEFAULT_NAME, raw: str | None = None,
            overwrite: bool = False, test_fraction: float = 0.3, seed: int = 0, resample_to_pre: bool = False,
            cohorts: Sequence[str] = DEFAULT_COHORTS, n_post: int = 2, box_labels: bool = False,
            breast_masks: str | Path | None = None,
            progress: Callable[[str], None] | None = None, subtraction: bool = False) -> tuple[Path, Path]:
    """Python API behind the CLI: write both datasets and return their folders (DCE, pre-contrast only)."""
    source = Path(source)
    if n_post < 1:
        raise UserInputError(f"--phases must be >= 1 (post-contrast phases to keep), got {n_post}")
    cohorts = normalise_cohorts(cohorts)
    if box_labels and BOX_COHORT not in cohorts:
        raise UserInputError(f"--box_labels only changes {BOX_COHORT} cases, but --cohorts is {' '.join(cohorts)}")
    mask_source = Path(breast_masks) if breast_masks is not None else None
    raw_root = Path(raw_root_from(raw))
    cases, skipped = scan_source(source, cohorts, n_post, mask_source)
    plans = plan_cases(cases, n_post, box_labels, resample_to_pre)

    boxed = sorted(c.pid for c in cases if box_labels and c.cohort == BOX_COHORT and c.segmentation is not None)
    no_mask = sorted(c.pid for c in cases if c.breast_mask is None)
    per_cohort = Counter(c.cohort for c in cases)
    extra = {"mama_mia": {"cohorts": cohorts, "post_contrast_phases": n_post,
                          "cases_per_cohort": {c: per_cohort.get(c, 0) for c in cohorts},
                          "segmentations": "segmentations/expert"}}
    if skipped:
        extra["skipped_cases"] = skipped
    if box_labels:
        extra["box_labels"] = {"cases": boxed, "note": BOX_NOTE}
    if mask_source is not None:
        extra["breast_masks"] = {"folder": BREAST_MASK_FOLDER, "source": str(mask_source.resolve()),
                                 "cases_without_mask": no_mask, "note": BREAST_MASK_NOTE}
    description = (f"MAMA-MIA breast DCE-MRI, cohorts {', '.join(cohorts)}: channel 0 pre-contrast, channels "
                   f"1..{n_post} post-contrast; label 1 = expert primary-tumour segmentation")
    if box_labels:
        description += f" ({BOX_COHORT}: bounding box of it; clustering ROI only, not for segmentation)"
    folders = write_paired_datasets(plans, raw_root=raw_root, source=source, dce_id=dataset_id,
                                    pre_only_id=pre_only_id, name=name, overwrite=overwrite, n_post=n_post,
                                    test_fraction=test_fraction, seed=seed, resample_to_pre=resample_to_pre,
                                    converter=CONVERTER, description=description, reference=REFERENCE,
                                    licence=LICENCE, extra_json=extra, inputs=[mask_source] if mask_source else (),
                                    progress=progress, subtraction=subtraction)
    if progress is not None:
        for line in summary_lines(cases, skipped, boxed, no_mask if mask_source is not None else None):
            progress(line)
    return folders


def summary_lines(cases: Sequence[SourceCase], skipped: dict[str, str], boxed: Sequence[str],
                  no_mask: Sequence[str] | None) -> list[str]:
    """The run summary: cases per cohort, skipped, unlabelled, boxed and mask-less cases."""
    per_cohort = Counter(c.cohort for c in cases)
    lines = ["converted " + ", ".join(f"{cohort}: {n}" for cohort, n in sorted(per_cohort.items()))]
    for pid, reason in sorted(skipped.items()):
        lines.append(f"skipped {pid}: {reason}")
    unlabelled = sorted(c.pid for c in cases if c.segmentation is None)
    if unlabelled:
        lines.append(f"no expert segmentation (unlabelled, DCE dataset only): {', '.join(unlabelled)}")
    if boxed:
        lines.append(f"bounding-box labels (clustering ROI only, not for segmentation): {', '.join(boxed)}")
    if no_mask:
        lines.append(f"no breast mask: {', '.join(no_mask)}")
    return lines


# ----------------------------------------------------------------------------------------------------------------------
# command line


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, DEFAULT_NAME)
    parser.add_argument("--cohorts", nargs="+", default=list(DEFAULT_COHORTS), metavar="COHORT",
                        help=f"cohorts to convert, case-insensitive, from {', '.join(COHORTS)} (default: "
                             f"{' '.join(DEFAULT_COHORTS)})")
    parser.add_argument("--phases", dest="n_post", type=int, default=2, metavar="N",
                        help="post-contrast phases to keep: channels pre, post1..postN (default 2, as in DKM "
                             "Sec. 3); cases with fewer are skipped and listed")
    parser.add_argument("--box_labels", action="store_true",
                        help=f"{BOX_COHORT} labels become the bounding box of the expert mask (Box-to-Mask); only "
                             f"for HCNet stages 1-2 (clustering ROI), never for segmentation training/evaluation")
    parser.add_argument("--breast_masks", default=None, metavar="DIR",
                        help="folder of <PID>.nii.gz breast masks, written to <dataset>/breast_masks/<case>.nii.gz "
                             "(clustering ROI); cases without one are listed")


def run(args: argparse.Namespace) -> int:
    folders = convert(args.input, args.dataset_id, args.pre_only_id, name=args.name, raw=args.raw,
                      overwrite=args.overwrite, test_fraction=args.test_fraction, seed=args.seed,
                      resample_to_pre=args.resample_to_pre, cohorts=args.cohorts, n_post=args.n_post,
                      box_labels=args.box_labels, breast_masks=args.breast_masks, progress=print,
                      subtraction=args.subtraction)
    for folder in folders:
        print(f"wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli_main(f"python -m {CONVERTER}", __doc__.splitlines()[0], configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
