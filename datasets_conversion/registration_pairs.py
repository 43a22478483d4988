"""Convert a folder of 3D images (and labels) with registration pairs or an atlas into an nnU-Net raw dataset.

Source layout (flat folders; hidden files, sub-folders and files of other formats are skipped)::

    SRC/images/NAME.nii.gz   a 3D scalar image: .nii.gz, .nii, .mha, .mhd, .nrrd or .nhdr (anything SimpleITK reads
                             under those suffixes)
    SRC/labels/NAME.nii.gz   its label map, same NAME, any of those formats: integers 0..K (0 = background).
                             Optional per image (an image without one gets an all-background placeholder and is
                             listed under ``unlabeled_cases``) unless ``--require_labels``; the folder itself may be
                             absent then
    SRC/pairs.csv            optional: one registration pair per row, header ``fixed,moving`` (more columns are
                             ignored), values are image NAMEs (a file name with its suffix works too)

Instead of ``pairs.csv``, ``--atlas NAME`` pairs every other image with that atlas: the atlas is the *moving* image
and each other image the *fixed* one (atlas-to-subject registration, the direction that carries the atlas labels onto
each subject). With neither, the dataset holds no pairs (``registration_pairs`` is empty: any two cases may be
paired). Both at once is an error.

The output is one nnU-Net raw dataset: imagesTr/ID_0000.nii.gz and labelsTr/ID.nii.gz for every image (ID = NAME with
characters other than letters, digits, ``_`` and ``-`` replaced by ``_``), channel 0 named by ``--channel_name``
(default ``image``: nnU-Net z-scores it; ``CT`` selects its CT normalisation), and dataset.json with

* ``registration_pairs``: ``[{"fixed": ID, "moving": ID}, ...]`` in file order (``atlas`` names the atlas case);
* ``labels``: ``background`` 0 and ``label_1``..``label_K``;
* ``unlabeled_cases`` (placeholder labels) and ``case_groups`` (a resampled copy belongs to its source image).

Checks, each one line naming the files (the source is only read; nothing is written unless every check passes):

* a pair or ``--atlas`` naming an image that is not in images/, a pair of an image with itself;
* the two images of a pair on different voxel grids (size, or spacing beyond 0.01 mm): the message gives both
  files' sizes and spacings. With ``--resample`` the moving image (linear) and its label (nearest neighbour) are
  resampled onto the fixed image's grid instead, in world coordinates (identity transform: SimpleITK's
  ``ResampleImageFilter``); the result is an extra case ``MOVING_on_FIXED`` that the pair names as its moving image,
  recorded in ``conversion.resampled`` with the share of the fixed grid the moving image covers (no overlap at all
  is an error). Origins and directions may differ between the images of a pair (inter-subject data);
* a label on another grid than its image (size, spacing, origin, direction), a label without an image;
* unreadable, truncated or non-3D files, NaN voxels;
* label values that are not integers, negative values, and label values that are not consecutive 0..K over the
  whole dataset (e.g. FreeSurfer ids): an error that suggests ``--remap_labels``, which numbers the sorted distinct
  values 0..K instead (0 stays 0) and keeps the mapping in dataset.json ``label_ids`` (output value -> source value;
  the labels are then named ``label_<source value>``).

Example::

    nnunet-ext convert registration_pairs -i MYREG -d 441 --atlas atlas01 --remap_labels --raw $nnUNet_raw
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import numpy as np

from nnunet_ext.errors import UserInputError

CONVERTER = "datasets_conversion.registration_pairs"
DEFAULT_NAME = "RegistrationPairs"
DEFAULT_CHANNEL = "image"
FILE_ENDING = ".nii.gz"
SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
IMAGES, LABELS, PAIRS = "images", "labels", "pairs.csv"
SPACING_TOLERANCE_MM = 0.01
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


# ----------------------------------------------------------------------------------------------------------------------
# names


def split_suffix(name: str) -> tuple[str, str] | None:
    """``("sub1", ".nii.gz")`` for ``sub1.nii.gz`` (suffix in any letter case); None for other formats."""
    lower = name.lower()
    for suffix in SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)], suffix
    return None


def volume_files(folder: Path) -> dict[str, Path]:
    """``{NAME: file}`` of the volumes directly in ``folder``; one NAME in two formats is an error."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        parts = split_suffix(path.name)
        if path.name.startswith(".") or not path.is_file() or parts is None:
            continue
        if parts[0] in files:
            raise UserInputError(f"{folder} holds {parts[0]} twice ({files[parts[0]].name} and {path.name}); keep one")
        files[parts[0]] = path
    return files


