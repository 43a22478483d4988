"""Shared part of the DCE-MRI converters: resampling onto the pre-contrast grid, train/test split and the paired-dataset
writer.

DKM (Lv et al., MICCAI 2023, Sec. 2) works on a DCE sequence {x_K, K = 0..k}: x_0 is the pre-contrast image and
x_1..x_k the post-contrast images. Its diffusion module learns x_0 -> x_k from image pairs only (Eq. 6), while the
segmentation module is trained on labelled cases and, at test time, sees the pre-contrast image only (Sec. 3). Every
converter therefore writes two nnU-Net raw datasets from the same cases:

* the DCE dataset: channel 0 ``pre``, channels 1..k ``post1``..``postk``, labels ``{"background": 0, "tumor": 1}``.
  Cases without a tumour segmentation stay in (the diffusion module can use them) with an all-zero label map, because
  nnU-Net needs a label file for every training case; dataset.json lists them under ``unlabeled_cases``. They always
  go to imagesTr.
* the pre-contrast-only dataset: channel 0 only, labelled cases only, same case ids, geometry and train/test split.

The two dataset.json files name each other under ``pre_only_dataset`` / ``paired_dce_dataset`` (folder names), the
convention of ``nnunet_ext.synth``. Channel names are plain names, so nnU-Net z-scores every channel per image.

``--subtraction`` (every DCE converter) appends one channel ``SUB`` = post1 - pre to the DCE dataset (the last
channel; the pre-contrast-only dataset is unchanged). It is computed here, in float32 from the raw intensities after
post1 is on the pre-contrast grid: nnU-Net z-scores each channel on its own, so a difference of the normalised
channels would not be the subtraction image a reader looks at. ``SUB`` is no time point: code that walks the phases
of a DCE dataset takes them from :func:`phase_channels`, which leaves it out.

Phases and segmentation of a case must share one voxel grid (:func:`nnunet_ext.geometry.geometry_mismatch`). A grid
that differs by more than its tolerances is an error, unless the user asks for ``--resample_to_pre`` (linear
interpolation for images, nearest neighbour for labels, onto the pre-contrast grid). Grids that agree within the
tolerances get the pre-contrast geometry copied verbatim, so nnU-Net's exact checks see identical headers.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from nnunet_ext.atomic import atomic_output_dirs, check_replaceable
from nnunet_ext.errors import UserInputError
from nnunet_ext.synth.base import dataset_folder_name, existing_dataset_with_id

# re-exported: the DCE converters import everything they share from here
from nnunet_ext.datasets_conversion._common import check_dataset_name, cli_main, raw_root_from  # noqa: F401
from nnunet_ext.geometry import geometry_mismatch

FILE_ENDING = ".nii.gz"
LABELS = {"background": 0, "tumor": 1}


SUBTRACTION_CHANNEL = "SUB"  # channel name of post1 - pre (raw intensities), the last channel when present


def dce_channel_names(n_post: int, subtraction: bool = False) -> dict[str, str]:
    """dataset.json ``channel_names`` for a pre-contrast image followed by ``n_post`` post-contrast images and, with
    ``subtraction``, the ``SUB`` channel."""
    names = {"0": "pre", **{str(k): f"post{k}" for k in range(1, n_post + 1)}}
    if subtraction:
        names[str(n_post + 1)] = SUBTRACTION_CHANNEL
    return names


def subtraction_image(pre: np.ndarray, post1: np.ndarray) -> np.ndarray:
    """``SUB = post1 - pre`` in float32, from raw (not normalised) intensities on one voxel grid."""
    return np.asarray(post1, np.float32) - np.asarray(pre, np.float32)


def phase_channels(channel_names: Mapping[str, str]) -> list[int]:
    """The time points of a DCE dataset (channel 0 pre-contrast, then the post-contrast phases), in channel order:
    every channel of dataset.json ``channel_names`` but a ``SUB`` channel, which is a derived image, no phase."""
    return sorted(int(k) for k, name in channel_names.items() if name != SUBTRACTION_CHANNEL)


def phase_files(images_folder: Path, case: str) -> list[Path]:
    """The time-point files ``<case>_XXXX.nii.gz`` of an nnU-Net images folder, in channel order, without a ``SUB``
    channel; the dataset.json next to the folder (in its parent) names the channels, and without one every file is
    taken for a time point."""
    files = sorted(Path(images_folder).glob(f"{case}_[0-9][0-9][0-9][0-9]{FILE_ENDING}"))
    dataset_json = Path(images_folder).parent / "dataset.json"
    try:
        keep = set(phase_channels(json.loads(dataset_json.read_text())["channel_names"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no (readable) dataset.json
        return files
    return [f for f in files if int(f.name[len(case) + 1:-len(FILE_ENDING)]) in keep]


@dataclass
class CaseMask:
    """A further binary (0/1, uint8) mask of a case, e.g. a breast mask, checked by the converter that reads it.

    Attributes:
        image: the SimpleITK mask.
        source: where it came from, for error messages.
        what: how error messages name it, e.g. ``"breast mask"``.
    """

    image: object
    source: str
    what: str


@dataclass
class LoadedCase:
    """Images and label of one case as SimpleITK images, with a human-readable source for every one of them.

    Attributes:
        images: pre-contrast image followed by the post-contrast images in time order.
        image_sources: where each image came from (file path, or series and a file) for error messages.
        label: tumour segmentation, or None for an unlabelled case.
        label_source: where the label came from.
        resampled: names of the channels/label the loader already resampled onto the pre grid.
        masks: further masks by folder name: written to ``<dataset>/<folder>/<case>.nii.gz`` in the DCE dataset and,
            for labelled cases, in the pre-contrast-only dataset, put on the pre-contrast grid like the label.
    """

    images: list
    image_sources: list[str]
    label: object | None = None
    label_source: str | None = None
    resampled: list[str] = field(default_factory=list)
    masks: dict[str, CaseMask] = field(default_factory=dict)


@dataclass
class CasePlan:
    """A case found while scanning the source, before any pixel is read.

    Attributes:
        case_id: nnU-Net case identifier.
        labelled: whether ``load`` will return a tumour segmentation.
        load: reads the case (called once, while writing, so only one case is in memory).
        where: how error messages name the case, e.g. ``"patient UCSF-BR-01"``.
        group: cases of one group land in the same split (visits of one patient); default: the case itself.
        provenance: what the case was made from, recorded in dataset.json.
    """

    case_id: str
    labelled: bool
    load: Callable[[], LoadedCase]
    where: str = ""
    group: str = ""
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.where = self.where or f"case {self.case_id}"
        self.group = self.group or self.case_id


# ----------------------------------------------------------------------------------------------------------------------
# geometry


def resample_onto(image, reference, is_label: bool):
    """Resample ``image`` onto the grid of ``reference``: nearest neighbour for labels, linear (float32) for images."""
    import SimpleITK as sitk

    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(reference)
    resampler.SetDefaultPixelValue(0)
    if is_label:
        resampler.SetInterpolator(sitk.sitkNearestNeighbor)
        resampler.SetOutputPixelType(sitk.sitkUInt8)
    else:
        resampler.SetInterpolator(sitk.sitkLinear)
        resampler.SetOutputPixelType(sitk.sitkFloat32)
    return resampler.Execute(image)


def align_to_reference(image, reference, *, is_label: bool, resample: bool, where: str, what: str,
                       source: str) -> tuple[object, bool]:
    """Return ``image`` on the grid of ``reference`` and whether it had to be resampled.

    Within tolerance the reference geometry is copied (no interpolation); beyond it the image is resampled when
    ``resample`` is set, otherwise that is a UserInputError naming the case and the file.
    """
    reason = geometry_mismatch(reference, image)
    if reason is None:
        image.CopyInformation(reference)
        return image, False
    if not resample:
        raise UserInputError(f"{where}: {what} {source} is not on the pre-contrast grid ({reason}); "
                             f"pass --resample_to_pre to resample it onto the pre-contrast image")
    if image.GetDimension() != reference.GetDimension():
        raise UserInputError(f"{where}: {what} {source} cannot be resampled onto the pre-contrast grid ({reason})")
    return resample_onto(image, reference, is_label), True


# ----------------------------------------------------------------------------------------------------------------------
# content checks


def check_image_content(image, where: str, what: str, source: str) -> None:
    """Scalar 2D/3D image without NaN or infinite values, else a UserInputError naming case and file."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UserInputError(f"{where}: {what} {source} has {image.GetNumberOfComponentsPerPixel()} components per "
                             f"voxel; expected a scalar image")
    if image.GetDimension() not in (2, 3):
        raise UserInputError(f"{where}: {what} {source} is {image.GetDimension()}D; expected a 3D (or 2D) image")
    import SimpleITK as sitk

    values = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(values.dtype, np.floating):
        n_nan = int(np.isnan(values).sum())
        if n_nan:
            raise UserInputError(f"{where}: {what} {source} contains {n_nan} NaN voxel(s)")
        n_inf = int(np.isinf(values).sum())
        if n_inf:
            raise UserInputError(f"{where}: {what} {source} contains {n_inf} infinite voxel(s)")


