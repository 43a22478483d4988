"""Convert TCIA Breast-MRI-NACT-Pilot (DICOM) into the DKM pair of nnU-Net raw datasets (DCE + pre-contrast only).

Dataset: Newitt D, Hylton N. "Single site breast DCE-MRI data and segmentations from patients undergoing neoadjuvant
chemotherapy", The Cancer Imaging Archive (2016). DKM (Lv et al., MICCAI 2023, Sec. 3) uses its 64 patients with a
pre-contrast scan and 2 post-contrast time points, 70/30 train/test split, tumour ground truth from the collection.

What the collection looks like (facts and where they come from):

* UCSF pilot study 1995-2002, 64 patients, 189 MRI studies (up to 4 visits per patient: before treatment, after the
  first cycle, between regimens, before surgery); 1.5 T GE Signa; the DCE acquisition is a unilateral *sagittal*
  fat-suppressed T1-weighted 3D fast gradient echo with one pre-contrast and usually two post-contrast phases, about
  2.5 and 7.5 min after injection. Each study also holds a signal enhancement ratio (SER) map, an early percent
  enhancement (PE) map and two DICOM SEG objects: a breast tissue mask and an enhancing tumour mask (PE >= 70 %
  inside a tumour volume of interest). Source: the TCIA collection page
  (wiki.cancerimagingarchive.net/display/Public/Breast-MRI-NACT-Pilot) as summarised in public notes on the
  collection; the SEG masks come from the functional tumour volume analysis, not from manual delineation.
* The three DCE phases are stored as ONE multi-phase series ("time sequences (Sagittal-IR_3DFGRE volume)" loaded as a
  multivolume by 3D Slicer, discourse.slicer.org topic 1471), whose files are not ordered by time point (same
  thread). UCSF's own loader for such folders (SlicerBreast_DCEMRI_FTV, ``multivolume_folder_sort.py``) separates
  phases by ContentTime for GE (TriggerTime / AcquisitionTime as fall-backs, TemporalPositionIdentifier for Philips)
  and orders slices by position.
* Series descriptions seen in the collection by other users' tooling: derived maps end with ``": PE1"`` / ``": SER"``;
  SEG objects are ``"PE Segmentation thresh=70"`` (some studies ``"VOI PE Segmentation thresh=70"``) for the tumour and
  ``"Breast Tissue Segmentation"`` for the breast. In the I-SPY 1 dictionary of the same UCSF lab, derived series
  numbers encode the DCE series number S0: PE = S0*10000+1001, SER = S0*10000+1000, SEGs = S0*10000+2000/2001.
* NBIA downloads are laid out ``Breast-MRI-NACT-Pilot/UCSF-BR-XX/<study folder>/<series folder>/*.dcm``.

Assumptions made here (document, do not trust blindly):

* Only metadata decides: patients are the top-level folders (``-i`` may also be the folder holding
  ``Breast-MRI-NACT-Pilot``), studies are grouped by StudyInstanceUID and ordered by StudyDate/StudyTime, series by
  SeriesInstanceUID; folder and file names and their order are never used.
* Tumour label: the SEG (or a mask image series) whose SeriesDescription matches ``PE Segmentation`` (preferred) or
  ``VOI PE Segmentation``, or ``--seg_description``; all its segments are merged into label 1. A study without one is
  an unlabelled case.
* DCE series: ``--dce_description`` if given; else the series the tumour SEG references (directly, or via the PE map
  it references, or via its own series number, using the S0*10000 rule); else the only original (non-DERIVED,
  non-diffusion) MR series holding several images per slice position.
* Phases: the images at each slice position are ordered in time by the first of TemporalPositionIdentifier,
  TriggerTime, AcquisitionTime, ContentTime, InstanceNumber that is present on every image, distinct at every
  position and orders whole phases (all images of phase p before all of phase p+1); phase 0 is the pre-contrast
  image, phases 1..``--n_post`` the post-contrast images (later phases are dropped and recorded).
* Geometry from ImageOrientationPatient, PixelSpacing and ImagePositionPatient (slices sorted along the normal
  row x column); pixel values are ``stored * RescaleSlope + RescaleIntercept`` as float32.
* Phases stored as separate single-phase series are not supported (reported as a missing phase); use
  ``dce_nifti_folder`` after converting such data to NIfTI.
* DKM does not say which visits it used. ``--visits first`` (default) converts the earliest study of every patient
  (case id = patient folder name); ``all`` converts every study (case id ``<patient>_visit<n>``, chronological) and
  keeps a patient's visits in one split.

``--subtraction`` appends a channel ``SUB`` = post1 - pre (float32, raw intensities) to the DCE dataset (see
``_dce_common``).

Errors (UserInputError naming patient and file): unreadable/corrupt DICOM, missing phase (fewer than 1 + n_post time
points, or a phase missing slices), no or ambiguous DCE series, inconsistent geometry (non-uniform slice spacing,
mixed orientations, segmentation off the DCE grid unless ``--resample_to_pre``). ``--skip_incomplete`` turns the
missing-phase/no-DCE cases into skipped cases listed in dataset.json instead.

Example::

    python -m datasets_conversion.breast_mri_nact_pilot -i /data/Breast-MRI-NACT-Pilot -d 501 --pre_only_id 502
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_ext.errors import UserInputError

from nnunet_ext.datasets_conversion._dce_common import (CasePlan, LoadedCase, add_common_arguments, cli_main,
                                                        raw_root_from, write_paired_datasets)
from nnunet_ext.geometry import GEOMETRY_TOLERANCE_MM, fmt_vector

CONVERTER = "datasets_conversion.breast_mri_nact_pilot"
DEFAULT_NAME = "BreastMRINACTPilot"
COLLECTION_FOLDER = "Breast-MRI-NACT-Pilot"
SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
DEFAULT_SEG_PATTERNS = (r"^\s*PE\s*Segmentation", r"VOI\s*PE\s*Segmentation")
TEMPORAL_KEYS = ("TemporalPositionIdentifier", "TriggerTime", "AcquisitionTime", "ContentTime", "InstanceNumber")
_DIFFUSION_PATTERN = re.compile(r"diff|dwi|adc|trace", re.IGNORECASE)
_HEADER_TAGS = ["PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "SeriesInstanceUID", "SeriesNumber",
                "SeriesDescription", "Modality", "SOPClassUID", "ImageType", "ImagePositionPatient",
                "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "ReferencedSeriesSequence",
                "NumberOfFrames", *TEMPORAL_KEYS]
REFERENCE = ("Newitt D, Hylton N. Single site breast DCE-MRI data and segmentations from patients undergoing "
             "neoadjuvant chemotherapy. The Cancer Imaging Archive (2016). "
             "https://doi.org/10.7937/K9/TCIA.2016.QHsyhJKy")


# ----------------------------------------------------------------------------------------------------------------------
# header scan


@dataclass
class DicomHeader:
    """The few header values the converter needs from one DICOM file (no pixel data)."""

    path: Path
    study_uid: str
    study_date: str
    study_time: str
    series_uid: str
    series_number: int | None
    series_description: str
    modality: str
    sop_class_uid: str
    image_type: tuple[str, ...]
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    rows: int | None
    columns: int | None
    times: dict[str, float]
    referenced_series: tuple[str, ...]

    @property
    def is_seg(self) -> bool:
        return self.modality == "SEG" or self.sop_class_uid == SEG_SOP_CLASS_UID


def _tm_seconds(value) -> float:
    """DICOM TM ``HHMMSS.ffffff`` (or the old ``HH:MM:SS``) as seconds after midnight."""
    text = str(value).replace(":", "").strip()
    if not text or not text.split(".")[0].isdigit():
        raise ValueError(f"not a DICOM time: {value!r}")
    hours, minutes, seconds = int(text[0:2]), int(text[2:4] or 0), float(text[4:] or 0)
    return hours * 3600 + minutes * 60 + seconds


def _time_values(ds) -> dict[str, float]:
    times = {}
    for key in TEMPORAL_KEYS:
        value = ds.get(key)
        if value is None or str(value).strip() == "":
            continue
        try:
            times[key] = _tm_seconds(value) if key in ("AcquisitionTime", "ContentTime") else float(value)
        except (TypeError, ValueError):
            continue
    return times


def read_header(path: Path, where: str) -> DicomHeader:
    """Read the header of one DICOM file; an unreadable file is a UserInputError naming patient and file."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        referenced = tuple(str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])
                           if "SeriesInstanceUID" in item)
        position = ds.get("ImagePositionPatient")
        orientation = ds.get("ImageOrientationPatient")
        spacing = ds.get("PixelSpacing")
        series_number = ds.get("SeriesNumber")
        header = DicomHeader(
            path=path, study_uid=str(ds.get("StudyInstanceUID", "")), study_date=str(ds.get("StudyDate", "")),
            study_time=str(ds.get("StudyTime", "")), series_uid=str(ds.get("SeriesInstanceUID", "")),
            series_number=int(series_number) if series_number not in (None, "") else None,
            series_description=str(ds.get("SeriesDescription", "")), modality=str(ds.get("Modality", "")),
            sop_class_uid=str(ds.get("SOPClassUID", "")),
            image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or [])),
            position=np.array([float(v) for v in position]) if position else None,
            orientation=np.array([float(v) for v in orientation]) if orientation else None,
            pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing else None,
            rows=int(ds.Rows) if "Rows" in ds else None, columns=int(ds.Columns) if "Columns" in ds else None,
            times=_time_values(ds), referenced_series=referenced)
    except Exception as exc:  # pydicom raises many types for corrupt files; all mean "unreadable"
        raise UserInputError(f"{where}: cannot read DICOM file {path}: {_short(exc)}") from None
    if not header.series_uid or not header.study_uid:
        raise UserInputError(f"{where}: DICOM file {path} lacks StudyInstanceUID/SeriesInstanceUID")
    return header


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _is_dicom_candidate(path: Path) -> bool:
    """Files that should be DICOM: ``*.dcm`` or no suffix (NBIA names are ``1-01.dcm``); hidden files skipped."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in (".dcm", "")


def _dicom_candidates(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if _is_dicom_candidate(p))


def patient_folders(source: Path) -> list[Path]:
    """Patient folders of the collection: sub-folders of ``source`` (or of ``source/Breast-MRI-NACT-Pilot``)."""
    if not source.is_dir():
        raise UserInputError(f"source folder {source} does not exist or is not a folder")
    if (source / COLLECTION_FOLDER).is_dir():
        source = source / COLLECTION_FOLDER
    folders = [p for p in sorted(source.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    folders = [p for p in folders if any(_is_dicom_candidate(f) for f in p.rglob("*"))]
    if not folders:
        raise UserInputError(f"no patient folders with DICOM files (e.g. UCSF-BR-01/<study>/<series>/*.dcm) in "
                             f"{source}")
    return folders


# ----------------------------------------------------------------------------------------------------------------------
# series analysis


@dataclass
class Series:
    uid: str
    headers: list[DicomHeader]

    @property
    def first(self) -> DicomHeader:
        return min(self.headers, key=lambda h: str(h.path))

    @property
    def description(self) -> str:
        return self.first.series_description

    @property
    def number(self) -> int | None:
        return self.first.series_number

    def label(self) -> str:
        return f"series #{self.number} '{self.description}'"


@dataclass
class StackLayout:
    """Images of a series arranged by time point (outer list) and slice position along the normal (inner list)."""

    phases: list[list[DicomHeader]]
    normal: np.ndarray
    timing_key: str | None
    time_points: list[float] = field(default_factory=list)


@dataclass
class StackProblem:
    """Why a series cannot be arranged into phases x slices; ``incomplete`` marks a missing time point."""

    reason: str
    incomplete: bool = False

    def __str__(self) -> str:
        return self.reason


def _slice_normal(orientation: np.ndarray) -> np.ndarray:
    normal = np.cross(orientation[:3], orientation[3:6])
    return normal / np.linalg.norm(normal)


def analyse_stack(headers: Sequence[DicomHeader]) -> StackLayout | StackProblem:
    """Arrange single-frame images into phases x slices, or return why that is impossible.

    Images are grouped by their position along the slice normal; every position must hold the same number of images
    (one per time point). With several per position they are ordered in time by the first usable key of
    ``TEMPORAL_KEYS`` (present everywhere, distinct at each position, and separating whole phases).
    """
    if any(h.position is None or h.orientation is None or h.pixel_spacing is None for h in headers):
        return StackProblem("images lack ImagePositionPatient/ImageOrientationPatient/PixelSpacing")
    reference = headers[0]
    for h in headers:
        if not np.allclose(h.orientation, reference.orientation, atol=1e-4):
            return StackProblem(f"mixed slice orientations ({h.path})")
        if (h.rows, h.columns) != (reference.rows, reference.columns):
            return StackProblem(f"mixed image sizes ({h.path})")
        if not np.allclose(h.pixel_spacing, reference.pixel_spacing, atol=1e-4):
            return StackProblem(f"mixed pixel spacings ({h.path})")
    normal = _slice_normal(reference.orientation)
    ordered = sorted(headers, key=lambda h: float(h.position @ normal))
    positions: list[list[DicomHeader]] = []
    for h in ordered:
        if positions and abs(float((h.position - positions[-1][0].position) @ normal)) <= GEOMETRY_TOLERANCE_MM:
            positions[-1].append(h)
        else:
            positions.append([h])
    counts = sorted({len(group) for group in positions})
    if len(counts) > 1:
        short = next(group for group in positions if len(group) == counts[0])
        return StackProblem(f"slice positions hold {counts[0]} to {counts[-1]} images, so a time point is missing "
                            f"slices (e.g. at {short[0].path})", incomplete=True)
    n_phases = counts[0]
    if n_phases == 1:
        return StackLayout(phases=[[group[0] for group in positions]], normal=normal, timing_key=None)
    for key in TEMPORAL_KEYS:
        if not all(key in h.times for h in headers):
            continue
        by_time = [sorted(group, key=lambda h: h.times[key]) for group in positions]
        if any(len({h.times[key] for h in group}) != n_phases for group in by_time):
            continue
        phases = [[group[p] for group in by_time] for p in range(n_phases)]
        bounds = [(min(h.times[key] for h in phase), max(h.times[key] for h in phase)) for phase in phases]
        if all(bounds[p][1] < bounds[p + 1][0] for p in range(n_phases - 1)):
            return StackLayout(phases=phases, normal=normal, timing_key=key,
                               time_points=[float(np.median([h.times[key] for h in phase])) for phase in phases])
    return StackProblem(f"{n_phases} images per slice position but none of {', '.join(TEMPORAL_KEYS)} orders them "
                        f"into {n_phases} time points")


# ----------------------------------------------------------------------------------------------------------------------
# study selection


@dataclass
class StudySelection:
    """What one study contributes: the DCE phases to read and the tumour segmentation (if any)."""

    dce: Series
    layout: StackLayout
    seg: Series | None
    provenance: dict


class IncompleteStudy(Exception):
    """A study without a usable multi-phase DCE series (missing phase); skippable with --skip_incomplete."""


def _matching(series: Sequence[Series], pattern: str) -> list[Series]:
    regex = re.compile(pattern, re.IGNORECASE)
    return [s for s in series if regex.search(s.description)]


def find_tumour_segmentation(series: Sequence[Series], seg_description: str | None, where: str) -> Series | None:
    """The tumour mask series of a study (SEG object or mask image series), or None for an unlabelled study."""
    for pattern in ([seg_description] if seg_description else DEFAULT_SEG_PATTERNS):
        found = _matching(series, pattern)
        if len(found) > 1:
            raise UserInputError(f"{where}: several series match the segmentation pattern '{pattern}': "
                                 f"{'; '.join(s.label() for s in found)} (e.g. {found[0].first.path}); "
                                 f"choose one with --seg_description")
        if found:
            return found[0]
    return None


def find_dce_series(series: Sequence[Series], layouts: dict[str, StackLayout | StackProblem], seg: Series | None,
                    dce_description: str | None, where: str, first_file: Path) -> Series:
    """Pick the DCE series of a study from metadata only (see the module docstring for the order of the rules)."""
    multi_phase = {s.uid: s for s in series
                   if isinstance(layouts.get(s.uid), StackLayout) and len(layouts[s.uid].phases) > 1}
    if dce_description:
        found = [s for s in _matching(series, dce_description) if not s.first.is_seg]
        if not found:
            raise IncompleteStudy(f"{where}: missing phase: no series matches --dce_description "
                                  f"'{dce_description}' in the study of {first_file}")
        if len(found) > 1:
            raise UserInputError(f"{where}: several series match --dce_description '{dce_description}': "
                                 f"{'; '.join(s.label() for s in found)} (study file {first_file})")
        return found[0]
    by_uid = {s.uid: s for s in series}
    by_number: dict[int, list[Series]] = {}
    for s in series:
        if s.number is not None:
            by_number.setdefault(s.number, []).append(s)

    def from_number(number: int | None) -> Series | None:
        # I-SPY 1 / UCSF numbering of derived objects: S0 * 10000 + 1000..2001 refers to DCE series S0
        if number is None or number < 10000:
            return None
        hits = [s for s in by_number.get(number // 10000, []) if s.uid in multi_phase]
        return hits[0] if len(hits) == 1 else None

    if seg is not None:
        for uid in seg.first.referenced_series:
            if uid in multi_phase:
                return multi_phase[uid]
            if uid in by_uid and (hit := from_number(by_uid[uid].number)) is not None:
                return hit
        if (hit := from_number(seg.number)) is not None:
            return hit
    candidates = [s for s in multi_phase.values()
                  if "DERIVED" not in s.first.image_type and not s.first.is_seg
                  and not _DIFFUSION_PATTERN.search(s.description)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        reasons = "; ".join(f"{s.label()}: {layouts[s.uid]}" for s in series
                            if isinstance(layouts.get(s.uid), StackProblem) and layouts[s.uid].incomplete)
        raise IncompleteStudy(f"{where}: missing phase: no multi-phase DCE series (pre + post-contrast time points) "
                              f"in the study of {first_file}" + (f" ({reasons})" if reasons else ""))
    raise UserInputError(f"{where}: several multi-phase series could be the DCE series: "
                         f"{'; '.join(s.label() for s in sorted(candidates, key=lambda s: s.number or 0))} "
                         f"(study file {first_file}); choose one with --dce_description")


def select_study(headers: Sequence[DicomHeader], n_post: int, where: str, seg_description: str | None,
                 dce_description: str | None) -> StudySelection:
    """Choose the DCE phases and the tumour segmentation of one study from its headers."""
    grouped: dict[str, list[DicomHeader]] = {}
    for h in headers:
        grouped.setdefault(h.series_uid, []).append(h)
    series = sorted((Series(uid, hs) for uid, hs in grouped.items()),
                    key=lambda s: (s.number if s.number is not None else -1, s.uid))
    first_file = min(h.path for h in headers)
    layouts = {s.uid: analyse_stack(s.headers) for s in series if not s.first.is_seg}
    seg = find_tumour_segmentation(series, seg_description, where)
    dce = find_dce_series(series, layouts, seg, dce_description, where, first_file)
    layout = layouts.get(dce.uid)
    if isinstance(layout, StackProblem):
        error = IncompleteStudy if layout.incomplete else UserInputError
        raise error(f"{where}: DCE {dce.label()} cannot be split into time points: {layout}")
    available = len(layout.phases)
    if available < 1 + n_post:
        raise IncompleteStudy(f"{where}: missing phase: DCE {dce.label()} has {available} time point(s) "
                              f"(pre + {available - 1} post-contrast), need pre + {n_post} (e.g. {dce.first.path})")
    layout.phases = layout.phases[:1 + n_post]
    provenance = {
        "study_uid": dce.first.study_uid, "study_date": dce.first.study_date,
        "dce_series": {"uid": dce.uid, "number": dce.number, "description": dce.description},
        "timing_tag": layout.timing_key, "time_points": layout.time_points[:1 + n_post],
        "time_points_available": available,
        "segmentation_series": (None if seg is None else
                                {"uid": seg.uid, "number": seg.number, "description": seg.description,
                                 "modality": seg.first.modality}),
    }
    return StudySelection(dce=dce, layout=layout, seg=seg, provenance=provenance)


# ----------------------------------------------------------------------------------------------------------------------
# pixel data


def _read_dataset(path: Path, where: str):
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as exc:  # corrupt or truncated pixel data
        raise UserInputError(f"{where}: cannot read the pixel data of DICOM file {path}: {_short(exc)}") from None
    return ds, pixels


def _grid(headers: Sequence[DicomHeader], normal: np.ndarray, where: str, what: str):
    """Origin, spacing (x, y, z) and direction of slices sorted along ``normal``; checks a regular stack."""
    first = headers[0]
    row, column = first.orientation[:3], first.orientation[3:6]
    offsets = np.array([float((h.position - first.position) @ normal) for h in headers])
    if len(headers) > 1:
        dz = (offsets[-1] - offsets[0]) / (len(headers) - 1)
        worst = int(np.argmax(np.abs(offsets - dz * np.arange(len(headers)))))
        if abs(offsets[worst] - dz * worst) > GEOMETRY_TOLERANCE_MM:
            raise UserInputError(f"{where}: {what} has non-uniform slice spacing (slice {headers[worst].path} is "
                                 f"{offsets[worst] - dz * worst:+.3f} mm off a regular {dz:.3f} mm grid)")
    else:
        dz = 1.0
    for h in headers:
        in_plane = (h.position - first.position) - float((h.position - first.position) @ normal) * normal
        if np.linalg.norm(in_plane) > GEOMETRY_TOLERANCE_MM:
            raise UserInputError(f"{where}: {what} is not a straight slice stack: {h.path} is shifted "
                                 f"{np.linalg.norm(in_plane):.3f} mm in-plane")
    spacing = (first.pixel_spacing[1], first.pixel_spacing[0], float(dz))  # PixelSpacing is (row, column) spacing
    direction = np.column_stack([row, column, normal])
    return first.position, spacing, direction


def _image(volume: np.ndarray, origin, spacing, direction):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume)
    image.SetOrigin([float(v) for v in origin])
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in direction.ravel()])
    return image


def read_stack(headers: Sequence[DicomHeader], normal: np.ndarray, where: str, what: str):
    """Read sorted single-frame slices into a float32 SimpleITK image (rescale slope/intercept applied)."""
    origin, spacing, direction = _grid(headers, normal, where, what)
    slices = []
    for h in headers:
        ds, pixels = _read_dataset(h.path, where)
        if pixels.shape != (h.rows, h.columns):
            raise UserInputError(f"{where}: DICOM file {h.path} holds pixel data of shape {pixels.shape}, "
                                 f"expected one {h.rows}x{h.columns} frame")
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        slices.append(pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept))
    return _image(np.stack(slices), origin, spacing, direction)


def _frame_item(ds, index: int, name: str):
    """First item of functional group ``name`` for frame ``index``: the per-frame one, else the shared one."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    for group in ([per_frame[index]] if index < len(per_frame) else []) + list(shared[:1]):
        items = group.get(name)
        if items:
            return items[0]
    return None


