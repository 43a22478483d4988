"""Convert a folder of 2D images and a folder of same-name masks into an nnU-Net raw dataset (2D, any labels).

Source layout (flat folders; sub-folders, hidden files and files of other formats are skipped)::

    IMAGES/NAME.png     an image: PNG, JPG/JPEG, TIF/TIFF or BMP (read with PIL), or .nii.gz, .nii, .mha, .nrrd
                        (read with SimpleITK, keeping their spacing)
    MASKS/NAME.png      its mask, same NAME, any of those formats: 0 = background, else a value of --labels
    TEST/NAME.png       optional (--test_images): images without masks -> imagesTs

Every image needs a mask and every mask an image. PIL images are converted to 8-bit grayscale ('L') unless they are
single-channel already (16-bit or float TIFs keep their values); a mask keeps its values ('P' palette masks their
indices) unless it is a colour image, converted to 'L'. A SimpleITK file must hold one 2D slice with one component
and no NaN. PIL formats carry no pixel size: ``--spacing`` gives it (mm, default 1.0).

``--labels NAME=VALUE ...`` names the mask values (default ``foreground=1``). nnU-Net wants labels 0, 1, 2, ..., so
the listed values are numbered 1..N in increasing order (``--labels tumour=128 organ=255`` -> tumour 1, organ 2; the
values are kept in dataset.json, ``conversion.mask_values``); any other mask value is an error naming the file and
the value. ``--binary`` maps every nonzero value to the single label instead (0/255 masks).

Case ids are the file names without their format suffix, characters other than letters, digits, ``_`` and ``-``
replaced by ``_``; two names becoming one id is an error. Source files are only read.

Example::

    nnunet-ext convert image_folder_2d -i images -m masks -d 430 --labels lesion=255 --spacing 0.1
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nnunet_ext.datasets_conversion._2d_common import read_sitk_2d, shape_text, spacing_text
from nnunet_ext.datasets_conversion._common import raw_dataset_target
from nnunet_ext.errors import UserInputError

CONVERTER = "datasets_conversion.image_folder_2d"
DEFAULT_NAME = "ImageFolder2D"
FILE_ENDING = ".nii.gz"
DEFAULT_LABELS = ("foreground=1",)
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SITK_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
# PIL modes already holding one intensity per pixel: converting them to 'L' would clip 16-bit and float data
_GRAY_MODES = ("L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
# PIL modes whose values are label values as stored ('1' is boolean, 'P' holds palette indices)
_LABEL_MODES = ("1", "P", "L", "I", "I;16", "I;16L", "I;16B", "I;16N")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_LABEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


def split_suffix(name: str) -> tuple[str, str] | None:
    """``("case_1", ".nii.gz")`` for ``case_1.nii.gz`` (any letter case); None for a format not read here."""
    lower = name.lower()
    for suffix in SITK_SUFFIXES + PIL_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)], suffix
    return None


def parse_labels(items: Sequence[str] | Mapping[str, int]) -> dict[str, int]:
    """``{name: mask value}`` from ``NAME=VALUE`` strings (or a mapping): names unique and not ``background``,
    values distinct integers >= 1."""
    if isinstance(items, Mapping):
        items = [f"{name}={value}" for name, value in items.items()]
    elif isinstance(items, str):
        items = [items]
    labels: dict[str, int] = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserInputError(f"--labels expects NAME=VALUE, got '{item}'")
        if not _LABEL_NAME.match(name) or name == "background":
            raise UserInputError(f"--labels {item}: a label name starts with a letter and holds letters, digits, "
                                 f"'_', '.' or '-' (and 'background' is value 0)")
        try:
            number = int(value)
        except ValueError:
            raise UserInputError(f"--labels {item}: the value must be an integer mask value, got '{value}'") from None
        if number < 1:
            raise UserInputError(f"--labels {item}: the value must be >= 1 (0 is the background)")
        if name in labels:
            raise UserInputError(f"--labels names {name} twice")
        if number in labels.values():
            raise UserInputError(f"--labels gives the value {number} to two labels")
        labels[name] = number
    if not labels:
        raise UserInputError("--labels needs at least one NAME=VALUE")
    return labels


def check_spacing(spacing: float) -> float:
    try:
        value = float(spacing)
    except (TypeError, ValueError):
        raise UserInputError(f"--spacing must be a number (mm), got {spacing!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise UserInputError(f"--spacing must be a positive pixel size in mm, got {spacing!r}")
    return value


def list_folder(folder: Path, flag: str) -> tuple[dict[str, Path], list[str]]:
    """``({stem: file}, skipped names)`` of the readable-format files directly in ``folder``."""
    if not folder.is_dir():
        raise UserInputError(f"{flag} folder {folder} does not exist or is not a folder")
    files: dict[str, Path] = {}
    skipped = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():  # .DS_Store and the like, sub-folders
            continue
        parts = split_suffix(path.name)
        if parts is None:
            skipped.append(path.name)
            continue
        if parts[0] in files:
            raise UserInputError(f"{folder} has two files named {parts[0]}: {files[parts[0]].name} and {path.name}")
        files[parts[0]] = path
    if not files:
        formats = ", ".join(s.lstrip(".") for s in PIL_SUFFIXES + SITK_SUFFIXES)
        raise UserInputError(f"no images in {flag} folder {folder} (formats read: {formats})")
    return files, skipped


def case_ids(files: Mapping[str, Path], folder: Path) -> dict[str, str]:
    """``{stem: case id}``: the stem with every character other than ``[A-Za-z0-9_-]`` replaced by ``_``."""
    ids: dict[str, str] = {}
    owner: dict[str, Path] = {}
    for stem, path in files.items():
        identifier = _UNSAFE.sub("_", stem)
        if identifier in owner:
            raise UserInputError(f"{owner[identifier].name} and {path.name} in {folder} both become case id "
                                 f"{identifier} (only letters, digits, '_' and '-' are kept); rename one")
        owner[identifier] = path
        ids[stem] = identifier
    return ids


def plan_cases(images: Path, masks: Path, test_images: Path | None = None) -> tuple[list[dict], list[str]]:
    """Pair images with masks by name (reading names only); returns one record per image and the skipped files."""
    image_files, skipped_images = list_folder(images, "-i")
    if masks.resolve() == images.resolve():
        raise UserInputError(f"-m {masks} is the -i folder: masks need a folder of their own")
    mask_files, skipped_masks = list_folder(masks, "-m")
    for stem, path in image_files.items():
        if stem not in mask_files:
            other = [name for name in skipped_masks if name.startswith(f"{stem}.")]
            hint = f"; {other[0]} is not a format read here" if other else ""
            raise UserInputError(f"image without mask: {path} (no {stem}.* in {masks}{hint})")
    for stem, path in mask_files.items():
        if stem not in image_files:
            raise UserInputError(f"mask without image: {path} (no {stem}.* in {images})")
    ids = case_ids(image_files, images)
    cases = [{"id": ids[stem], "image": path, "mask": mask_files[stem], "split": "Tr"}
             for stem, path in image_files.items()]
    skipped = [str(images / n) for n in skipped_images] + [str(masks / n) for n in skipped_masks]
    if test_images is not None:
        if test_images.resolve() in (images.resolve(), masks.resolve()):
            raise UserInputError(f"--test_images {test_images} is the -i or -m folder; give the test images a folder "
                                 f"of their own")
        test_files, skipped_test = list_folder(test_images, "--test_images")
        test_ids = case_ids(test_files, test_images)
        cases += [{"id": test_ids[stem], "image": path, "mask": None, "split": "Ts"}
                  for stem, path in test_files.items()]
        skipped += [str(test_images / n) for n in skipped_test]
    return cases, skipped


def read_pil(path: Path, what: str) -> np.ndarray:
    """A PIL-format file as a 2D array: images as grayscale, masks with their stored values (see the module doc)."""
    from PIL import Image, UnidentifiedImageError

    keep = _LABEL_MODES if what == "mask" else _GRAY_MODES
    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                raise UserInputError(f"{what} {path} has {frames} frames; expected one 2D image")
            array = np.asarray(image if image.mode in keep else image.convert("L"))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).replace(f" '{path}'", "") or type(exc).__name__  # PIL quotes the path we name already
        raise UserInputError(f"cannot read {what} {path}: {reason}") from None
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise UserInputError(f"{what} {path} contains {int(np.isnan(array).sum())} NaN pixel(s)")
    return array


def read_2d(path: Path, what: str, spacing: float) -> tuple[np.ndarray, tuple[float, float], bool]:
    """``(array, spacing (y, x), whether the file carries its own spacing)``."""
    if split_suffix(path.name)[1] in SITK_SUFFIXES:
        array, own = read_sitk_2d(path, what)
        return array, own, True
    return read_pil(path, what), (spacing, spacing), False


def label_map(mask: np.ndarray, path: Path, label_of: Mapping[int, int], binary: bool) -> np.ndarray:
    """nnU-Net labels from mask values: ``label_of`` maps each listed value to its label (0 stays background);
    ``binary`` maps every nonzero value to 1."""
    if binary:
        return (mask != 0).astype(np.uint8)
    values = np.unique(mask).tolist()
    unexpected = [v for v in values if v != 0 and v not in label_of]
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        listed = ", ".join(str(v) for v in sorted(label_of))
        raise UserInputError(f"mask {path} has value {shown}, which is neither background 0 nor a --labels value "
                             f"({listed}); list it in --labels, or pass --binary to make every nonzero value 1")
    labels = np.zeros(mask.shape, np.uint8 if len(label_of) < 256 else np.uint16)
    for value, label in label_of.items():
        labels[mask == value] = label
    return labels


def convert(images: str | Path, masks: str | Path, dataset_id: int, name: str = DEFAULT_NAME,
            raw: str | None = None, overwrite: bool = False,
            labels: Sequence[str] | Mapping[str, int] = DEFAULT_LABELS, spacing: float = 1.0, binary: bool = False,
            test_images: str | Path | None = None, progress=None) -> Path:
    """Python API behind the CLI: write the dataset and return its folder."""
    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.imageio import write_image

    images, masks = Path(images), Path(masks)
    test_images = Path(test_images) if test_images is not None else None
    mask_values = parse_labels(labels)
    spacing = check_spacing(spacing)
    if binary and len(mask_values) != 1:
        raise UserInputError(f"--binary makes every nonzero mask value one label; --labels lists {len(mask_values)}")
    folder, retire = raw_dataset_target(raw, dataset_id, name, overwrite)
    cases, skipped = plan_cases(images, masks, test_images)
    if skipped and progress is not None:
        progress(f"skipped {len(skipped)} file(s) of other formats: {', '.join(skipped[:5])}"
                 f"{', ...' if len(skipped) > 5 else ''}")
    ordered = sorted(mask_values.items(), key=lambda item: item[1])
    label_of = {value: index for index, (_, value) in enumerate(ordered, start=1)}
    with atomic_output_dir(folder, overwrite=overwrite, inputs=[images, masks, test_images], retire=retire,
                           written_by=f"nnunet-ext convert {CONVERTER}") as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for index, case in enumerate(cases, start=1):
            image, image_spacing, image_has_spacing = read_2d(case["image"], "image", spacing)
            write_image(tmp / f"images{case['split']}" / f"{case['id']}_0000{FILE_ENDING}", image, image_spacing)
            if case["mask"] is not None:
                mask, mask_spacing, mask_has_spacing = read_2d(case["mask"], "mask", spacing)
                if mask.shape != image.shape:
                    raise UserInputError(f"mask {case['mask']} is {shape_text(mask.shape)} but its image "
                                         f"{case['image'].name} is {shape_text(image.shape)}")
                # a mask drawn on the image's grid has its spacing; PIL formats have none to compare
                if image_has_spacing and mask_has_spacing and not np.allclose(mask_spacing, image_spacing,
                                                                              rtol=1e-4, atol=0.0):
                    raise UserInputError(f"mask {case['mask']} has spacing {spacing_text(mask_spacing)} mm but its "
                                         f"image {case['image'].name} has {spacing_text(image_spacing)} mm")
                write_image(tmp / "labelsTr" / f"{case['id']}{FILE_ENDING}",
                            label_map(mask, case["mask"], label_of, binary), image_spacing)
            if progress is not None:
                progress(f"[{index}/{len(cases)}] {case['image'].name} -> {case['id']} (images{case['split']})")
        training = [c for c in cases if c["split"] == "Tr"]
        dataset = {
            "channel_names": {"0": "image"},
            "labels": {"background": 0, **{label: index for index, (label, _) in enumerate(ordered, start=1)}},
            "numTraining": len(training), "file_ending": FILE_ENDING, "name": name,
            "description": f"2D images and masks converted from folders by nnunet-ext convert image_folder_2d "
                           f"(spacing {spacing:g} mm where the format has none)",
            "conversion": {"converter": CONVERTER, "images": str(images.resolve()), "masks": str(masks.resolve()),
                           "test_images": str(test_images.resolve()) if test_images is not None else None,
                           "spacing_mm": spacing, "binary": binary, "mask_values": dict(ordered),
                           "cases": {f"images{c['split']}/{c['id']}": c["image"].name for c in cases}},
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", dest="images", required=True, help="folder of 2D images (read only, never modified)")
    parser.add_argument("-m", dest="masks", required=True, help="folder of their masks, same file names")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1..999)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"dataset name (default {DEFAULT_NAME})")
    parser.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--labels", nargs="+", default=list(DEFAULT_LABELS), metavar="NAME=VALUE",
                        help="foreground labels and their mask values (default foreground=1); numbered 1..N in "
                             "increasing value")
    parser.add_argument("--spacing", type=float, default=1.0, metavar="MM",
                        help="pixel size in mm of PNG/JPG/TIF/BMP files (default 1.0; NIfTI/MHA/NRRD keep theirs)")
    parser.add_argument("--binary", action="store_true", help="every nonzero mask value is the (single) label")
    parser.add_argument("--test_images", default=None, metavar="DIR", help="folder of images without masks (imagesTs)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def run(args: argparse.Namespace) -> int:
    folder = convert(args.images, args.masks, args.dataset_id, name=args.name, raw=args.raw, overwrite=args.overwrite,
                     labels=args.labels, spacing=args.spacing, binary=args.binary, test_images=args.test_images,
                     progress=print)
    print(f"wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.datasets_conversion._common import cli_main

    return cli_main(f"python -m {CONVERTER}", __doc__.splitlines()[0], configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