def binary_label(label, where: str, source: str):
    """Check that a label map only holds 0 (background) and 1 (tumor) and return it as uint8."""
    import SimpleITK as sitk

    if label.GetNumberOfComponentsPerPixel() != 1:
        raise UserInputError(f"{where}: segmentation {source} is not a scalar label map")
    values = sitk.GetArrayViewFromImage(label)
    found = np.unique(values)
    unexpected = [v for v in found.tolist() if v not in (0, 1)]
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:10]) + (", ..." if len(unexpected) > 10 else "")
        raise UserInputError(f"{where}: segmentation {source} has label values {shown}; only 0 (background) and "
                             f"1 (tumor) are allowed")
    out = sitk.GetImageFromArray(values.astype(np.uint8))
    out.CopyInformation(label)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# split


def choose_test_groups(groups: Sequence[str], test_fraction: float, seed: int) -> set[str]:
    """Draw ``round(test_fraction * n)`` of the labelled groups for imagesTs, keeping at least one for training.

    The draw depends only on the sorted group names and the seed, so adding an unlabelled case never changes it.
    """
    unique = sorted(set(groups))
    n_test = min(int(round(test_fraction * len(unique))), max(len(unique) - 1, 0))
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[i] for i in order[:n_test]}


# ----------------------------------------------------------------------------------------------------------------------
# writer


