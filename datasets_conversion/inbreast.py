"""Convert INbreast mammograms (DICOM + XML outlines) into a 2D nnU-Net raw dataset of masses (an external test set).

INbreast (Moreira et al., Academic Radiology 2012) holds 410 full-field digital mammograms of 115 patients, 107 of them
with at least one outlined mass. Source layout (the release as distributed by its authors)::

    SRC/AllDICOMs/<FileName>_<PatientID>_MG_<L|R>_<CC|ML>_ANON.dcm
                                one mammogram, e.g. 22678622_61b13c59bcba149e_MG_R_CC_ANON.dcm (ML = the MLO view)
    SRC/AllXML/<FileName>.xml   its annotations (Apple plist): Images -> [ {ROIs -> [ {Name, Point_px, ...} ]} ]
    SRC/INbreast.csv            optional: Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads
                                (';' or ',' separated)

An image without an XML has no ROI. The ROIs named ``Mass`` (case and surrounding spaces ignored) are polygons of
``"(x, y)"`` pixel points (x = column, y = row); each is filled (the pixels whose centres lie inside,
``skimage.draw.polygon``) and all of an image's masses are unioned into label 1. Every other ROI (calcification,
cluster, spiculated region, asymmetry, distortion) is ignored. The image keeps its stored pixel values (MONOCHROME1
images are inverted so that dense tissue is bright), channel name ``MG``; the spacing is the DICOM's PixelSpacing (or
ImagerPixelSpacing), 0.07 mm for INbreast.

The intended use is an external test set for a model trained elsewhere (CBIS-DDSM): by default the images that hold a
mass go to imagesTs/labelsTs and dataset.json says ``numTraining: 0`` (``nnUNetv2_predict -i .../imagesTs`` with the
trained model, then compare with labelsTs; nnU-Net cannot plan or train on such a dataset). ``--as-training`` writes
them to imagesTr/labelsTr instead, so the dataset can be planned and trained on. ``--all-images`` converts all 410
images (the ones without a mass get an empty label). ``--max-size N`` (default 1024, 0 = full resolution) shrinks an
image whose long side exceeds N so that it is N: each new pixel is the area-weighted mean of the source pixels it
covers; a label pixel is mass where at least half of its area is; the spacing grows accordingly and the scale of every
case is recorded in dataset.json (``conversion.cases``), with its INbreast file name, laterality, view, ACR density and
BI-RADS (from the CSV when present), and the skipped files with their reasons (``conversion.skipped``).

Errors (one line naming the file): no AllDICOMs folder, an XML that is not a valid plist or lacks the Images/ROIs
structure, an unreadable DICOM, an XML without its DICOM, a mass polygon with fewer than 3 points or a point outside
the image (more than half a pixel beyond its border), no mass at all (unless ``--all-images``). Source files are only
read.

Example::

    nnunet-ext convert inbreast -i INbreast_Release_1.0 -d 431 --raw $nnUNet_raw
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from nnunet_ext.datasets_conversion._2d_common import (check_max_size, output_shape, read_dicom_2d, shrink_image,
                                                      shrink_mask)
from nnunet_ext.errors import UserInputError

CONVERTER = "datasets_conversion.inbreast"
DEFAULT_NAME = "INbreast"
FILE_ENDING = ".nii.gz"
LABELS = {"background": 0, "mass": 1}
CHANNEL = "MG"
DEFAULT_MAX_SIZE = 1024
DICOM_FOLDER = "AllDICOMs"
XML_FOLDER = "AllXML"
CSV_NAME = "INbreast.csv"
MASS = "mass"
REFERENCE = ("Moreira IC, Amaral I, Domingues I, et al. INbreast: toward a full-field digital mammographic database. "
             "Academic Radiology 19(2):236-248 (2012). doi:10.1016/j.acra.2011.09.014")
_DICOM_NAME = re.compile(r"^(?P<file>\d+)_(?P<patient>[^_]+)_MG_(?P<laterality>[LR])_(?P<view>CC|MLO|ML)_ANON\.dcm$",
                         re.IGNORECASE)
_XML_NAME = re.compile(r"^(?P<file>\d+)\.xml$", re.IGNORECASE)
_POINT = re.compile(r"^\(\s*(?P<x>[^,()]+?)\s*,\s*(?P<y>[^,()]+?)\s*\)$")
# CSV columns by their header, compared without case, spaces, '-' or '_'
_CSV_COLUMNS = {"filename": "file_name", "laterality": "laterality", "view": "view", "acr": "acr",
                "birads": "birads"}


# ----------------------------------------------------------------------------------------------------------------------
# source scan


def _norm_header(text: str) -> str:
    return re.sub(r"[\s_\-]", "", text).lower()


def read_csv(path: Path) -> dict[str, dict[str, str | None]]:
    """``{file name: {laterality, view, acr, birads}}`` of INbreast.csv (';' or ',' separated, spaces stripped)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserInputError(f"{path} is empty (expected the INbreast table with a 'File Name' column)")
    delimiter = ";" if lines[0].count(";") >= lines[0].count(",") else ","
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
    columns = {_CSV_COLUMNS[_norm_header(h)]: i for i, h in enumerate(rows[0]) if _norm_header(h) in _CSV_COLUMNS}
    if "file_name" not in columns:
        raise UserInputError(f"{path} has no 'File Name' column (header: {delimiter.join(h.strip() for h in rows[0])})")
    table: dict[str, dict[str, str | None]] = {}
    for row in rows[1:]:
        values = {key: (row[i].strip() or None) if i < len(row) else None for key, i in columns.items()}
        file_name = values.pop("file_name")
        if file_name:
            table[file_name] = values
    return table


