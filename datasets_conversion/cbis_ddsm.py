"""Convert CBIS-DDSM mammograms (TCIA DICOM or the Kaggle JPEG copy) into an nnU-Net raw dataset (2D, label 1 = mass).

CBIS-DDSM (Lee et al., Sci Data 2017) is the curated subset of the scanned-film DDSM: full mammograms with ROI masks
of their masses and calcifications, described by four CSVs (``mass_case_description_{train,test}_set.csv``,
``calc_case_description_{train,test}_set.csv``; one row per abnormality: ``patient_id``, ``left or right breast``,
``image view``, ``abnormality id``, ``abnormality type``, ``pathology``, ``image file path``, ``cropped image file
path``, ``ROI mask file path``; the density column is ``breast_density`` in one and ``breast density`` in the other).
Mammo-SAM (Xiong et al., MICCAI 2023) segments its 1,592 mass images with a 75/25 split of all of them. Source layouts::

    TCIA DICOM release (NBIA download; the CSVs anywhere under -i)
    SRC/CBIS-DDSM/Mass-Training_P_00001_LEFT_CC/<study folder>/<series folder>/1-1.dcm      full mammogram
    SRC/CBIS-DDSM/Mass-Training_P_00001_LEFT_CC_1/<study folder>/<series folder>/1-1.dcm    ROI mask or cropped
    SRC/CBIS-DDSM/Mass-Training_P_00001_LEFT_CC_1/<study folder>/<series folder>/1-2.dcm    image (either order)
    SRC/metadata.csv            optional NBIA manifest: Series UID, Study UID, File Location (./CBIS-DDSM/...)
    SRC/mass_case_description_train_set.csv ...

    Kaggle "CBIS-DDSM: Breast Cancer Image Dataset" (JPEG)
    SRC/jpeg/<SeriesInstanceUID>/1-1.jpg (1-2.jpg ...)
    SRC/csv/dicom_info.csv      image_path (CBIS-DDSM/jpeg/<uid>/1-1.jpg), SeriesInstanceUID, SeriesDescription, ...
    SRC/csv/mass_case_description_train_set.csv ...

``--layout auto`` picks jpeg when ``jpeg/`` and ``csv/dicom_info.csv`` (or ``dicom_info.csv``) are in -i, dicom when
-i holds ``*.dcm`` files. What the data does, and what this converter does about it (the files are only read):

* The CSV paths (``Mass-Training_P_00001_LEFT_CC/<StudyInstanceUID>/<SeriesInstanceUID>/000000.dcm``, often with stray
  spaces or line breaks, which are stripped) never name a file on disk; only their UIDs are used. DICOM layout: the
  series UID, then the study UID, is looked up in ``metadata.csv`` (Series UID / Study UID -> File Location, where
  that folder exists), else in the SeriesInstanceUID / StudyInstanceUID headers of every ``*.dcm`` under -i (read once,
  without pixel data; an unreadable file is then an error naming it). JPEG layout: the series UID in
  ``dicom_info.csv`` (-> image_path, matched from its ``jpeg/`` part on), else the folder ``jpeg/<series UID>``, else
  the study UID in ``dicom_info.csv``. A path that resolves to nothing is an error naming the CSV, line, patient and
  path.
* An ROI series holds the binary mask (the size of its mammogram, values 0/255) and the small cropped image, and the
  two CSV columns naming them are sometimes swapped, so neither the file name nor the column decides: of the files of
  both columns' series, the mask is the binary one (JPEG: nearly binary, at most 2 % of the pixels between 1/8 and
  7/8 of the maximum, as JPEG blurs the edge; thresholded at > 127; DICOM: one nonzero value, > 0). All mask ROIs of
  one image are merged into label 1. An image is skipped, and reported (dataset.json ``skipped_images`` and a printed
  summary), when a mask's size differs from the mammogram's (``mask_size_mismatch``) or an ROI series holds no binary
  image (``no_roi_mask``).
* Pixel values are kept as stored (DICOM: 16-bit film densities, MONOCHROME1 inverted so that dense is bright; JPEG:
  8-bit), one channel "MG". The spacing is the DICOM PixelSpacing or ImagerPixelSpacing (in the JPEG layout, those
  columns of dicom_info.csv) when present; CBIS-DDSM's files are not known to carry either (the DDSM film digitisers
  sampled at about 0.04-0.05 mm), so it is usually 1.0 = one source pixel, said in dataset.json (``spacing_note``,
  ``spacing_source`` per case).
* Splits: ``--split official`` puts the Training CSVs' images in imagesTr/labelsTr and the Test CSVs' in
  imagesTs/labelsTs. ``--split paper`` draws 25 % of ALL images of the chosen abnormality (Training and Test CSVs
  together; the paper's 1,592 mass images) for imagesTs with ``--seed``, whole patients (P_00001) at a time so that no
  patient is on both sides (the paper does not say how it split; patients are walked in a seeded order and taken while
  the test images stay within round(25 %)). Skipped images leave the side they were drawn for.
* ``--max-size N`` (default 1024; 0 keeps the full size) shrinks an image whose long side exceeds N so that the long
  side is N: exact area averaging for the image (rounded to the stored type), the label is the area-averaged mask
  >= 0.5; the spacing grows by input / output size per axis, and the scale of every case is recorded.
* Case ids are the CSV's image folder names (``Mass-Training_P_00001_LEFT_CC``), unique across both splits.
  ``case_groups`` maps training cases to their patient. ``--abnormality calcification`` converts the calcification
  rows instead (label 1 = calcification).

Errors are one line naming the file, and nothing is written: a missing source folder, neither layout found, no case
CSVs, a CSV lacking a column, a row whose image or ROI path resolves to nothing, an unreadable or truncated DICOM or
JPEG, no row of the chosen abnormality, every image skipped.

Example::

    nnunet-ext convert cbis_ddsm -i CBIS-DDSM_download -d 440 --split paper --seed 0 --raw $nnUNet_raw
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_ext.datasets_conversion._2d_common import (check_max_size, exception_text, output_shape, read_dicom_2d,
                                                      shape_text, shrink_image, shrink_mask)
from nnunet_ext.errors import UserInputError

CONVERTER = "datasets_conversion.cbis_ddsm"
DEFAULT_NAMES = {"mass": "CBISDDSM", "calcification": "CBISDDSMCalc"}
FILE_ENDING = ".nii.gz"
CHANNEL = "MG"
LAYOUTS = ("auto", "dicom", "jpeg")
SPLITS = ("official", "paper")
ABNORMALITIES = ("mass", "calcification")
PAPER_TEST_FRACTION = 0.25
DEFAULT_MAX_SIZE = 1024
JPEG_THRESHOLD = 127  # an 8-bit JPEG mask pixel is foreground above this
# a lossy mask: at most this share of its pixels lies between 1/8 and 7/8 of its maximum
JPEG_MID_FRACTION = 0.02
REFERENCE = ("doi:10.1038/sdata.2017.177 (Lee et al., A curated mammography data set for use in computer-aided "
             "detection and diagnosis research, Sci Data 2017); TCIA doi:10.7937/K9/TCIA.2016.7O02S9CY")
_CASE_CSV = re.compile(r"^(?P<kind>mass|calc)_case_description_(?P<part>train|test)_set\.csv$", re.IGNORECASE)
# the case CSVs' columns, compared after lower-casing and turning '_' and runs of spaces into one space
COLUMNS = {"patient": "patient id", "abnormality_id": "abnormality id", "type": "abnormality type",
           "image": "image file path", "crop": "cropped image file path", "roi": "roi mask file path"}
OPTIONAL_COLUMNS = {"pathology": "pathology"}
METADATA_NAME = "metadata.csv"
DICOM_INFO_NAME = "dicom_info.csv"


def _column_key(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).lower()


def _clean(value: str) -> str:
    """A CSV value without the stray spaces and line breaks of the release."""
    return "".join(value.split()) if "/" in value or "\\" in value else " ".join(value.split())


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """``(header, [(first line of the record, values)])`` of a CSV; quoted line breaks stay inside their field."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            records = []
            while True:
                line = reader.line_num + 1
                row = next(reader, None)
                if row is None:
                    break
                if "".join(row).strip():
                    records.append((line, row))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserInputError(f"cannot read {path}: {exc}") from None
    return [h.strip() for h in header], records