def read_segmentation_object(path: Path, reference, where: str, resample: bool):
    """Read a DICOM SEG (all segments merged) onto the grid of ``reference``; return (label image, resampled).

    Frames must lie on the reference grid (same orientation, pixel spacing and size, positions on its slices);
    otherwise the SEG is rebuilt on its own grid and resampled (nearest neighbour) if ``resample`` is set, else that
    is a UserInputError naming the file.
    """
    import SimpleITK as sitk

    ds, pixels = _read_dataset(path, where)
    frames = pixels[None] if pixels.ndim == 2 else pixels
    if ds.get("SegmentationType", "BINARY") == "FRACTIONAL":
        masks = frames >= max(int(ds.get("MaximumFractionalValue", 1)), 1) / 2
    else:
        masks = frames > 0
    geometry = []
    for index in range(frames.shape[0]):
        plane = _frame_item(ds, index, "PlanePositionSequence")
        orientation = _frame_item(ds, index, "PlaneOrientationSequence")
        measures = _frame_item(ds, index, "PixelMeasuresSequence")
        if plane is None or orientation is None or measures is None:
            raise UserInputError(f"{where}: segmentation {path} lacks the position/orientation/pixel spacing of "
                                 f"frame {index + 1}")
        geometry.append((np.array([float(v) for v in plane.ImagePositionPatient]),
                         np.array([float(v) for v in orientation.ImageOrientationPatient]),
                         (float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1])), measures))

    size = reference.GetSize()
    spacing = np.array(reference.GetSpacing())
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    origin = np.array(reference.GetOrigin())
    volume = np.zeros((size[2], size[1], size[0]), dtype=np.uint8)
    problem = None
    for index, (position, orientation, pixel_spacing, _) in enumerate(geometry):
        index_xyz = direction.T @ (position - origin) / spacing
        slice_index = int(round(index_xyz[2]))
        if not np.allclose(orientation, np.concatenate([direction[:, 0], direction[:, 1]]), atol=1e-4):
            problem = f"frame {index + 1} has orientation {fmt_vector(orientation, 3)}"
        elif not np.allclose(pixel_spacing, (spacing[1], spacing[0]), atol=1e-4):
            problem = f"frame {index + 1} has pixel spacing {fmt_vector(pixel_spacing)}"
        elif frames.shape[1:] != (size[1], size[0]):
            problem = f"frames are {frames.shape[2]}x{frames.shape[1]} pixels instead of {size[0]}x{size[1]}"
        elif (np.any(np.abs(index_xyz[:2] * spacing[:2]) > GEOMETRY_TOLERANCE_MM)
              or abs(index_xyz[2] - slice_index) * spacing[2] > GEOMETRY_TOLERANCE_MM
              or not 0 <= slice_index < size[2]):
            problem = f"frame {index + 1} at {fmt_vector(position, 6)} is not on a pre-contrast slice"
        if problem:
            break
        volume[slice_index] |= masks[index].astype(np.uint8)
    if problem is None:
        label = sitk.GetImageFromArray(volume)
        label.CopyInformation(reference)
        return label, False
    if not resample:
        raise UserInputError(f"{where}: segmentation {path} is not on the pre-contrast grid ({problem}); pass "
                             f"--resample_to_pre to resample it onto the pre-contrast image")
    own = _segmentation_on_own_grid(masks, geometry, where, path)
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(reference)
    resampler.SetInterpolator(sitk.sitkNearestNeighbor)
    resampler.SetOutputPixelType(sitk.sitkUInt8)
    resampler.SetDefaultPixelValue(0)
    return resampler.Execute(own), True