def _points(roi: dict, xml: Path, index: int) -> np.ndarray:
    """``(n, 2)`` array of a mass ROI's (x, y) points."""
    raw = roi.get("Point_px")
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise UserInputError(f"{xml}: ROI {index} (Mass) has no Point_px list of \"(x, y)\" strings")
    points = []
    for text in raw:
        match = _POINT.match(text.strip())
        try:
            point = (float(match["x"]), float(match["y"])) if match else None
        except ValueError:
            point = None
        if point is None or not all(math.isfinite(v) for v in point):
            raise UserInputError(f"{xml}: ROI {index} (Mass) has point {text!r}; expected \"(x, y)\" in pixels")
        points.append(point)
    if len(points) < 3:
        raise UserInputError(f"{xml}: ROI {index} (Mass) has {len(points)} point(s); a mass outline needs at least 3")
    return np.array(points, dtype=np.float64)


def read_masses(xml: Path) -> list[tuple[int, np.ndarray]]:
    """``[(ROI index, (x, y) points)]`` of the mass ROIs in an INbreast XML (ROI index counts every ROI from 0)."""
    import plistlib

    try:
        with open(xml, "rb") as handle:
            document = plistlib.load(handle)
    except Exception as exc:  # noqa: BLE001 - expat, plistlib and OS errors all mean "not a readable plist"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"{xml} is not a valid plist XML ({reason})") from None
    images = document.get("Images") if isinstance(document, dict) else None
    if not isinstance(images, list) or not images:
        raise UserInputError(f"{xml} lacks the INbreast structure: expected a top dict with a non-empty 'Images' array")
    masses, index = [], 0
    for number, image in enumerate(images):
        rois = image.get("ROIs") if isinstance(image, dict) else None
        if not isinstance(rois, list):
            raise UserInputError(f"{xml} lacks the INbreast structure: Images[{number}] has no 'ROIs' array")
        for roi in rois:
            if not isinstance(roi, dict) or not isinstance(roi.get("Name"), str):
                raise UserInputError(f"{xml} lacks the INbreast structure: ROI {index} is not a dict with a 'Name'")
            if roi["Name"].strip().lower() == MASS:
                masses.append((index, _points(roi, xml, index)))
            index += 1
    return masses