# ----------------------------------------------------------------------------------------------------------------------
# the case CSVs


@dataclass
class Row:
    """One abnormality of a case CSV (paths as the CSV gives them, without stray whitespace)."""

    csv: Path
    line: int
    part: str  # "Training" or "Test", from the CSV's name
    patient: str
    kind: str  # abnormality type, lower case ("mass", "calcification")
    abnormality_id: str
    pathology: str
    image: str
    crop: str
    roi: str

    def where(self) -> str:
        return f"{self.csv.name} line {self.line} (patient {self.patient}, abnormality {self.abnormality_id})"


def find_case_csvs(source: Path) -> list[tuple[Path, str]]:
    """``[(path, "Training"|"Test")]`` of the case-description CSVs anywhere under ``source``."""
    found = sorted((p for p in source.rglob("*.csv") if _CASE_CSV.match(p.name) and p.is_file()), key=str)
    if not found:
        raise UserInputError(f"no CBIS-DDSM case CSVs (mass_case_description_train_set.csv, "
                             f"mass_case_description_test_set.csv, calc_case_description_...) in {source}")
    return [(p, "Training" if _CASE_CSV.match(p.name)["part"].lower() == "train" else "Test") for p in found]


def read_case_csv(path: Path, part: str) -> list[Row]:
    """Every row of one case CSV (``part``: "Training" or "Test")."""
    header, records = _read_table(path)
    index = {_column_key(name): i for i, name in enumerate(header)}
    missing = [name for name in COLUMNS.values() if name not in index]
    if missing:
        raise UserInputError(f"{path} lacks the column(s) {', '.join(missing)} (columns found: "
                             f"{', '.join(header) or 'none'})")
    rows = []
    for line, values in records:
        if len(values) < len(header):
            raise UserInputError(f"{path} line {line}: expected {len(header)} columns, got {len(values)}")
        get = {key: _clean(values[index[name]]) for key, name in {**COLUMNS, **OPTIONAL_COLUMNS}.items()
               if name in index}
        rows.append(Row(csv=path, line=line, part=part, patient=get["patient"], kind=get["type"].lower(),
                        abnormality_id=get["abnormality_id"], pathology=get.get("pathology", ""),
                        image=get["image"], crop=get["crop"], roi=get["roi"]))
    return rows