def _segmentation_on_own_grid(masks: np.ndarray, geometry, where: str, path: Path):
    """Stack SEG frames on the regular grid they define (slice step from the SEG header or the frame positions)."""
    orientation = geometry[0][1]
    if any(not np.allclose(g[1], orientation, atol=1e-4) for g in geometry):
        raise UserInputError(f"{where}: segmentation {path} mixes frame orientations")
    normal = _slice_normal(orientation)
    offsets = np.array([float((g[0] - geometry[0][0]) @ normal) for g in geometry])
    base = int(np.argmin(offsets))
    offsets -= offsets[base]
    measures = geometry[0][3]
    step = float(measures.get("SpacingBetweenSlices") or measures.get("SliceThickness") or 0)
    distinct = np.unique(np.round(offsets, 3))
    if step <= 0:
        step = float(np.min(np.diff(distinct))) if len(distinct) > 1 else 1.0
    indices = np.round(offsets / step).astype(int)
    if np.any(np.abs(offsets - indices * step) > GEOMETRY_TOLERANCE_MM):
        raise UserInputError(f"{where}: segmentation {path} frames do not lie on a regular slice grid")
    volume = np.zeros((indices.max() + 1,) + masks.shape[1:], dtype=np.uint8)
    for index, mask in zip(indices, masks):
        volume[index] |= mask.astype(np.uint8)
    row_spacing, column_spacing = geometry[0][2]
    direction = np.column_stack([orientation[:3], orientation[3:6], normal])
    return _image(volume, geometry[base][0], (column_spacing, row_spacing, step), direction)


