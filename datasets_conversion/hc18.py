"""Convert the HC18 fetal-head ultrasound challenge data into an nnU-Net raw dataset (2D, label 1 = head).

Source layout (the Zenodo release, record 1327317, or any subset of it such as ``../shared/data/hc18``)::

    SRC/training_set/NNN_HC.png              ultrasound image, 8-bit grayscale (800 x 540)
    SRC/training_set/NNN_HC_Annotation.png   the sonographer's head outline: a thin closed ellipse, values {0, 255}
    SRC/training_set/NNN_kHC.png             repeat image k of case NNN (same examination), with its annotation
    SRC/training_set_pixel_size_and_HC.csv   filename, pixel size (mm), head circumference (mm)
                                             (also found as SRC/pixel_size_and_HC.csv, or given with --csv)
    SRC/test_set/NNN_HC.png                  optional: challenge test images (no annotation) -> imagesTs
    SRC/test_set_pixel_size.csv              filename, pixel size (mm) of the test images

Each outline is filled (``scipy.ndimage.binary_fill_holes``) into the head mask; an outline cut by the image border is
closed by the border (:func:`filled_head`); any other outline that does not enclose an area is an error naming the
file. The pixel size becomes the image spacing, so HD and volumes come out in mm. ``--downsample F`` averages F x F
pixel blocks (images; a mask pixel is head where at least half its block is) and multiplies the spacing by F: a
compute budget for CPUs, recorded in dataset.json (``conversion.downsample``) so that ``nnunet-ext ffpn predict-hc18``
prepares new images the same way.
Repeat images of a case share a group (``case_groups`` in dataset.json) so a split can keep them together; the CSV's
head circumference is kept (``head_circumference_mm``) for the HC18 metric. Source files are only read.

Example::

    nnunet-ext convert hc18 -i HC18_DOWNLOAD -d 410 --raw $nnUNet_raw
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

CONVERTER = "datasets_conversion.hc18"
DEFAULT_NAME = "HC18"
FILE_ENDING = ".nii.gz"
LABELS = {"background": 0, "head": 1}
TRAINING_CSV_NAMES = ("training_set_pixel_size_and_HC.csv", "pixel_size_and_HC.csv")
TEST_CSV_NAME = "test_set_pixel_size.csv"
_IMAGE_NAME = re.compile(r"^(?P<case>\d+)_(?P<repeat>\d+)?HC\.png$")
# a filled outline must cover clearly more than the outline itself; an open outline fills nothing
MIN_FILL_RATIO = 3.0


def case_id(image_name: str) -> tuple[str, str]:
    """``("hc18_010_2", "010")`` for ``010_2HC.png``: the nnU-Net case id and the case group."""
    match = _IMAGE_NAME.match(image_name)
    if match is None:
        raise UserInputError(f"unrecognised HC18 image name {image_name}: expected NNN_HC.png or NNN_kHC.png")
    suffix = f"_{match['repeat']}" if match["repeat"] else ""
    return f"hc18_{match['case']}{suffix}", match["case"]


_CASE_ID = re.compile(r"^hc18_(?P<case>\d+)(?:_(?P<repeat>\d+))?$")


def image_name(identifier: str) -> str:
    """Inverse of :func:`case_id`: ``"010_2HC.png"`` for ``hc18_010_2`` (the name the HC18 CSVs use)."""
    match = _CASE_ID.match(identifier)
    if match is None:
        raise UserInputError(f"{identifier} is not an HC18 case id (hc18_NNN or hc18_NNN_k, as the converter names "
                             f"cases)")
    return f"{match['case']}_{match['repeat'] or ''}HC.png"


def read_csv(path: Path, columns: int) -> dict[str, list[float]]:
    """``{filename: [values...]}`` of an HC18 CSV; every value must be a positive number."""
    rows: dict[str, list[float]] = {}
    try:
        with open(path, newline="") as handle:
            lines = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read {path}: {exc}") from None
    for number, row in enumerate(lines[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < columns:
            raise UserInputError(f"{path} line {number}: expected {columns} columns, got {len(row)}")
        try:
            values = [float(v) for v in row[1:columns]]
        except ValueError:
            raise UserInputError(f"{path} line {number}: not a number in {row[1:columns]}") from None
        if not all(np.isfinite(v) and v > 0 for v in values):
            raise UserInputError(f"{path} line {number}: values must be positive, got {row[1:columns]}")
        rows[row[0].strip()] = values
    return rows


def read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise UserInputError(f"cannot read image {path}: {type(exc).__name__}") from None


def filled_head(annotation: np.ndarray, path: Path) -> np.ndarray:
    """The head mask enclosed by an HC18 outline annotation.

    Some heads extend beyond the image: their outline is an ellipse cut by the image border, closed only together
    with the border. Then the head is the region, bounded by the outline and the border, that holds the centre of
    the ellipse fitted to the outline (and it must not exceed that ellipse's area). Any other open outline is an
    error.
    """
    from scipy import ndimage
    from skimage.measure import EllipseModel

    outline = annotation > 0
    if not outline.any():
        raise UserInputError(f"annotation {path} has no outline (all pixels are 0)")
    filled = ndimage.binary_fill_holes(outline)
    if filled.sum() >= MIN_FILL_RATIO * outline.sum():
        return filled
    touches_border = outline[0].any() or outline[-1].any() or outline[:, 0].any() or outline[:, -1].any()
    rows, cols = np.nonzero(outline)
    model = EllipseModel.from_estimate(np.stack([cols, rows], axis=1).astype(float)) if touches_border else None
    if model:
        regions, _ = ndimage.label(~outline)
        col, row = (int(round(v)) for v in model.center)
        if 0 <= row < outline.shape[0] and 0 <= col < outline.shape[1] and regions[row, col] > 0:
            head = outline | (regions == regions[row, col])
            if head.sum() <= 1.1 * np.pi * np.prod(model.axis_lengths) and head.sum() >= MIN_FILL_RATIO * outline.sum():
                return head
    raise UserInputError(f"annotation {path} is not a closed outline: filling it adds no area")


def find_training_csv(source: Path, given: str | None) -> Path:
    if given is not None:
        if not Path(given).is_file():
            raise UserInputError(f"--csv {given} does not exist")
        return Path(given)
    for name in TRAINING_CSV_NAMES:
        if (source / name).is_file():
            return source / name
    raise UserInputError(f"no pixel-size CSV in {source} (looked for {', '.join(TRAINING_CSV_NAMES)}; or pass --csv)")


def plan_cases(source: Path, csv_path: str | None = None) -> list[dict]:
    """Scan the source (reading only names and CSVs) and return one record per image, training images first."""
    if not source.is_dir():
        raise UserInputError(f"source folder {source} does not exist or is not a folder")
    training = source / "training_set"
    if not training.is_dir():
        raise UserInputError(f"{source} has no training_set folder (HC18 layout: training_set/NNN_HC.png)")
    pixel_sizes = read_csv(find_training_csv(source, csv_path), columns=3)
    cases = []
    for image in sorted(training.glob("*HC.png")):
        identifier, group = case_id(image.name)
        annotation = image.with_name(image.name.replace("HC.png", "HC_Annotation.png"))
        if not annotation.is_file():
            raise UserInputError(f"image without annotation: {image} ({annotation.name} not found)")
        if image.name not in pixel_sizes:
            raise UserInputError(f"no pixel size for {image} in the CSV")
        pixel, circumference = pixel_sizes[image.name]
        cases.append({"id": identifier, "group": group, "image": image, "annotation": annotation,
                      "pixel_size_mm": pixel, "head_circumference_mm": circumference, "split": "Tr"})
    if not cases:
        raise UserInputError(f"no NNN_HC.png images in {training}")
    test_folder = source / "test_set"
    if test_folder.is_dir() and any(test_folder.glob("*HC.png")):
        test_csv = source / TEST_CSV_NAME
        if not test_csv.is_file():
            raise UserInputError(f"{test_folder} has images but {test_csv} is missing (their pixel sizes)")
        test_sizes = read_csv(test_csv, columns=2)
        for image in sorted(test_folder.glob("*HC.png")):
            identifier, group = case_id(image.name)
            if image.name not in test_sizes:
                raise UserInputError(f"no pixel size for {image} in {test_csv}")
            cases.append({"id": f"{identifier}_test", "group": group, "image": image, "annotation": None,
                          "pixel_size_mm": test_sizes[image.name][0], "split": "Ts"})
    return cases


def downsample(array: np.ndarray, factor: int, mask: bool = False) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks (a trailing partial block is dropped); a mask keeps pixels whose block
    is at least half foreground."""
    if factor == 1:
        return array
    from skimage.measure import block_reduce

    height, width = (n - n % factor for n in array.shape)
    means = block_reduce(array[:height, :width].astype(np.float32), (factor, factor), np.mean)
    return (means >= 0.5).astype(np.uint8) if mask else np.round(means).astype(np.uint8)


def check_downsample(factor: int) -> int:
    if not isinstance(factor, int) or isinstance(factor, bool) or not 1 <= factor <= 8:
        raise UserInputError(f"--downsample must be an integer in 1..8, got {factor!r}")
    return factor


def write_image(png: Path, pixel_size: float, path: Path, factor: int = 1) -> None:
    """One HC18 PNG as an nnU-Net image (spacing = pixel size x factor)."""
    _write(downsample(read_png(png), factor), pixel_size * factor, path)


def _write(array: np.ndarray, pixel_size: float, path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing((pixel_size, pixel_size))
    sitk.WriteImage(image, str(path), True)


def convert(source: str | Path, dataset_id: int, name: str = DEFAULT_NAME, raw: str | None = None,
            overwrite: bool = False, csv_path: str | None = None, progress=None, downsample_factor: int = 1) -> Path:
    """Python API behind the CLI: write the dataset and return its folder."""
    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.datasets_conversion._common import raw_dataset_target

    source = Path(source)
    factor = check_downsample(downsample_factor)
    folder, retire = raw_dataset_target(raw, dataset_id, name, overwrite)
    cases = plan_cases(source, csv_path)
    with atomic_output_dir(folder, overwrite=overwrite, inputs=[source], retire=retire,
                           written_by=f"nnunet-ext convert {CONVERTER}") as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for index, case in enumerate(cases, start=1):
            image = read_png(case["image"])
            spacing = case["pixel_size_mm"] * factor
            image_path = tmp / f"images{case['split']}" / f"{case['id']}_0000{FILE_ENDING}"
            _write(downsample(image, factor), spacing, image_path)
            if case["annotation"] is not None:
                annotation = read_png(case["annotation"])
                if annotation.shape != image.shape:
                    raise UserInputError(f"annotation {case['annotation']} is {annotation.shape[1]}x"
                                         f"{annotation.shape[0]} but its image is {image.shape[1]}x{image.shape[0]}")
                head = filled_head(annotation, case["annotation"]).astype(np.uint8)
                _write(downsample(head, factor, mask=True), spacing, tmp / "labelsTr" / f"{case['id']}{FILE_ENDING}")
            if progress is not None:
                progress(f"[{index}/{len(cases)}] {case['image'].name} -> {case['id']} (images{case['split']})")
        training = [c for c in cases if c["split"] == "Tr"]
        dataset = {
            "channel_names": {"0": "US"}, "labels": LABELS, "numTraining": len(training),
            "file_ending": FILE_ENDING, "name": name,
            "description": "HC18 fetal head ultrasound (van den Heuvel et al., PLoS ONE 2018); label 1 = head, "
                           "filled from the sonographer's outline; spacing = pixel size in mm",
            "reference": "doi:10.1371/journal.pone.0200412", "licence": "CC BY 4.0 (HC18, Zenodo 1327317)",
            "case_groups": {c["id"]: c["group"] for c in training},
            "pixel_size_mm": {c["id"]: c["pixel_size_mm"] for c in cases},
            "head_circumference_mm": {c["id"]: c["head_circumference_mm"] for c in training},
            "conversion": {"converter": CONVERTER, "source": str(source.resolve()), "downsample": factor,
                           "cases": {c["id"]: c["image"].name for c in cases}},
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", dest="input", required=True, help="HC18 folder (read only, never modified)")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1..999)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"dataset name (default {DEFAULT_NAME})")
    parser.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--csv", default=None, help="pixel-size CSV of the training images (default: found in -i)")
    parser.add_argument("--downsample", type=int, default=1,
                        help="average F x F pixel blocks, spacing x F (a CPU budget; default 1 = full resolution)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def run(args: argparse.Namespace) -> int:
    folder = convert(args.input, args.dataset_id, name=args.name, raw=args.raw, overwrite=args.overwrite,
                     csv_path=args.csv, progress=print, downsample_factor=args.downsample)
    print(f"wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.datasets_conversion._common import cli_main

    return cli_main(f"python -m {CONVERTER}", __doc__.splitlines()[0], configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