def path_parts(text: str) -> list[str]:
    return [part for part in text.replace("\\", "/").split("/") if part and part != "."]


def uids_of(text: str) -> tuple[str, str] | None:
    """``(study UID, series UID)`` of a CSV path ``FOLDER/STUDY/SERIES/FILE`` (None if it has fewer parts)."""
    parts = path_parts(text)
    return (parts[-3], parts[-2]) if len(parts) >= 4 else None


@dataclass
class Case:
    """One mammogram: its CSV rows (one per abnormality) and, once resolved, its files."""

    id: str
    patient: str
    part: str
    rows: list[Row]
    split: str = "Tr"
    image: Path | None = None
    roi_files: list[list[Path]] = field(default_factory=list)


def group_cases(rows: list[Row], abnormality: str, csvs: list[Path]) -> list[Case]:
    """The images with at least one ``abnormality`` row, sorted by case id (the image folder name of the CSV)."""
    chosen = [row for row in rows if row.kind == abnormality]
    if not chosen:
        found = sorted({row.kind for row in rows if row.kind})
        raise UserInputError(f"no rows with abnormality type '{abnormality}' in {', '.join(p.name for p in csvs)} "
                             f"(types found: {', '.join(found) or 'none'})")
    cases: dict[str, Case] = {}
    for row in chosen:
        for column, text in (("image file path", row.image), ("ROI mask file path", row.roi)):
            if uids_of(text) is None:
                raise UserInputError(f"{row.where()}: {column} '{text}' is not FOLDER/STUDY_UID/SERIES_UID/FILE")
        case_id = re.sub(r"[^A-Za-z0-9_-]", "_", path_parts(row.image)[0])
        case = cases.setdefault(case_id, Case(id=case_id, patient=row.patient, part=row.part, rows=[]))
        first = case.rows[0] if case.rows else row
        if uids_of(first.image) != uids_of(row.image) or first.part != row.part or first.patient != row.patient:
            raise UserInputError(f"{row.where()} and {first.where()} name the same image {case_id} but differ in "
                                 f"its path, patient or split ('{row.image}' vs '{first.image}')")
        case.rows.append(row)
    return [cases[key] for key in sorted(cases)]


# ----------------------------------------------------------------------------------------------------------------------
# from CSV paths to files