# ----------------------------------------------------------------------------------------------------------------------
# cases


def _case_loader(selection: StudySelection, where: str, resample: bool):
    def load() -> LoadedCase:
        layout = selection.layout
        names = ["pre"] + [f"post{k}" for k in range(1, len(layout.phases))]
        images = [read_stack(phase, layout.normal, where, f"{name} phase of DCE {selection.dce.label()}")
                  for name, phase in zip(names, layout.phases)]
        sources = [f"{selection.dce.label()} {name} phase (e.g. {phase[0].path})"
                   for name, phase in zip(names, layout.phases)]
        label, label_source, resampled = None, None, []
        seg = selection.seg
        if seg is not None:
            if seg.first.is_seg:
                if len(seg.headers) != 1:
                    raise UserInputError(f"{where}: segmentation {seg.label()} has {len(seg.headers)} SEG files "
                                         f"(e.g. {seg.first.path}); expected one")
                label, was_resampled = read_segmentation_object(seg.first.path, images[0], where, resample)
                label_source = str(seg.first.path)
                resampled = ["seg"] if was_resampled else []
            else:
                mask_layout = analyse_stack(seg.headers)
                if isinstance(mask_layout, StackProblem) or len(mask_layout.phases) != 1:
                    reason = mask_layout if isinstance(mask_layout, StackProblem) else "several time points"
                    raise UserInputError(f"{where}: mask series {seg.label()} is not a single slice stack "
                                         f"({reason}; e.g. {seg.first.path})")
                mask = read_stack(mask_layout.phases[0], mask_layout.normal, where, f"mask {seg.label()}")
                import SimpleITK as sitk

                label = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
                label_source = f"{seg.label()} (e.g. {seg.first.path})"
        return LoadedCase(images=images, image_sources=sources, label=label, label_source=label_source,
                          resampled=resampled)
    return load