def case_ids(names, folder: Path) -> dict[str, str]:
    """``{NAME: case id}``: unsafe characters replaced by ``_``; two NAMEs becoming one id is an error."""
    ids: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name in names:
        identifier = _UNSAFE.sub("_", name)
        if identifier in owner:
            raise UserInputError(f"{owner[identifier]} and {name} in {folder} both become case id {identifier}; "
                                 f"rename one")
        owner[identifier] = name
        ids[name] = identifier
    return ids


def resolve_name(value: str, images: dict[str, Path]) -> str:
    """The image NAME that a pairs.csv value or ``--atlas`` refers to (a NAME, or a file name with its suffix)."""
    base = value.strip().replace("\\", "/").rsplit("/", 1)[-1]
    parts = split_suffix(base)
    return parts[0] if parts is not None and base not in images else base


def _missing_image(value: str, images_folder: Path, images: dict[str, Path]) -> str:
    known = ", ".join(sorted(images)[:5]) + (", ..." if len(images) > 5 else "")
    return f"'{value}' is not an image in {images_folder} (images: {known or 'none'})"


# ----------------------------------------------------------------------------------------------------------------------
# the source: files and pairs (names only)


def read_pairs_csv(path: Path, images: dict[str, Path], images_folder: Path) -> list[dict]:
    """``[{"fixed": NAME, "moving": NAME, "where": "pairs.csv line N"}]``; unknown images, self pairs, a missing
    column or no rows are errors (a repeated pair is kept once)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserInputError(f"cannot read {path}: {exc}") from None
    header = [column.strip().lower() for column in rows[0]] if rows else []
    if "fixed" not in header or "moving" not in header:
        raise UserInputError(f"{path} needs a header with the columns fixed and moving (found: "
                             f"{', '.join(header) or 'nothing'})")
    columns = {role: header.index(role) for role in ("fixed", "moving")}
    pairs: list[dict] = []
    seen = set()
    for number, row in enumerate(rows[1:], start=2):
        if not "".join(row).strip():
            continue
        where = f"{path} line {number}"
        if len(row) <= max(columns.values()):
            raise UserInputError(f"{where}: expected a fixed and a moving value, got {len(row)} column(s)")
        pair = {"where": where}
        for role, column in columns.items():
            value = row[column].strip()
            if not value:
                raise UserInputError(f"{where}: empty {role} value")
            name = resolve_name(value, images)
            if name not in images:
                raise UserInputError(f"{where}: {role} image {_missing_image(value, images_folder, images)}")
            pair[role] = name
        if pair["fixed"] == pair["moving"]:
            raise UserInputError(f"{where}: pairs {pair['fixed']} with itself")
        if (pair["fixed"], pair["moving"]) not in seen:
            seen.add((pair["fixed"], pair["moving"]))
            pairs.append(pair)
    if not pairs:
        raise UserInputError(f"{path} lists no pairs (one row per pair: fixed,moving)")
    return pairs


def plan_source(source: Path, atlas: str | None = None, require_labels: bool = False) -> dict:
    """Scan the source (names only): ``{"images", "labels", "ids", "pairs", "pairs_from", "atlas"}``."""
    if not source.is_dir():
        raise UserInputError(f"source folder {source} does not exist or is not a folder")
    images_folder, labels_folder = source / IMAGES, source / LABELS
    if not images_folder.is_dir():
        raise UserInputError(f"no {IMAGES}/ folder in {source} (layout: {IMAGES}/NAME.nii.gz, optional "
                             f"{LABELS}/NAME.nii.gz and {PAIRS})")
    images = volume_files(images_folder)
    if not images:
        raise UserInputError(f"no images in {images_folder} (formats read: {', '.join(s[1:] for s in SUFFIXES)})")
    labels = volume_files(labels_folder) if labels_folder.is_dir() else {}
    for name, path in labels.items():
        if name not in images:
            raise UserInputError(f"label without image: {path} (no {name}.* in {images_folder})")
    if require_labels:
        for name, path in images.items():
            if name not in labels:
                raise UserInputError(f"image without label: {path} (no {name}.* in {labels_folder}; "
                                     f"--require_labels)")
    ids = case_ids(images, images_folder)
    csv_path = source / PAIRS
    if atlas is not None and csv_path.is_file():
        raise UserInputError(f"{source} holds {PAIRS} and --atlas {atlas} was given; use one of them")
    pairs: list[dict] = []
    pairs_from = None
    if atlas is not None:
        name = resolve_name(atlas, images)
        if name not in images:
            raise UserInputError(f"--atlas {_missing_image(atlas, images_folder, images)}")
        atlas = name
        pairs = [{"fixed": other, "moving": atlas, "where": f"--atlas {atlas}"} for other in images if other != atlas]
        if not pairs:
            raise UserInputError(f"--atlas {atlas}: {images_folder} holds no other image to pair it with")
        pairs_from = f"--atlas {atlas}"
    elif csv_path.is_file():
        pairs = read_pairs_csv(csv_path, images, images_folder)
        pairs_from = PAIRS
    return {"images": images, "labels": labels, "ids": ids, "pairs": pairs, "pairs_from": pairs_from,
            "atlas": atlas, "images_folder": images_folder, "labels_folder": labels_folder}


# ----------------------------------------------------------------------------------------------------------------------
# volumes: reading and checking (shared with oasis_learn2reg)


def size_text(size) -> str:
    """``"12x10x8"``: a SimpleITK size (x, y, z)."""
    return "x".join(str(int(n)) for n in size)


def spacing_text(spacing) -> str:
    """``"1 x 1 x 2 mm"``: a SimpleITK spacing (x, y, z)."""
    return " x ".join(f"{float(s):g}" for s in spacing) + " mm"


def read_header(path: Path, what: str) -> dict:
    """``{"size", "spacing"}`` of an image file, from its header only."""
    import SimpleITK as sitk

    from nnunet_ext.imageio import sitk_error_reason

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise UserInputError(f"cannot read {what} {path}: {sitk_error_reason(exc)}") from None
    _check_3d_scalar(reader.GetDimension(), reader.GetNumberOfComponents(), path, what)
    return {"size": tuple(reader.GetSize()), "spacing": tuple(reader.GetSpacing())}


def _check_3d_scalar(dimension: int, components: int, path: Path, what: str) -> None:
    if dimension != 3 or components != 1:
        raise UserInputError(f"{what} {path} is a {dimension}D image with {components} component(s) per voxel; "
                             f"expected a 3D scalar volume")


def same_grid(first: dict, second: dict) -> bool:
    """Same size and (within :data:`SPACING_TOLERANCE_MM`) the same spacing."""
    return (tuple(first["size"]) == tuple(second["size"])
            and np.allclose(first["spacing"], second["spacing"], rtol=0, atol=SPACING_TOLERANCE_MM))


def read_volume(path: Path, what: str = "image"):
    """A 3D scalar SimpleITK image without NaN; anything else (unreadable, truncated, 2D, vector) is a one-line
    UserInputError naming ``what`` and the file."""
    import SimpleITK as sitk

    from nnunet_ext.imageio import nifti_nan_count
    from nnunet_ext.imageio import read_sitk_image

    image = read_sitk_image(path, what)
    _check_3d_scalar(image.GetDimension(), image.GetNumberOfComponentsPerPixel(), path, what)
    if path.name.lower().endswith((".nii", ".nii.gz")):  # SimpleITK's NIfTI reader turns NaN into 0
        nan = nifti_nan_count(path)
    else:
        values = sitk.GetArrayViewFromImage(image)
        nan = int(np.isnan(values).sum()) if np.issubdtype(values.dtype, np.floating) else 0
    if nan:
        raise UserInputError(f"{what} {path} contains {nan} NaN voxel(s)")
    return image


def label_on_grid(label, path: Path, image, image_path: Path, what: str = "label"):
    """``label`` with its image's header copied, after checking that it lies on the image's grid (within the DCE
    converters' tolerances); otherwise a UserInputError naming both files."""
    from nnunet_ext.geometry import geometry_mismatch

    reason = geometry_mismatch(image, label)
    if reason is not None:
        raise UserInputError(f"{what} {path} is not on the grid of its image {image_path.name} ({reason}: label "
                             f"{size_text(label.GetSize())} at {spacing_text(label.GetSpacing())}, image "
                             f"{size_text(image.GetSize())} at {spacing_text(image.GetSpacing())})")
    label.CopyInformation(image)  # identical headers for nnU-Net's exact geometry check
    return label


def integer_values(label, path: Path, what: str = "label") -> np.ndarray:
    """The label map's voxels as int64, after checking that they are integers >= 0 (else a UserInputError)."""
    import SimpleITK as sitk

    values = sitk.GetArrayViewFromImage(label)
    if np.issubdtype(values.dtype, np.floating):
        fractional = values[np.mod(values, 1) != 0]
        if fractional.size:
            shown = np.unique(fractional)
            raise UserInputError(f"{what} {path} has non-integer values ({', '.join(f'{v:g}' for v in shown[:3])}"
                                 f"{', ...' if len(shown) > 3 else ''}); labels are integers 0..K")
    values = values.astype(np.int64)
    if values.size and values.min() < 0:
        negative = np.unique(values[values < 0])
        raise UserInputError(f"{what} {path} has negative values ({', '.join(map(str, negative[:3].tolist()))}"
                             f"{', ...' if len(negative) > 3 else ''}); labels are integers 0..K")
    return values


def label_image(values: np.ndarray, reference):
    """A label SimpleITK image of ``values`` (uint8 when they fit, else uint16 or uint32) with ``reference``'s
    header."""
    import SimpleITK as sitk

    top = int(values.max()) if values.size else 0
    dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32
    image = sitk.GetImageFromArray(values.astype(dtype))
    image.CopyInformation(reference)
    return image


def resample_onto(moving, fixed, is_label: bool):
    """``moving`` on ``fixed``'s voxel grid (world coordinates, identity transform): linear interpolation to float32
    for images, nearest neighbour (pixel type kept) for labels; outside the moving image is 0."""
    import SimpleITK as sitk

    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(fixed)
    resampler.SetTransform(sitk.Transform())
    resampler.SetDefaultPixelValue(0)
    resampler.SetInterpolator(sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear)
    resampler.SetOutputPixelType(moving.GetPixelID() if is_label else sitk.sitkFloat32)
    return resampler.Execute(moving)


def coverage(moving, fixed) -> float:
    """Share of the fixed grid's voxels that fall inside the moving image (world coordinates)."""
    import SimpleITK as sitk

    inside = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    inside.CopyInformation(moving)
    covered = resample_onto(inside, fixed, is_label=True)  # kept: an array view does not keep its image alive
    return float(sitk.GetArrayFromImage(covered).mean())


# ----------------------------------------------------------------------------------------------------------------------
# the dataset


def _check_pair_grids(plan: dict, resample: bool) -> list[dict]:
    """The pairs whose images lie on different grids (an error unless ``resample``), read from the headers."""
    headers: dict[str, dict] = {}

    def header(name: str) -> dict:
        if name not in headers:
            headers[name] = read_header(plan["images"][name], "image")
        return headers[name]

    different = []
    for pair in plan["pairs"]:
        fixed, moving = header(pair["fixed"]), header(pair["moving"])
        if same_grid(fixed, moving):
            continue
        if not resample:
            raise UserInputError(
                f"{pair['where']}: fixed image {plan['images'][pair['fixed']].name} is "
                f"{size_text(fixed['size'])} at {spacing_text(fixed['spacing'])} but moving image "
                f"{plan['images'][pair['moving']].name} is {size_text(moving['size'])} at "
                f"{spacing_text(moving['spacing'])}; a pair must share one voxel grid (pass --resample to resample the "
                f"moving image onto the fixed grid)")
        different.append(pair)
    return different


def _consecutive_mapping(first_seen: dict[int, str], remap: bool) -> dict[int, int] | None:
    """``{source value: output value}`` when ``remap``; None when the values are 0..K already; else an error."""
    values = sorted(set(first_seen) | {0})
    if values == list(range(len(values))):
        return None
    if remap:
        return {value: index for index, value in enumerate(values)}
    gaps = sorted(set(range(values[-1] + 1)) - set(values))
    beyond = next(v for v in values if v >= gaps[0])
    shown = ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
    missing = ", ".join(map(str, gaps[:5])) + (", ..." if len(gaps) > 5 else "")
    raise UserInputError(f"label values are not consecutive 0..K: the labels hold {shown} ({missing} missing; "
                         f"{beyond} first seen in {first_seen[beyond]}); pass --remap_labels to number them "
                         f"0..{len(values) - 1} (the mapping is kept in dataset.json label_ids)")


def convert(source: str | Path, dataset_id: int, name: str = DEFAULT_NAME, raw: str | None = None,
            overwrite: bool = False, atlas: str | None = None, require_labels: bool = False, resample: bool = False,
            remap_labels: bool = False, channel_name: str = DEFAULT_CHANNEL, progress=None) -> Path:
    """Python API behind the CLI: write the dataset and return its folder."""
    import SimpleITK as sitk

    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.datasets_conversion._common import raw_dataset_target

    source = Path(source)
    if not str(channel_name or "").strip():
        raise UserInputError("--channel_name must not be empty")
    folder, retire = raw_dataset_target(raw, dataset_id, name, overwrite)
    plan = plan_source(source, atlas, require_labels)
    to_resample = _check_pair_grids(plan, resample)
    images, labels, ids = plan["images"], plan["labels"], plan["ids"]
    with atomic_output_dir(folder, overwrite=overwrite, inputs=[source], retire=retire,
                           written_by=f"nnunet-ext convert {CONVERTER}") as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()

        def image_out(case: str) -> Path:
            return tmp / "imagesTr" / f"{case}_0000{FILE_ENDING}"

        def label_out(case: str) -> Path:
            return tmp / "labelsTr" / f"{case}{FILE_ENDING}"

        first_seen: dict[int, str] = {}  # label value -> the file it was first found in
        unlabeled = []
        for index, stem in enumerate(images, start=1):
            image = read_volume(images[stem], "image")
            sitk.WriteImage(image, str(image_out(ids[stem])), True)
            if stem in labels:
                label = label_on_grid(read_volume(labels[stem], "label"), labels[stem], image, images[stem])
                values = integer_values(label, labels[stem])
                for value in np.unique(values).tolist():
                    first_seen.setdefault(value, str(labels[stem]))
                sitk.WriteImage(label_image(values, image), str(label_out(ids[stem])), True)
            else:
                unlabeled.append(ids[stem])
                sitk.WriteImage(label_image(np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8), image),
                                str(label_out(ids[stem])), True)
            if progress is not None:
                progress(f"[{index}/{len(images)}] {images[stem].name} -> {ids[stem]}"
                         f"{'' if stem in labels else ' (no label: placeholder)'}")

        mapping = _consecutive_mapping(first_seen, remap_labels)
        if mapping is not None:
            lookup = np.array(sorted(mapping), dtype=np.int64)
            for stem in labels:
                written = sitk.ReadImage(str(label_out(ids[stem])))
                values = np.searchsorted(lookup, sitk.GetArrayViewFromImage(written).astype(np.int64))
                sitk.WriteImage(label_image(values, written), str(label_out(ids[stem])), True)
        top = max(mapping.values()) if mapping else max(first_seen, default=0)
        source_value = {new: old for old, new in mapping.items()} if mapping else {v: v for v in range(top + 1)}
        label_names = {"background": 0, **{f"label_{source_value[v]}": v for v in range(1, top + 1)}}

        groups = {ids[stem]: ids[stem] for stem in images}
        pairs = [{"fixed": ids[p["fixed"]], "moving": ids[p["moving"]]} for p in plan["pairs"]]
        resampled = []
        for pair in to_resample:
            fixed_id, moving_id = ids[pair["fixed"]], ids[pair["moving"]]
            case = f"{moving_id}_on_{fixed_id}"
            if case in groups and groups[case] != moving_id:
                raise UserInputError(f"the resampled copy of {moving_id} onto {fixed_id} would be case {case}, which "
                                     f"is already an image in {plan['images_folder']}; rename one")
            if case not in groups:
                fixed = sitk.ReadImage(str(image_out(fixed_id)))
                moving = sitk.ReadImage(str(image_out(moving_id)))
                share = coverage(moving, fixed)
                if share == 0:
                    raise UserInputError(
                        f"{pair['where']}: --resample cannot put moving image {images[pair['moving']].name} onto the "
                        f"grid of fixed image {images[pair['fixed']].name}: they do not overlap in world coordinates "
                        f"(origins {tuple(round(o, 3) for o in moving.GetOrigin())} and "
                        f"{tuple(round(o, 3) for o in fixed.GetOrigin())})")
                sitk.WriteImage(resample_onto(moving, fixed, is_label=False), str(image_out(case)), True)
                moving_label = sitk.ReadImage(str(label_out(moving_id)))
                warped = resample_onto(moving_label, fixed, is_label=True)
                warped.CopyInformation(fixed)
                sitk.WriteImage(warped, str(label_out(case)), True)
                groups[case] = moving_id
                if moving_id in unlabeled:
                    unlabeled.append(case)
                resampled.append({"case": case, "moving": moving_id, "fixed": fixed_id,
                                  "moving_size": size_text(moving.GetSize()),
                                  "moving_spacing_mm": list(moving.GetSpacing()),
                                  "fixed_size": size_text(fixed.GetSize()),
                                  "fixed_spacing_mm": list(fixed.GetSpacing()), "coverage": round(share, 4)})
                if progress is not None:
                    progress(f"resampled {moving_id} onto the grid of {fixed_id} -> {case}")
            for entry in pairs:
                if entry == {"fixed": fixed_id, "moving": moving_id}:
                    entry["moving"] = case

        dataset = {
            "channel_names": {"0": channel_name}, "labels": label_names, "numTraining": len(groups),
            "file_ending": FILE_ENDING, "name": name,
            "description": f"registration images of {source.name} ({len(images)} images, {len(pairs)} pairs from "
                           f"{plan['pairs_from'] or 'nowhere: unpaired'})",
            "reference": "see the source of the images", "licence": "see the source of the images",
            "registration_pairs": pairs,
            "registration_pairs_note": "case ids; the moving image is registered onto (warped to) the fixed image",
            "unlabeled_cases": unlabeled,
            "unlabeled_cases_note": "labelsTr files of these cases are all-background placeholders (nnU-Net needs one "
                                    "per case); do not train or evaluate label overlap on them",
            "case_groups": groups,
            "conversion": {"converter": CONVERTER, "source": str(source.resolve()), "pairs_from": plan["pairs_from"],
                           "resample": resample, "resampled": resampled, "remap_labels": remap_labels,
                           "require_labels": require_labels,
                           "cases": {ids[stem]: images[stem].name for stem in images}},
        }
        if plan["atlas"] is not None:
            dataset["atlas"] = ids[plan["atlas"]]
        if mapping is not None:
            dataset["label_ids"] = {str(new): old for old, new in mapping.items()}
            dataset["label_ids_note"] = "output label value -> label value in the source files (--remap_labels)"
        (tmp / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", dest="input", required=True,
                        help=f"folder holding {IMAGES}/ (and {LABELS}/, {PAIRS}); read only, never modified")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1..999)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"dataset name (default {DEFAULT_NAME})")
    parser.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--atlas", default=None, metavar="NAME",
                        help=f"pair every other image with this one, the atlas as the moving image (instead of "
                             f"{PAIRS})")
    parser.add_argument("--require_labels", action="store_true",
                        help="every image must have a label (default: placeholders for images without one)")
    parser.add_argument("--resample", action="store_true",
                        help="resample the moving image (linear) and label (nearest) of a pair onto the fixed grid "
                             "when the grids differ (default: an error)")
    parser.add_argument("--remap_labels", action="store_true",
                        help="number the distinct label values 0..K (mapping kept in dataset.json label_ids)")
    parser.add_argument("--channel_name", default=DEFAULT_CHANNEL,
                        help=f"nnU-Net channel name (normalisation key; default {DEFAULT_CHANNEL}, 'CT' for CT)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def run(args: argparse.Namespace) -> int:
    folder = convert(args.input, args.dataset_id, name=args.name, raw=args.raw, overwrite=args.overwrite,
                     atlas=args.atlas, require_labels=args.require_labels, resample=args.resample,
                     remap_labels=args.remap_labels, channel_name=args.channel_name, progress=print)
    print(f"wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.datasets_conversion._common import cli_main

    return cli_main(f"python -m {CONVERTER}", __doc__.splitlines()[0], configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