def _dicom_files(folder: Path) -> list[Path]:
    """``*.dcm`` files under ``folder`` (hidden ones, such as macOS ``._1-1.dcm``, skipped), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".dcm" and not p.name.startswith(".")
                  and p.is_file())


class DicomResolver:
    """Files of a CSV path in the DICOM layout: ``metadata.csv`` first, the DICOM headers (read once) second."""

    def __init__(self, source: Path):
        self.source = source
        self.metadata = next(iter(sorted(source.rglob(METADATA_NAME), key=lambda p: (len(p.parts), str(p)))), None)
        self._maps = {"series": {}, "study": {}}
        if self.metadata is not None:
            self._read_metadata(self.metadata)
        self._headers: dict[str, dict[str, list[Path]]] | None = None
        self.used: dict[str, int] = {}

    def _read_metadata(self, path: Path) -> None:
        header, records = _read_table(path)
        index = {_column_key(name): i for i, name in enumerate(header)}
        if "series uid" not in index or "file location" not in index:
            raise UserInputError(f"{path} lacks the columns 'Series UID' and 'File Location' of an NBIA manifest "
                                 f"(columns found: {', '.join(header) or 'none'})")
        for _, values in records:
            if len(values) <= max(index["series uid"], index["file location"]):
                continue
            folder = path.parent.joinpath(*path_parts(values[index["file location"]].strip()))
            self._maps["series"].setdefault(values[index["series uid"]].strip(), []).append(folder)
            if "study uid" in index and index["study uid"] < len(values):
                self._maps["study"].setdefault(values[index["study uid"]].strip(), []).append(folder)

    def headers(self) -> dict[str, dict[str, list[Path]]]:
        """``{"series": {uid: files}, "study": {uid: files}}`` from every DICOM header under the source."""
        if self._headers is None:
            import pydicom

            maps: dict[str, dict[str, list[Path]]] = {"series": {}, "study": {}}
            for path in _dicom_files(self.source):
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True,
                                         specific_tags=["SeriesInstanceUID", "StudyInstanceUID"])
                except Exception as exc:  # pydicom raises many types for a damaged file: all mean unreadable
                    raise UserInputError(f"cannot read DICOM file {path}: {exception_text(exc)}") from None
                for kind, tag in (("series", "SeriesInstanceUID"), ("study", "StudyInstanceUID")):
                    if ds.get(tag):
                        maps[kind].setdefault(str(ds.get(tag)).strip(), []).append(path)
            self._headers = maps
        return self._headers

    def lookup(self, study: str, series: str) -> tuple[list[Path], str | None]:
        """``(files, how found)`` for a series UID, else its study UID; ``([], None)`` if nothing matches."""
        for kind, uid in (("series", series), ("study", study)):
            files = sorted({f for folder in self._maps[kind].get(uid, []) if folder.is_dir()
                            for f in _dicom_files(folder)})
            if files:
                return files, f"{METADATA_NAME} ({kind} UID)"
        for kind, uid in (("series", series), ("study", study)):
            if self.headers()[kind].get(uid):
                return sorted(self.headers()[kind][uid]), f"DICOM headers ({kind} UID)"
        return [], None

    def looked_in(self) -> str:
        return f"{self.metadata} and the DICOM headers" if self.metadata else "the DICOM headers (no metadata.csv)"


def _floats(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", text)]


class JpegResolver:
    """Files of a CSV path in the JPEG layout: ``dicom_info.csv`` first, the folder ``jpeg/<series UID>`` second."""

    def __init__(self, source: Path, info: Path):
        self.source, self.info = source, info
        header, records = _read_table(info)
        index = {name.lower(): i for i, name in enumerate(header)}
        if "image_path" not in index or "seriesinstanceuid" not in index:
            raise UserInputError(f"{info} lacks the columns image_path and SeriesInstanceUID (columns found: "
                                 f"{', '.join(header) or 'none'})")
        self._maps: dict[str, dict[str, list[Path]]] = {"series": {}, "study": {}}
        self.spacing: dict[Path, tuple[tuple[float, float], str]] = {}
        for _, values in records:
            if len(values) < len(header):
                continue
            path = self._file(values[index["image_path"]])
            for kind, column in (("series", "seriesinstanceuid"), ("study", "studyinstanceuid")):
                if column in index and values[index[column]].strip():
                    self._maps[kind].setdefault(values[index[column]].strip(), []).append(path)
            for column in ("pixelspacing", "imagerpixelspacing"):
                numbers = _floats(values[index[column]]) if column in index else []
                if numbers and all(n > 0 for n in numbers[:2]) and path not in self.spacing:
                    pair = (numbers[0], numbers[1] if len(numbers) > 1 else numbers[0])
                    self.spacing[path] = (pair, "PixelSpacing" if column == "pixelspacing" else "ImagerPixelSpacing")
        self.used: dict[str, int] = {}

    def _file(self, text: str) -> Path:
        """The file of an image_path (``CBIS-DDSM/jpeg/<uid>/1-1.jpg``), matched from its ``jpeg/`` part on."""
        parts = path_parts(text.strip())
        lowered = [part.lower() for part in parts]
        if "jpeg" in lowered:
            parts = parts[lowered.index("jpeg"):]
        return self.source.joinpath(*parts)

    def lookup(self, study: str, series: str) -> tuple[list[Path], str | None]:
        files = sorted({f for f in self._maps["series"].get(series, []) if f.is_file()})
        if files:
            return files, f"{DICOM_INFO_NAME} (series UID)"
        folder = self.source / "jpeg" / series
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg")
                       and not p.name.startswith(".")) if folder.is_dir() else []
        if files:
            return files, "jpeg/<series UID> folder"
        files = sorted({f for f in self._maps["study"].get(study, []) if f.is_file()})
        return (files, f"{DICOM_INFO_NAME} (study UID)") if files else ([], None)

    def looked_in(self) -> str:
        return f"{self.info} and {self.source / 'jpeg'}"


def resolve_cases(cases: list[Case], resolver: DicomResolver | JpegResolver) -> None:
    """Fill in each case's image file and the candidate files of each ROI row; a path matching nothing is an error
    naming the CSV, line, patient and path."""
    def files_of(text: str) -> list[Path]:
        study, series = uids_of(text) or ("", "")
        files, how = resolver.lookup(study, series)
        if how is not None:
            resolver.used[how] = resolver.used.get(how, 0) + 1
        return files

    for case in cases:
        row = case.rows[0]
        files = files_of(row.image)
        if not files:
            raise UserInputError(f"{row.where()}: image file path '{row.image}' matches no file (series and study "
                                 f"UID not found in {resolver.looked_in()})")
        if len(files) != 1:
            raise UserInputError(f"{row.where()}: image file path '{row.image}' matches {len(files)} files "
                                 f"({', '.join(str(f) for f in files[:3])}); expected one full mammogram")
        case.image = files[0]
        for row in case.rows:
            # the mask is told from the crop by content: every file of both columns' series is a candidate
            candidates = files_of(row.roi)
            if uids_of(row.crop) is not None:
                candidates += files_of(row.crop)
            candidates = sorted(set(candidates) - {case.image})
            if not candidates:
                raise UserInputError(f"{row.where()}: ROI mask file path '{row.roi}' matches no file (series and "
                                     f"study UID not found in {resolver.looked_in()})")
            case.roi_files.append(candidates)


# ----------------------------------------------------------------------------------------------------------------------
# layout and splits


def find_dicom_info(source: Path) -> Path | None:
    for candidate in (source / "csv" / DICOM_INFO_NAME, source / DICOM_INFO_NAME):
        if candidate.is_file():
            return candidate
    return None


def detect_layout(source: Path, layout: str) -> tuple[str, Path | None]:
    """``("dicom", None)`` or ``("jpeg", dicom_info.csv)`` for ``--layout`` auto, dicom or jpeg."""
    info = find_dicom_info(source)
    is_jpeg = (source / "jpeg").is_dir() and info is not None
    if layout in ("auto", "jpeg") and is_jpeg:
        return "jpeg", info
    if layout == "jpeg":
        raise UserInputError(f"--layout jpeg: {source} lacks {'jpeg/' if info else 'csv/dicom_info.csv'} (the "
                             f"Kaggle layout: jpeg/<SeriesInstanceUID>/1-1.jpg and csv/dicom_info.csv)")
    has_dicom = any(p.suffix.lower() == ".dcm" and not p.name.startswith(".") for p in source.rglob("*"))
    if has_dicom:
        return "dicom", None
    if layout == "dicom":
        raise UserInputError(f"--layout dicom: no .dcm files under {source}")
    raise UserInputError(f"{source} holds neither the TCIA DICOM release (.dcm files) nor the JPEG copy (jpeg/ and "
                         f"csv/dicom_info.csv); pass -i the CBIS-DDSM download")


def paper_split(groups: dict[str, str], seed: int, test_fraction: float = PAPER_TEST_FRACTION) -> set[str]:
    """The case ids drawn for testing: whole groups (patients), walked in a seeded order, taken while the test cases
    stay within round(test_fraction * cases); ``groups`` maps case id -> group."""
    members: dict[str, list[str]] = {}
    for case_id in sorted(groups):
        members.setdefault(groups[case_id], []).append(case_id)
    names = sorted(members)
    target = int(math.floor(test_fraction * len(groups) + 0.5))
    test: set[str] = set()
    for i in np.random.default_rng(seed).permutation(len(names)):
        if len(test) + len(members[names[i]]) <= target:
            test.update(members[names[i]])
        if len(test) == target:
            break
    return test


# ----------------------------------------------------------------------------------------------------------------------
# pixels


@dataclass
class Picture:
    """A read image: pixels (y, x) and the pixel spacing (y, x) in mm with the header it came from (or None)."""

    array: np.ndarray
    spacing: tuple[float, float] | None = None
    spacing_source: str | None = None


def read_dicom(path: Path) -> Picture:
    """A single-frame grey DICOM image (:func:`read_dicom_2d`: MONOCHROME1 inverted, spacing when the file has one)."""
    array, spacing, source, _ = read_dicom_2d(path)
    return Picture(array, spacing, source)


def read_jpeg(path: Path) -> Picture:
    """A JPEG (any PIL format) as grey values: 8-bit 'L' unless stored as one 16-bit channel."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("L", "I;16", "I;16L", "I;16B"):
                image = image.convert("L")
            array = np.array(image)
    except UnidentifiedImageError:
        raise UserInputError(f"cannot read JPEG file {path}: not an image file PIL can identify") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserInputError(f"cannot read JPEG file {path}: {exception_text(exc)}") from None
    return Picture(array)