def _study_order(headers: Sequence[DicomHeader]) -> tuple[str, str, str]:
    first = headers[0]
    return first.study_date, first.study_time, first.study_uid


def plan_patient(folder: Path, n_post: int, visits: str, seg_description: str | None, dce_description: str | None,
                 resample: bool, skip_incomplete: bool) -> tuple[list[CasePlan], dict[str, str]]:
    """Plans for the chosen visit(s) of one patient folder, and the visits skipped as incomplete (id -> reason)."""
    patient = folder.name
    studies: dict[str, list[DicomHeader]] = {}
    for path in _dicom_candidates(folder):
        header = read_header(path, f"patient {patient}")
        studies.setdefault(header.study_uid, []).append(header)
    ordered = sorted(studies.values(), key=_study_order)
    chosen = ordered[:1] if visits == "first" else ordered
    plans, skipped = [], {}
    for visit, headers in enumerate(chosen, start=1):
        case_id = patient if visits == "first" else f"{patient}_visit{visit}"
        where = f"patient {patient}" + ("" if visits == "first" else f" visit {visit}")
        try:
            selection = select_study(headers, n_post, where, seg_description, dce_description)
        except IncompleteStudy as exc:
            if not skip_incomplete:
                raise UserInputError(str(exc)) from None
            skipped[case_id] = str(exc)
            continue
        plans.append(CasePlan(case_id=case_id, labelled=selection.seg is not None,
                              load=_case_loader(selection, where, resample), where=where, group=patient,
                              provenance={"patient": patient, "visit": visit, **selection.provenance}))
    return plans, skipped