def _write(image, path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(image, str(path), True)


def _subtraction(pre, post1):
    """The SUB channel of a case as a SimpleITK image on the grid of ``pre`` (``post1`` is already aligned to it)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(subtraction_image(sitk.GetArrayViewFromImage(pre),
                                                     sitk.GetArrayViewFromImage(post1)))
    image.CopyInformation(pre)
    return image


def _zero_label_like(reference):
    import SimpleITK as sitk

    label = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
    label.CopyInformation(reference)
    return label


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_output_ids(raw_root: Path, dce_id: int, pre_only_id: int, overwrite: bool) -> None:
    """Refuse clashing or already used dataset ids before anything is read or written."""
    for dataset_id in (dce_id, pre_only_id):
        dataset_folder_name(dataset_id, "range_check")
    if dce_id == pre_only_id:
        raise UserInputError("--pre_only_id must differ from -d")
    for dataset_id in (dce_id, pre_only_id):
        clash = existing_dataset_with_id(raw_root, dataset_id)
        if clash is not None and not overwrite:
            raise UserInputError(f"dataset id {dataset_id} already exists at {clash} (pass --overwrite to replace it)")
        if clash is not None:
            check_replaceable(clash, overwrite, what="dataset")


def write_paired_datasets(plans: Sequence[CasePlan], *, raw_root: Path, source: Path, dce_id: int, pre_only_id: int,
                          name: str, n_post: int, test_fraction: float, seed: int, overwrite: bool,
                          resample_to_pre: bool, converter: str, description: str, reference: str, licence: str,
                          extra_json: dict | None = None, inputs: Sequence[Path] = (),
                          progress: Callable[[str], None] | None = None,
                          subtraction: bool = False) -> tuple[Path, Path]:
    """Write the DCE dataset and its pre-contrast-only twin; return their folders.

    Both datasets are written into temporary folders that replace their final names only when every case was read,
    checked and written, so an error leaves no partial dataset behind (an existing dataset with one of the ids is
    replaced only then, and only with ``overwrite``).

    Args:
        plans: the cases, in any order (they are written sorted by case id).
        source: the source folder; recorded in dataset.json and never written to.
        n_post: number of post-contrast channels every case must have.
        test_fraction: fraction of labelled case groups moved to imagesTs/labelsTs (both datasets alike).
        converter: module name recorded in dataset.json.
        extra_json: further dataset.json keys for both datasets.
        inputs: further folders the cases are read from (e.g. masks); like ``source``, never an output.
        subtraction: append the channel ``SUB`` = post1 - pre (float32, raw intensities, on the pre-contrast grid)
            to the DCE dataset; the pre-contrast-only dataset is the same either way.
    """
    raw_root = Path(raw_root)
    name = check_dataset_name(name)
    if not 0.0 <= test_fraction < 1.0:
        raise UserInputError(f"--test_fraction must be in [0, 1), got {test_fraction}")
    if _is_within(raw_root, source):
        raise UserInputError(f"the output folder {raw_root} is inside the source folder {source}; "
                             f"choose another --raw so the source stays untouched")
    check_output_ids(raw_root, dce_id, pre_only_id, overwrite)
    plans = sorted(plans, key=lambda p: p.case_id)
    if not plans:
        raise UserInputError(f"no cases to convert in {source}")
    duplicates = sorted(case for case, count in Counter(p.case_id for p in plans).items() if count > 1)
    if duplicates:
        raise UserInputError(f"case ids occur more than once: {', '.join(duplicates)}")
    labelled = [p for p in plans if p.labelled]
    if not labelled:
        raise UserInputError(f"no case in {source} has a tumour segmentation; the pre-contrast-only dataset needs "
                             f"at least one labelled case")

    test_groups = choose_test_groups([p.group for p in labelled], test_fraction, seed)
    test_ids = sorted(p.case_id for p in labelled if p.group in test_groups)
    unlabeled_ids = sorted(p.case_id for p in plans if not p.labelled)
    pre_name = f"{name}PreOnly"
    dce_folder = raw_root / dataset_folder_name(dce_id, name)
    pre_folder = raw_root / dataset_folder_name(pre_only_id, pre_name)
    clashes = [existing_dataset_with_id(raw_root, i) for i in (dce_id, pre_only_id)]
    channel_names = dce_channel_names(n_post, subtraction)
    resampled: dict[str, list[str]] = {}

    # both datasets in one atomic step: any error removes both, success moves both into place together; an old
    # dataset with one of the ids under another name would shadow the new one in nnU-Net's id lookup, so it is
    # retired (replaced only with --overwrite, and only if nnunet-ext wrote it)
    retire = [c for c in clashes if c is not None and c not in (dce_folder, pre_folder)]
    with atomic_output_dirs([dce_folder, pre_folder], overwrite=overwrite, inputs=[source, *inputs], retire=retire,
                            written_by=f"nnunet-ext convert {converter}") as (dce_tmp, pre_tmp):
        for tmp in (dce_tmp, pre_tmp):
            for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
                (tmp / sub).mkdir()
        for index, plan in enumerate(plans, start=1):
            split = "Ts" if plan.case_id in test_ids else "Tr"
            case = plan.load()
            images, label, masks, changed = _checked_case(case, plan, n_post, resample_to_pre)
            if changed:
                resampled[plan.case_id] = changed
            if subtraction:
                images = images + [_subtraction(images[0], images[1])]
            for folder, mask in masks.items():
                for tmp in (dce_tmp, pre_tmp) if plan.labelled else (dce_tmp,):
                    (tmp / folder).mkdir(exist_ok=True)
                    _write(mask, tmp / folder / f"{plan.case_id}{FILE_ENDING}")
            for channel, image in enumerate(images):
                _write(image, dce_tmp / f"images{split}" / f"{plan.case_id}_{channel:04d}{FILE_ENDING}")
            _write(label if label is not None else _zero_label_like(images[0]),
                   dce_tmp / f"labels{split}" / f"{plan.case_id}{FILE_ENDING}")
            if plan.labelled:
                _write(images[0], pre_tmp / f"images{split}" / f"{plan.case_id}_0000{FILE_ENDING}")
                _write(label, pre_tmp / f"labels{split}" / f"{plan.case_id}{FILE_ENDING}")
            if progress is not None:
                progress(f"[{index}/{len(plans)}] {plan.case_id} -> images{split}"
                         f"{'' if plan.labelled else ' (unlabelled)'}")

        conversion = {
            "converter": converter,
            "source": str(Path(source).resolve()),
            "test_fraction": test_fraction,
            "seed": seed,
            "resample_to_pre": resample_to_pre,
            "resampled_to_pre": resampled,
            "cases": {p.case_id: p.provenance for p in plans},
        }
        # the SUB channel is the DCE dataset's alone: the pre-contrast-only record stays as without it
        dce_conversion = {**conversion, "subtraction": "SUB = post1 - pre, float32, raw intensities on the "
                                                       "pre-contrast grid"} if subtraction else conversion
        common = {"labels": LABELS, "file_ending": FILE_ENDING, "description": description, "reference": reference,
                  "licence": licence, "test_cases": test_ids, **(extra_json or {})}
        dce_json = {"channel_names": channel_names, "numTraining": len(plans) - len(test_ids), "name": name,
                    **common, "pre_only_dataset": pre_folder.name, "unlabeled_cases": unlabeled_ids,
                    "conversion": dce_conversion}
        pre_json = {"channel_names": {"0": channel_names["0"]}, "numTraining": len(labelled) - len(test_ids),
                    "name": pre_name, **common, "paired_dce_dataset": dce_folder.name,
                    "conversion": {**conversion, "cases": {p.case_id: p.provenance for p in labelled},
                                   "channels": [0]}}
        (dce_tmp / "dataset.json").write_text(json.dumps(dce_json, indent=2))
        (pre_tmp / "dataset.json").write_text(json.dumps(pre_json, indent=2))
    return dce_folder, pre_folder


def _checked_case(case: LoadedCase, plan: CasePlan, n_post: int, resample: bool):
    """Validate one loaded case and put every channel and the label on the pre-contrast grid."""
    where = plan.where
    if len(case.images) != n_post + 1:
        raise UserInputError(f"{where}: expected pre + {n_post} post-contrast images, got {len(case.images)} images")
    if plan.labelled != (case.label is not None):
        raise UserInputError(f"{where}: the segmentation found while scanning could not be loaded")
    names = list(dce_channel_names(n_post).values())
    for image, source, what in zip(case.images, case.image_sources, names):
        check_image_content(image, where, f"{what} image", source)
    reference = case.images[0]
    aligned = [reference]
    changed = list(case.resampled)
    masks = {}
    for folder, mask in case.masks.items():
        masks[folder], was_resampled = align_to_reference(mask.image, reference, is_label=True, resample=resample,
                                                          where=where, what=mask.what, source=mask.source)
        if was_resampled:
            changed.append(folder)
    for image, source, what in zip(case.images[1:], case.image_sources[1:], names[1:]):
        image, was_resampled = align_to_reference(image, reference, is_label=False, resample=resample, where=where,
                                                  what=f"{what} image", source=source)
        aligned.append(image)
        if was_resampled:
            changed.append(what)
    label = None
    if case.label is not None:
        label = binary_label(case.label, where, case.label_source)
        label, was_resampled = align_to_reference(label, reference, is_label=True, resample=resample, where=where,
                                                  what="segmentation", source=case.label_source)
        if was_resampled:
            changed.append("seg")
    return aligned, label, masks, changed


# ----------------------------------------------------------------------------------------------------------------------
# command line


def add_common_arguments(parser: argparse.ArgumentParser, default_name: str) -> None:
    """Options shared by the DCE converters (nnU-Net vocabulary: ``-i`` source, ``-d`` dataset id)."""
    parser.add_argument("-i", dest="input", required=True, help="source folder (read only, never modified)")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True,
                        help="nnU-Net dataset id (1..999) of the DCE dataset (channels pre, post1, ...)")
    parser.add_argument("--pre_only_id", type=int, required=True,
                        help="dataset id of the pre-contrast-only twin (channel 0, labelled cases only)")
    parser.add_argument("--name", default=default_name,
                        help=f"dataset name (default {default_name}); the twin is named NAME + 'PreOnly'")
    parser.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing datasets with these ids")
    parser.add_argument("--test_fraction", type=float, default=0.3,
                        help="fraction of labelled cases put in imagesTs/labelsTs (default 0.3, the 70/30 split "
                             "of DKM Sec. 3); unlabelled cases always stay in imagesTr")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test draw")
    parser.add_argument("--resample_to_pre", action="store_true",
                        help="resample post-contrast images (linear) and segmentations (nearest) that are not on "
                             "the pre-contrast grid instead of stopping with an error")
    parser.add_argument("--subtraction", action="store_true",
                        help="append a channel SUB = post1 - pre (float32, from the raw intensities) to the DCE "
                             "dataset; the pre-contrast-only dataset is unchanged")