def binary_mask(array: np.ndarray, lossy: bool) -> np.ndarray | None:
    """The mask (bool) of an ROI-mask-like array, or None if the array is not (nearly) binary.

    DICOM (``lossy`` False): zero and at most one other value; the mask is ``> 0``. JPEG: at most
    :data:`JPEG_MID_FRACTION` of the pixels lie between 1/8 and 7/8 of the maximum (compression blurs the edge);
    the mask is ``> 127`` for 8-bit data, else above half the maximum.
    """
    top = float(array.max()) if array.size else 0.0
    if top <= 0:
        return np.zeros(array.shape, bool)
    if lossy:
        middle = np.count_nonzero((array > top / 8) & (array < top * 7 / 8))
        if middle > JPEG_MID_FRACTION * array.size:
            return None
        return array > (JPEG_THRESHOLD if array.dtype == np.uint8 else top / 2)
    nonzero = array[array != 0]
    if np.any(nonzero != nonzero[0]):
        return None
    return array != 0


def label_of(case: Case, image_shape: tuple[int, int], read, lossy: bool) -> tuple[np.ndarray | None, tuple | None]:
    """``(label, None)``: the union of the case's ROI masks, or ``(None, (reason, detail))`` when it is skipped."""
    label = np.zeros(image_shape, bool)
    cache: dict[Path, np.ndarray | None] = {}
    for row, candidates in zip(case.rows, case.roi_files):
        fitting, misfits = [], []
        for path in candidates:
            if path not in cache:
                cache[path] = binary_mask(read(path).array, lossy)
            mask = cache[path]
            if mask is None:
                continue
            (fitting if mask.shape == image_shape else misfits).append((path, mask))
        if fitting:
            for _, mask in fitting:
                label |= mask
        elif misfits:
            path, mask = misfits[0]
            return None, ("mask_size_mismatch", f"{row.where()}: ROI mask {path} is {shape_text(mask.shape)} but "
                                                f"its mammogram {case.image} is {shape_text(image_shape)}")
        else:
            return None, ("no_roi_mask", f"{row.where()}: no binary ROI mask among "
                                         f"{', '.join(str(p) for p in candidates)}")
    return label, None