def convert(source: str | Path, dataset_id: int, pre_only_id: int, name: str = DEFAULT_NAME, raw: str | None = None,
            overwrite: bool = False, test_fraction: float = 0.3, seed: int = 0, resample_to_pre: bool = False,
            n_post: int = 2, visits: str = "first", seg_description: str | None = None,
            dce_description: str | None = None, skip_incomplete: bool = False, progress=None,
            subtraction: bool = False) -> tuple[Path, Path]:
    """Python API behind the CLI: write both datasets and return their folders (DCE, pre-contrast only)."""
    source = Path(source)
    if n_post < 1:
        raise UserInputError(f"--n_post must be >= 1, got {n_post}")
    if visits not in ("first", "all"):
        raise UserInputError(f"--visits must be 'first' or 'all', got '{visits}'")
    for option, pattern in (("--seg_description", seg_description), ("--dce_description", dce_description)):
        if pattern:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise UserInputError(f"{option} '{pattern}' is not a valid regular expression: {exc}") from None
    raw_root = raw_root_from(raw)
    plans, skipped = [], {}
    for folder in patient_folders(source):
        if progress is not None:
            progress(f"scanning {folder.name}")
        patient_plans, patient_skipped = plan_patient(folder, n_post, visits, seg_description, dce_description,
                                                      resample_to_pre, skip_incomplete)
        plans += patient_plans
        skipped.update(patient_skipped)
    return write_paired_datasets(
        plans, raw_root=raw_root, source=source, dce_id=dataset_id, pre_only_id=pre_only_id, name=name,
        n_post=n_post, test_fraction=test_fraction, seed=seed, overwrite=overwrite, resample_to_pre=resample_to_pre,
        converter=CONVERTER,
        description=(f"TCIA Breast-MRI-NACT-Pilot DCE-MRI ({'earliest study' if visits == 'first' else 'all studies'}"
                     f" per patient): channel 0 pre-contrast, channels 1..{n_post} post-contrast time points; "
                     f"label 1 = tumour mask of the collection (PE >= 70 % in the tumour VOI)"),
        reference=REFERENCE, licence="TCIA data usage policy of the Breast-MRI-NACT-Pilot collection",
        extra_json={"skipped_cases": skipped} if skipped else None, progress=progress, subtraction=subtraction)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, DEFAULT_NAME)
    parser.add_argument("--n_post", type=int, default=2,
                        help="post-contrast time points per case (default 2, as in DKM Sec. 3)")
    parser.add_argument("--visits", choices=("first", "all"), default="first",
                        help="convert the earliest study of each patient (default) or every study")
    parser.add_argument("--seg_description", default=None,
                        help="regex for the SeriesDescription of the tumour mask (default: 'PE Segmentation', "
                             "then 'VOI PE Segmentation')")
    parser.add_argument("--dce_description", default=None,
                        help="regex for the SeriesDescription of the multi-phase DCE series (default: found from "
                             "the segmentation's references, else the only multi-phase original series)")
    parser.add_argument("--skip_incomplete", action="store_true",
                        help="skip studies with a missing phase / no DCE series (listed in dataset.json "
                             "'skipped_cases') instead of stopping with an error")


def run(args: argparse.Namespace) -> int:
    folders = convert(args.input, args.dataset_id, args.pre_only_id, name=args.name, raw=args.raw,
                      overwrite=args.overwrite, test_fraction=args.test_fraction, seed=args.seed,
                      resample_to_pre=args.resample_to_pre, n_post=args.n_post, visits=args.visits,
                      seg_description=args.seg_description, dce_description=args.dce_description,
                      skip_incomplete=args.skip_incomplete, progress=print, subtraction=args.subtraction)
    for folder in folders:
        print(f"wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli_main(f"python -m {CONVERTER}", __doc__.splitlines()[0], configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