def plan_cases(source: Path, all_images: bool) -> tuple[list[dict], list[dict], dict]:
    """``(cases, skipped, layout)`` from the names, XMLs and CSV of an INbreast tree (no DICOM is opened)."""
    if not source.is_dir():
        raise UserInputError(f"source folder {source} does not exist or is not a folder")
    dicom_folder = source / DICOM_FOLDER
    if not dicom_folder.is_dir():
        raise UserInputError(f"{source} has no {DICOM_FOLDER} folder (INbreast layout: {DICOM_FOLDER}/*.dcm, "
                             f"{XML_FOLDER}/*.xml, {CSV_NAME})")
    skipped: list[dict] = []
    dicoms: dict[str, tuple[Path, re.Match]] = {}
    for path in sorted(p for p in dicom_folder.iterdir() if not p.name.startswith(".")):
        match = _DICOM_NAME.match(path.name) if path.is_file() else None
        if match is None:
            skipped.append({"file": f"{DICOM_FOLDER}/{path.name}", "reason": "not named <FileName>_<PatientID>_MG_"
                            "<L|R>_<CC|ML>_ANON.dcm"})
            continue
        if match["file"] in dicoms:
            raise UserInputError(f"two DICOMs with INbreast file name {match['file']}: {dicoms[match['file']][0]} and "
                                 f"{path}")
        dicoms[match["file"]] = (path, match)

    if not dicoms:
        raise UserInputError(f"no INbreast DICOMs (<FileName>_<PatientID>_MG_<L|R>_<CC|ML>_ANON.dcm) in {dicom_folder}")

    xml_folder = source / XML_FOLDER
    masses: dict[str, list[tuple[int, np.ndarray]]] = {}
    xmls: dict[str, Path] = {}
    for path in sorted(xml_folder.iterdir()) if xml_folder.is_dir() else []:
        if path.name.startswith("."):
            continue
        match = _XML_NAME.match(path.name) if path.is_file() else None
        if match is None:
            skipped.append({"file": f"{XML_FOLDER}/{path.name}", "reason": "not named <FileName>.xml"})
            continue
        file_name = match["file"]
        if file_name not in dicoms:
            raise UserInputError(f"{path} has no DICOM: no {file_name}_*_MG_*_ANON.dcm in {dicom_folder}")
        masses[file_name] = read_masses(path)
        xmls[file_name] = path

    csv_path = next((p for p in sorted(source.iterdir()) if p.is_file() and p.name.lower() == CSV_NAME.lower()), None)
    table = read_csv(csv_path) if csv_path is not None else {}

    cases = []
    for file_name in sorted(dicoms, key=lambda f: (len(f), f)):
        path, match = dicoms[file_name]
        found = masses.get(file_name, [])
        if not found and not all_images:
            skipped.append({"file": f"{DICOM_FOLDER}/{path.name}", "reason": "no mass ROI (pass --all-images to "
                            "convert it with an empty label)"})
            continue
        row = table.get(file_name, {})
        view = match["view"].upper()
        cases.append({
            "id": f"inbreast_{file_name}", "file_name": file_name, "dicom": path, "xml": xmls.get(file_name),
            "masses": found, "laterality": row.get("laterality") or match["laterality"].upper(),
            "view": row.get("view") or ("MLO" if view == "ML" else view),
            "acr": row.get("acr"), "birads": row.get("birads")})
    if not cases:
        where = f"the XMLs of {xml_folder}" if xml_folder.is_dir() else f"{source} (no {XML_FOLDER} folder)"
        raise UserInputError(f"no mass ROI in {where}: nothing to convert (pass --all-images to convert the images "
                             f"with empty labels)")
    layout = {"images": DICOM_FOLDER, "annotations": XML_FOLDER if xml_folder.is_dir() else None,
              "table": csv_path.name if csv_path is not None else None}
    return cases, skipped, layout


# ----------------------------------------------------------------------------------------------------------------------
# pixels


def read_dicom(path: Path) -> tuple[np.ndarray, tuple[float, float], dict]:
    """``(pixels (y, x), spacing (y, x) in mm, notes)`` of one INbreast DICOM (:func:`read_dicom_2d`); INbreast
    always records its 0.07 mm spacing, so a file without one is refused."""
    pixels, spacing, _, photometric = read_dicom_2d(path)
    if spacing is None:
        raise UserInputError(f"DICOM file {path} has no usable PixelSpacing or ImagerPixelSpacing")
    return pixels, spacing, {"photometric": photometric}


def fill_masses(masses: list[tuple[int, np.ndarray]], shape: tuple[int, int], xml: Path | None) -> np.ndarray:
    """Union of the filled mass polygons (pixel centres inside) as a uint8 mask of ``shape`` (y, x).

    A point is outside the image when it lies more than half a pixel beyond the border (the image spans
    -0.5 .. width - 0.5 around integer pixel centres): ``x < -1 or x > width`` (same for y).
    """
    from skimage.draw import polygon

    mask = np.zeros(shape, np.uint8)
    height, width = shape
    for index, points in masses:
        x, y = points[:, 0], points[:, 1]
        outside = (x < -1) | (x > width) | (y < -1) | (y > height)
        if outside.any():
            bad = points[np.argmax(outside)]
            raise UserInputError(f"{xml}: ROI {index} (Mass) has point ({bad[0]:g}, {bad[1]:g}) outside the "
                                 f"{width}x{height} image")
        rows, cols = polygon(y, x, shape=shape)
        mask[rows, cols] = 1
    return mask


# ----------------------------------------------------------------------------------------------------------------------
# dataset