# ----------------------------------------------------------------------------------------------------------------------
# the dataset


def plan(source: Path, layout: str, abnormality: str) -> tuple[str, list[Case], DicomResolver | JpegResolver]:
    """Scan the source (CSVs, names and headers only): ``(layout, cases with their files, resolver)``."""
    if not source.is_dir():
        raise UserInputError(f"source folder {source} does not exist or is not a folder")
    layout, info = detect_layout(source, layout)
    csvs = find_case_csvs(source)
    rows = [row for path, part in csvs for row in read_case_csv(path, part)]
    cases = group_cases(rows, abnormality, [path for path, _ in csvs])
    resolver = JpegResolver(source, info) if layout == "jpeg" else DicomResolver(source)
    resolve_cases(cases, resolver)
    return layout, cases, resolver


def _relative(path: Path, source: Path) -> str:
    try:
        return str(path.resolve().relative_to(source.resolve()))
    except ValueError:
        return str(path)


def convert(source: str | Path, dataset_id: int, name: str | None = None, raw: str | None = None,
            overwrite: bool = False, layout: str = "auto", split: str = "official", seed: int = 0,
            max_size: int = DEFAULT_MAX_SIZE, abnormality: str = "mass", progress=None) -> Path:
    """Python API behind the CLI: write the dataset and return its folder."""
    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.datasets_conversion._common import raw_dataset_target
    from nnunet_ext.imageio import write_image

    for value, allowed, flag in ((layout, LAYOUTS, "--layout"), (split, SPLITS, "--split"),
                                 (abnormality, ABNORMALITIES, "--abnormality")):
        if value not in allowed:
            raise UserInputError(f"{flag} must be one of {', '.join(allowed)}, got '{value}'")
    check_max_size(max_size)
    source = Path(source)
    name = name or DEFAULT_NAMES[abnormality]
    folder, retire = raw_dataset_target(raw, dataset_id, name, overwrite)
    layout, cases, resolver = plan(source, layout, abnormality)
    if split == "official":
        for case in cases:
            case.split = "Tr" if case.part == "Training" else "Ts"
    else:
        test = paper_split({case.id: case.patient for case in cases}, seed)
        for case in cases:
            case.split = "Ts" if case.id in test else "Tr"
    read = read_jpeg if layout == "jpeg" else read_dicom
    lossy = layout == "jpeg"
    written: list[Case] = []
    records: dict[str, dict] = {}
    skipped: dict[str, dict] = {}
    with atomic_output_dir(folder, overwrite=overwrite, inputs=[source], retire=retire,
                           written_by=f"nnunet-ext convert {CONVERTER}") as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for index, case in enumerate(cases, start=1):
            picture = read(case.image)
            label, problem = label_of(case, picture.array.shape, read, lossy)
            if problem is not None:
                skipped[case.id] = {"reason": problem[0], "detail": problem[1], "split": case.split}
                if progress is not None:
                    progress(f"[{index}/{len(cases)}] {case.id}: skipped ({problem[0]})")
                continue
            spacing, spacing_source = picture.spacing, picture.spacing_source
            if spacing is None and isinstance(resolver, JpegResolver) and case.image in resolver.spacing:
                spacing, spacing_source = resolver.spacing[case.image]
            spacing, spacing_source = (spacing, spacing_source) if spacing else ((1.0, 1.0), "default 1.0")
            shape = output_shape(picture.array.shape, max_size)
            scale = [shape[k] / picture.array.shape[k] for k in range(2)]
            written_spacing = tuple(spacing[k] / scale[k] for k in range(2))
            write_image(tmp / f"images{case.split}" / f"{case.id}_0000{FILE_ENDING}",
                        shrink_image(picture.array, shape), written_spacing)
            write_image(tmp / f"labels{case.split}" / f"{case.id}{FILE_ENDING}", shrink_mask(label, shape),
                        written_spacing)
            written.append(case)
            records[case.id] = {
                "part": case.part, "patient": case.patient, "split": case.split,
                "image": _relative(case.image, source),
                "rois": [{"abnormality_id": row.abnormality_id, "pathology": row.pathology,
                          "csv": f"{row.csv.name} line {row.line}",
                          "candidates": [_relative(p, source) for p in files]}
                         for row, files in zip(case.rows, case.roi_files)],
                "size": list(picture.array.shape), "written_size": list(shape), "scale": scale,
                "spacing_source": spacing_source, "spacing": list(written_spacing)}
            if progress is not None:
                progress(f"[{index}/{len(cases)}] {case.id} -> images{case.split} ({len(case.rows)} ROI(s), "
                         f"{shape_text(picture.array.shape)} -> {shape_text(shape)})")
        if not written:
            raise UserInputError(f"no image left to convert: all {len(cases)} were skipped (e.g. "
                                 f"{next(iter(skipped.values()))['detail']})")
        counts: dict[str, int] = {}
        for entry in skipped.values():
            counts[entry["reason"]] = counts.get(entry["reason"], 0) + 1
        training = [case for case in written if case.split == "Tr"]
        defaulted = sum(1 for record in records.values() if record["spacing_source"] == "default 1.0")
        split_record = {"mode": split, "seed": seed,
                        "train_images": len(training), "test_images": len(written) - len(training)}
        if split == "paper":
            split_record.update(test_fraction=PAPER_TEST_FRACTION, drawn_from=len(cases), note=(
                "Mammo-SAM (MICCAI 2023): 75 % of all CBIS-DDSM mass images for training, 25 % for testing; the paper "
                "does not say how; drawn here with the seed, whole patients at a time (no patient on both sides)"))
        else:
            split_record["note"] = "the release's split: Training CSVs -> imagesTr, Test CSVs -> imagesTs"
        dataset = {
            "channel_names": {"0": CHANNEL}, "labels": {"background": 0, abnormality: 1},
            "numTraining": len(training), "file_ending": FILE_ENDING, "name": name,
            "description": f"CBIS-DDSM scanned-film mammograms ({layout} layout); label 1 = {abnormality}, the "
                           f"union of the image's ROI masks; imagesTs/labelsTs = the {split} test part",
            "reference": REFERENCE, "licence": "CC BY 3.0 (TCIA CBIS-DDSM)",
            "spacing_note": (f"{defaulted} of {len(written)} images carry no PixelSpacing/ImagerPixelSpacing: "
                             f"their spacing is 1.0 per source pixel (times the downsampling), not mm (the DDSM "
                             f"digitisers sampled at about 0.04-0.05 mm)" if defaulted else
                             "spacing in mm from PixelSpacing/ImagerPixelSpacing (times the downsampling)"),
            "split": split_record,
            "test_cases": [case.id for case in written if case.split == "Ts"],
            "case_groups": {case.id: case.patient for case in training},
            "skipped_images": {"counts": counts, "cases": skipped},
            "conversion": {
                "converter": CONVERTER, "source": str(source.resolve()), "layout": layout,
                "abnormality": abnormality, "resolved_with": dict(sorted(resolver.used.items())),
                "downsampling": {"max_size": max_size,
                                 "rule": ("none (full size)" if max_size == 0 else
                                          f"long side > {max_size} px scaled to {max_size} px: image area-averaged, "
                                          f"label = area-averaged mask >= 0.5, spacing x input/output size")},
                "cases": records},
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset, indent=2))
    if progress is not None and skipped:
        progress(f"skipped {len(skipped)} of {len(cases)} image(s): "
                 f"{', '.join(f'{reason} {count}' for reason, count in sorted(counts.items()))}")
        for case_id, entry in skipped.items():
            progress(f"  {case_id}: {entry['detail']}")
    return folder


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", dest="input", required=True,
                        help="CBIS-DDSM download: the TCIA DICOM tree with the case CSVs (and metadata.csv), or the "
                             "Kaggle JPEG copy (jpeg/, csv/) (read only, never modified)")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1..999)")
    parser.add_argument("--name", default=None,
                        help=f"dataset name (default {DEFAULT_NAMES['mass']}; {DEFAULT_NAMES['calcification']} with "
                             f"--abnormality calcification)")
    parser.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="source layout (default auto: jpeg/ + csv/dicom_info.csv -> jpeg, .dcm files -> dicom)")
    parser.add_argument("--split", choices=SPLITS, default="official",
                        help="official: the release's Training/Test CSVs; paper: a seeded 75/25 split of all images, "
                             "whole patients at a time (Mammo-SAM) (default official)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --split paper (default 0)")
    parser.add_argument("--max-size", "--max_size", dest="max_size", type=int, default=DEFAULT_MAX_SIZE, metavar="N",
                        help=f"shrink images whose long side exceeds N pixels to N (area averaging, spacing scaled); "
                             f"0 keeps the full size (default {DEFAULT_MAX_SIZE})")
    parser.add_argument("--abnormality", choices=ABNORMALITIES, default="mass",
                        help="which CSV rows become label 1 (default mass)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def run(args: argparse.Namespace) -> int:
    folder = convert(args.input, args.dataset_id, name=args.name, raw=args.raw, overwrite=args.overwrite,
                     layout=args.layout, split=args.split, seed=args.seed, max_size=args.max_size,
                     abnormality=args.abnormality, progress=print)
    print(f"wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.datasets_conversion._common import cli_main

    return cli_main(f"python -m {CONVERTER}", __doc__.splitlines()[0], configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