def convert(source: str | Path, dataset_id: int, name: str = DEFAULT_NAME, raw: str | None = None,
            overwrite: bool = False, all_images: bool = False, max_size: int = DEFAULT_MAX_SIZE,
            as_training: bool = False, progress=None) -> Path:
    """Python API behind the CLI: write the dataset and return its folder."""
    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.datasets_conversion._common import raw_dataset_target
    from nnunet_ext.imageio import write_image

    source = Path(source)
    max_size = check_max_size(max_size)
    folder, retire = raw_dataset_target(raw, dataset_id, name, overwrite)
    cases, skipped, layout = plan_cases(source, all_images)
    split = "Tr" if as_training else "Ts"
    records = {}
    with atomic_output_dir(folder, overwrite=overwrite, inputs=[source], retire=retire,
                           written_by=f"nnunet-ext convert {CONVERTER}") as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for index, case in enumerate(cases, start=1):
            image, spacing, notes = read_dicom(case["dicom"])
            mask = fill_masses(case["masses"], image.shape, case["xml"])
            shape = output_shape(image.shape, max_size)
            small, small_mask = shrink_image(image, shape), shrink_mask(mask, shape)
            scale = (small.shape[0] / image.shape[0], small.shape[1] / image.shape[1])
            new_spacing = (spacing[0] / scale[0], spacing[1] / scale[1])
            write_image(tmp / f"images{split}" / f"{case['id']}_0000{FILE_ENDING}", small, new_spacing)
            write_image(tmp / f"labels{split}" / f"{case['id']}{FILE_ENDING}", small_mask, new_spacing)
            records[case["id"]] = {
                "file_name": case["file_name"], "dicom": f"{DICOM_FOLDER}/{case['dicom'].name}",
                "xml": f"{XML_FOLDER}/{case['xml'].name}" if case["xml"] is not None else None,
                "laterality": case["laterality"], "view": case["view"], "acr": case["acr"], "birads": case["birads"],
                "masses": len(case["masses"]), "mass_rois": [i for i, _ in case["masses"]],
                "original_shape": list(image.shape), "shape": list(small.shape), "scale": list(scale),
                "original_spacing_mm": list(spacing), "spacing_mm": list(new_spacing),
                "photometric": notes["photometric"]}
            if progress is not None:
                progress(f"[{index}/{len(cases)}] {case['dicom'].name} -> {case['id']} (images{split}, "
                         f"{len(case['masses'])} mass(es))")
        dataset = {
            "channel_names": {"0": CHANNEL}, "labels": LABELS, "numTraining": len(cases) if as_training else 0,
            "file_ending": FILE_ENDING, "name": name,
            "description": ("INbreast full-field digital mammograms (Moreira et al. 2012); label 1 = mass, the union "
                            "of the filled 'Mass' ROI outlines; "
                            + ("training set (imagesTr/labelsTr)" if as_training else
                               "external test set in imagesTs/labelsTs (numTraining 0: predict with a model trained "
                               "on another dataset)")),
            "reference": REFERENCE, "licence": "INbreast terms of use (the database is released by its authors on "
                                               "request)",
            "conversion": {"converter": CONVERTER, "source": str(source.resolve()), "layout": layout,
                           "split": f"images{split}/labels{split}", "all_images": all_images,
                           "max_size": max_size, "cases": records, "skipped": skipped},
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", dest="input", required=True,
                        help=f"INbreast folder holding {DICOM_FOLDER}/, {XML_FOLDER}/ and {CSV_NAME} (read only, "
                             f"never modified)")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1..999)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"dataset name (default {DEFAULT_NAME})")
    parser.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--all-images", dest="all_images", action="store_true",
                        help="convert every image (those without a mass get an empty label); default: only the "
                             "images with a mass")
    parser.add_argument("--max-size", dest="max_size", type=int, default=DEFAULT_MAX_SIZE,
                        help=f"long side at most N pixels, area-averaged, spacing scaled (default {DEFAULT_MAX_SIZE}; "
                             f"0 = full resolution)")
    parser.add_argument("--as-training", dest="as_training", action="store_true",
                        help="write imagesTr/labelsTr (a dataset nnU-Net can plan and train on) instead of the "
                             "external test set imagesTs/labelsTs")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def run(args: argparse.Namespace) -> int:
    folder = convert(args.input, args.dataset_id, name=args.name, raw=args.raw, overwrite=args.overwrite,
                     all_images=args.all_images, max_size=args.max_size, as_training=args.as_training,
                     progress=print)
    print(f"wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.datasets_conversion._common import cli_main

    return cli_main(f"python -m {CONVERTER}", __doc__.splitlines()[0], configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
