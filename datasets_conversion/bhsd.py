"""Convert the BHSD brain-hemorrhage CT release into an nnU-Net raw dataset (3D CT; EDH, IPH, IVH, SAH, SDH).

BHSD (Wu et al., MLMI/MICCAI workshop 2023) reconstructs head CT volumes from the RSNA 2019 slices: 192 with
pixel-level labels of five bleed types, about 2,000 more with RSNA's slice-level labels only. Source layout (the
HuggingFace release WuBiao/BHSD, label_192.zip and unlabel_1980.zip, earlier unlabel_2000.zip; the split file from
github.com/White65534/BHSD)::

    SRC/label_192/images/NAME.nii.gz             CT volume (NAME = ID_<patient>_ID_<study>: ID_0237f3c9_ID_40015688b9)
    SRC/label_192/ground truths/NAME.nii.gz      its segmentation, values 0..5 (note the space in the folder name)
    SRC/dataset.json                             the official 96/96 split (nnU-Net v1 style: "training": [{"image":
                                                 "./imagesTr/NAME.nii.gz", "label": ...}], "test": ["./imagesTs/..."])
                                                 (also found as SRC/label_192/dataset.json, or given with --split)
    SRC/unlabel_1980/NAME.nii.gz                 the pool: scans without pixel labels (any SRC/unlabel*/ folder, its
                                                 images/ subfolder, or the folder given with --pool)
    SRC/*.csv                                    slice-level labels of the pool (the only CSV in the pool folder or in
                                                 SRC, or the file given with --csv); read for --negatives only

-i may also be the label_192 folder itself. The HuggingFace card says the label_192.zip files "need to be suffixed
nii.gz": a file named ``ID_<patient>_ID_<study>`` without suffix is read as NIfTI too (through a temporary copy; the
source stays as it is).

Labels (the release's dataset.json): 0 background, 1 EDH (epidural), 2 IPH (intraparenchymal), 3 IVH
(intraventricular), 4 SAH (subarachnoid), 5 SDH (subdural). Channel 0 is "CT" (nnU-Net's CT normalisation). Case ids
are the release's file names. The output holds:

* imagesTr/labelsTr: the 96 official training scans, then ``--negatives N`` pool scans without bleeding on any slice
  (per the CSV) with an all-zero label (dataset.json ``negative_cases``; the paper's best was 96 + 200, Table 2), then
  ``--unlabeled N`` other pool scans with an all-background placeholder label (``unlabeled_cases`` and
  ``unlabeled_cases_note``, the convention of ``nnunet_ext.synth``; the paper's semi-supervised runs used 500).
  A scan is never both. Without ``--seed`` the first N in sorted order are taken, with it a seeded sample.
* imagesTs/labelsTs: the 96 official test scans.

``case_groups`` maps every training case to its patient, so grouped folds keep a patient's scans together.

What the release does not say, and this converter chose (the files are only read, never modified):

* Patient ids: RSNA ids are ``ID_`` + 8 hex digits (PatientID) and ``ID_`` + 10 hex digits (StudyInstanceUID), and the
  file names are ``ID_<8 hex>_ID_<10 hex>``, so the first part is read as the patient (95 patients in the 96 official
  training scans, none shared with the test scans, as the paper states). A CSV ``PatientID`` column takes precedence
  for pool scans; a name of another form makes the case its own group. A patient in both official splits is an error;
  pool scans of an official test patient, and pool files named like a pixel-labelled scan, are never added (their
  counts are recorded in ``conversion.excluded_from_pool``).
* The slice-level CSV is not in the public archives (github.com/White65534/BHSD issue #8), so its form is assumed:
  one row per slice (or per scan), a scan column (one of ``scan``, ``case``, ``filename``, ``image``, ``volume``,
  ``StudyInstanceUID``, ``SeriesInstanceUID``) holding the pool file name or its study id, and RSNA's 0/1 columns
  ``any``, ``epidural``, ``intraparenchymal``, ``intraventricular``, ``subarachnoid``, ``subdural`` (or EDH, IPH,
  IVH, SAH, SDH; at least one of them). A scan is a negative when every label of every row is 0; a pool scan not in
  the CSV is never a negative.
* The split file may also give plain name lists under ``imagesTr``/``imagesTs``. Every labelled scan must be in
  exactly one list and every listed scan must exist.

Every check fails with one line naming the file: missing folders or files, an image without ground truth or the
reverse, a ground truth off its image's grid (size, spacing, origin, direction; the DCE converters' tolerances),
label values outside 0..5 or not integers, NaN voxels, unreadable or truncated NIfTI, a scan in both splits.

Example::

    nnunet-ext convert bhsd -i BHSD -d 430 --negatives 200 --unlabeled 500 --seed 0 --raw $nnUNet_raw
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from nnunet_ext.errors import UserInputError

CONVERTER = "datasets_conversion.bhsd"
DEFAULT_NAME = "BHSD"
FILE_ENDING = ".nii.gz"
LABELS = {"background": 0, "EDH": 1, "IPH": 2, "IVH": 3, "SAH": 4, "SDH": 5}
#: ``--merge_classes``: every bleed type as one foreground label (the binary task of BHSD Table 4)
MERGED_LABELS = {"background": 0, "hemorrhage": 1}
LABELLED_FOLDER = "label_192"
IMAGE_FOLDER = "images"
GROUND_TRUTH_FOLDERS = ("ground truths", "ground_truths", "labels")
POOL_PATTERN = "unlabel*"
SPLIT_NAME = "dataset.json"
SPLIT_URL = "https://github.com/White65534/BHSD/blob/main/dataset.json"
REFERENCE = "doi:10.1007/978-3-031-45673-2_15"
_RSNA_NAME = re.compile(r"^(?P<patient>ID_[0-9a-fA-F]+)_(?P<study>ID_[0-9a-fA-F]+)$")
# CSV columns, matched case-insensitively; the first scan column found is used
SCAN_COLUMNS = ("scan", "case", "filename", "image", "volume", "StudyInstanceUID", "SeriesInstanceUID")
PATIENT_COLUMNS = ("PatientID", "patient", "patient_id")
BLEED_COLUMNS = ("any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "edh", "iph",
                 "ivh", "sah", "sdh")


def volume_stem(name: str) -> str | None:
    """``NAME`` for ``NAME.nii.gz``, ``NAME.nii`` or a bare release name ``ID_<patient>_ID_<study>``; None for other
    files (a README, a checksum list)."""
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return name if _RSNA_NAME.match(name) else None


def volume_files(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the volumes in ``folder`` (hidden files and other suffixes skipped; a stem twice is an
    error)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = volume_stem(path.name)
        if path.name.startswith(".") or not path.is_file() or stem is None:
            continue
        if stem in files:
            raise UserInputError(f"{folder} holds {stem} twice ({files[stem].name} and {path.name}); keep one")
        files[stem] = path
    return files


def patient_of(name: str) -> str | None:
    """The RSNA PatientID part of ``ID_<patient>_ID_<study>`` (None for a name of another form)."""
    match = _RSNA_NAME.match(name)
    return match["patient"] if match else None


def parse_count(value: int | str, flag: str) -> int | str:
    """A non-negative integer or ``"all"``."""
    text = str(value).strip().lower()
    if text == "all":
        return "all"
    if not re.fullmatch(r"\d+", text):
        raise UserInputError(f"{flag} must be a non-negative integer or 'all', got {value!r}")
    return int(text)


# ----------------------------------------------------------------------------------------------------------------------
# the release's files (names only)


def labelled_folders(source: Path) -> tuple[Path, Path, Path]:
    """``(labelled root, images folder, ground-truth folder)``; -i may be SRC or SRC/label_192."""
    if not source.is_dir():
        raise UserInputError(f"source folder {source} does not exist or is not a folder")
    root = source / LABELLED_FOLDER if (source / LABELLED_FOLDER).is_dir() else source
    images = root / IMAGE_FOLDER
    if not images.is_dir():
        raise UserInputError(f"no {LABELLED_FOLDER}/{IMAGE_FOLDER}/ folder in {source} (BHSD layout: "
                             f"{LABELLED_FOLDER}/images/ and {LABELLED_FOLDER}/ground truths/)")
    truths = next((root / name for name in GROUND_TRUTH_FOLDERS if (root / name).is_dir()), None)
    if truths is None:
        raise UserInputError(f"no 'ground truths/' folder beside {images} (BHSD layout: {LABELLED_FOLDER}/images/ and "
                             f"{LABELLED_FOLDER}/ground truths/)")
    return root, images, truths


def find_split(source: Path, root: Path, given: str | Path | None) -> Path:
    if given is not None:
        if not Path(given).is_file():
            raise UserInputError(f"--split {given} does not exist")
        return Path(given)
    for folder in dict.fromkeys((source, root)):
        if (folder / SPLIT_NAME).is_file():
            return folder / SPLIT_NAME
    raise UserInputError(f"no {SPLIT_NAME} with the official split in {source} (download it from {SPLIT_URL} or pass "
                         f"--split)")


def _entry_name(entry, path: Path, key: str) -> str:
    if isinstance(entry, dict):
        entry = entry.get("image")
    if not isinstance(entry, str) or not entry.strip():
        raise UserInputError(f"split file {path}: an entry of '{key}' is not a file name (got {entry!r})")
    base = entry.strip().replace("\\", "/").rsplit("/", 1)[-1]
    return volume_stem(base) or base


def read_split(path: Path) -> tuple[list[str], list[str]]:
    """``(training names, test names)`` of a BHSD split file: v1 ``training``/``test`` or ``imagesTr``/``imagesTs``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"cannot read split file {path}: {exc}") from None
    lists = []
    for keys in (("training", "imagesTr"), ("test", "imagesTs")):
        key = next((k for k in keys if isinstance(data, dict) and k in data), None)
        if key is None or not isinstance(data[key], list):
            found = ", ".join(data) if isinstance(data, dict) else type(data).__name__
            raise UserInputError(f"split file {path} has no '{keys[0]}' (or '{keys[1]}') list (found: {found})")
        lists.append(list(dict.fromkeys(_entry_name(entry, path, key) for entry in data[key])))
    training, test = lists
    both = sorted(set(training) & set(test))
    if both:
        raise UserInputError(f"split file {path} lists {len(both)} case(s) in both training and test: "
                             f"{', '.join(both[:3])}{', ...' if len(both) > 3 else ''}")
    return training, test


def read_slice_csv(path: Path) -> dict[str, dict]:
    """``{scan key: {"bleeding": bool, "patient": str | None}}`` from a slice-level label CSV (see the module
    docstring for the columns)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserInputError(f"cannot read {path}: {exc}") from None
    header = [column.strip() for column in rows[0]] if rows else []
    index = {column.lower(): i for i, column in enumerate(header)}
    scan = next((index[c.lower()] for c in SCAN_COLUMNS if c.lower() in index), None)
    if scan is None:
        raise UserInputError(f"{path} has no scan column (one of {', '.join(SCAN_COLUMNS)}; columns found: "
                             f"{', '.join(header) or 'none'})")
    patient = next((index[c.lower()] for c in PATIENT_COLUMNS if c.lower() in index), None)
    bleeds = [index[c] for c in BLEED_COLUMNS if c in index]
    if not bleeds:
        raise UserInputError(f"{path} has no slice-label columns (any, epidural, intraparenchymal, intraventricular, "
                             f"subarachnoid, subdural; columns found: {', '.join(header)})")
    scans: dict[str, dict] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not "".join(row).strip():
            continue
        if len(row) < len(header):
            raise UserInputError(f"{path} line {number}: expected {len(header)} columns, got {len(row)}")
        base = row[scan].strip().replace("\\", "/").rsplit("/", 1)[-1]
        if not base:
            raise UserInputError(f"{path} line {number}: empty {header[scan]}")
        record = scans.setdefault(volume_stem(base) or base, {"bleeding": False, "patient": None})
        for i in bleeds:
            try:
                value = float(row[i])
            except ValueError:
                value = None
            if value not in (0.0, 1.0):
                raise UserInputError(f"{path} line {number}: {header[i]} must be 0 or 1, got {row[i].strip()!r}")
            record["bleeding"] |= value == 1.0
        who = row[patient].strip() if patient is not None else ""
        if who and record["patient"] not in (None, who):
            raise UserInputError(f"{path} line {number}: scan {base} has two patient ids ({record['patient']}, {who})")
        record["patient"] = who or record["patient"]
    if not scans:
        raise UserInputError(f"{path} has no rows")
    return scans


def find_pool(source: Path, given: str | Path | None) -> Path | None:
    """The folder of pool scans: --pool, else the one ``unlabel*/`` folder in SRC (None if there is none)."""
    if given is not None:
        if not Path(given).is_dir():
            raise UserInputError(f"--pool folder {given} does not exist or is not a folder")
        folder = Path(given)
    else:
        found = sorted(p for p in source.glob(POOL_PATTERN) if p.is_dir())
        if len(found) > 1:
            raise UserInputError(f"{source} holds several pool folders ({', '.join(p.name for p in found)}); choose "
                                 f"one with --pool")
        if not found:
            return None
        folder = found[0]
    return folder / IMAGE_FOLDER if (folder / IMAGE_FOLDER).is_dir() else folder


def find_csv(source: Path, pool: Path, given: str | Path | None) -> Path:
    if given is not None:
        if not Path(given).is_file():
            raise UserInputError(f"--csv {given} does not exist")
        return Path(given)
    # the pool folder (and the folder above its images/), then SRC
    folders = [pool, pool.parent] if pool.name == IMAGE_FOLDER else [pool]
    for folder in dict.fromkeys(folders + [source]):
        found = sorted(folder.glob("*.csv"))
        if len(found) > 1:
            raise UserInputError(f"{folder} holds several CSV files ({', '.join(p.name for p in found)}); name the "
                                 f"slice-level labels with --csv")
        if found:
            return found[0]
    raise UserInputError(f"--negatives needs the slice-level labels of the pool: no CSV in {pool} or {source} "
                         f"(pass --csv)")


def choose(candidates: list[str], count: int | str, rng: random.Random | None) -> list[str]:
    """``count`` of the sorted ``candidates``: the first ones, or a seeded sample (returned sorted)."""
    if count == "all":
        return list(candidates)
    if rng is None:
        return candidates[:count]
    return sorted(rng.sample(candidates, count))


def _first(names) -> str | None:
    return next(iter(sorted(names)), None)


def plan_cases(source: Path, split: str | Path | None = None, pool: str | Path | None = None,
               csv_path: str | Path | None = None, unlabeled: int | str = 0, negatives: int | str = 0,
               seed: int | None = None) -> tuple[list[dict], dict]:
    """Scan the source (names, the split file and the CSV only) and return one record per case (training cases
    first) and the facts for dataset.json's ``conversion`` entry."""
    unlabeled, negatives = parse_count(unlabeled, "--unlabeled"), parse_count(negatives, "--negatives")
    root, images_folder, truths_folder = labelled_folders(source)
    split_path = find_split(source, root, split)
    training, test = read_split(split_path)
    images, truths = volume_files(images_folder), volume_files(truths_folder)
    if not images:
        raise UserInputError(f"no NIfTI images in {images_folder}")
    if (name := _first(set(images) - set(truths))) is not None:
        raise UserInputError(f"image without ground truth: {images[name]} (no {name}.nii.gz in {truths_folder})")
    if (name := _first(set(truths) - set(images))) is not None:
        raise UserInputError(f"ground truth without image: {truths[name]} (no {name}.nii.gz in {images_folder})")
    for names, role in ((training, "training"), (test, "test")):
        if (name := _first(set(names) - set(images))) is not None:
            raise UserInputError(f"{split_path} lists {name} for {role} but {images_folder} has no {name}.nii.gz")
    if (name := _first(set(images) - set(training) - set(test))) is not None:
        raise UserInputError(f"image {images[name]} is in neither the training nor the test list of {split_path}")
    patients = {name: patient_of(name) for name in images}
    test_patients = {patients[name]: name for name in test if patients[name]}
    for name in training:
        if patients[name] in test_patients:
            raise UserInputError(f"patient {patients[name]} has scans in both the official training ({name}) and "
                                 f"test ({test_patients[patients[name]]}) lists of {split_path}")
    cases = [{"id": name, "image": images[name], "label": truths[name], "split": "Tr", "kind": "labelled",
              "group": patients[name] or name} for name in training]
    tests = [{"id": name, "image": images[name], "label": truths[name], "split": "Ts", "kind": "labelled",
              "group": patients[name] or name} for name in test]
    facts = {"split_file": split_path, "pool": None, "csv": None, "excluded_from_pool": {}}
    if negatives == 0 and unlabeled == 0:
        for given, flag in ((pool, "--pool"), (csv_path, "--csv")):  # named but unused: still a path that must exist
            if given is not None and not Path(given).exists():
                raise UserInputError(f"{flag} {given} does not exist")
        return cases + tests, facts

    pool_folder = find_pool(source, pool)
    if pool_folder is None:
        raise UserInputError(f"--negatives/--unlabeled need the pool of scans without pixel labels: no "
                             f"{POOL_PATTERN}/ folder in {source} (pass --pool)")
    scans = volume_files(pool_folder)
    if not scans:
        raise UserInputError(f"no NIfTI scans in pool folder {pool_folder}")
    facts["pool"] = pool_folder
    labels: dict[str, dict] = {}
    if negatives != 0 or csv_path is not None:
        facts["csv"] = find_csv(source, pool_folder, csv_path)
        labels = read_slice_csv(facts["csv"])

    def csv_record(name: str) -> dict | None:
        """The CSV's record of a pool scan, named by its file name or by its study id."""
        match = _RSNA_NAME.match(name)
        return labels.get(name) or (labels.get(match["study"]) if match else None)

    pool_patients = {name: (csv_record(name) or {}).get("patient") or patient_of(name) for name in scans}
    excluded = {"named_like_a_labelled_scan": set(scans) & set(images),
                "patient_in_official_test": {n for n in scans if n not in images and pool_patients[n] in test_patients}}
    facts["excluded_from_pool"] = {reason: len(names) for reason, names in excluded.items()}
    available = sorted(set(scans).difference(*excluded.values()))
    rng = random.Random(seed) if seed is not None else None
    # a scan the CSV does not name has an unknown bleed status: never a negative
    negative_pool = [n for n in available if csv_record(n) is not None and not csv_record(n)["bleeding"]]
    if negatives != "all" and negatives > len(negative_pool):
        raise UserInputError(f"--negatives {negatives}: only {len(negative_pool)} pool scan(s) in {pool_folder} have "
                             f"no bleeding on any slice per {facts['csv']}")
    chosen_negatives = choose(negative_pool, negatives, rng)
    rest = sorted(set(available) - set(chosen_negatives))
    if unlabeled != "all" and unlabeled > len(rest):
        raise UserInputError(f"--unlabeled {unlabeled}: only {len(rest)} pool scan(s) available in {pool_folder} "
                             f"(after {len(chosen_negatives)} negative(s) and {len(scans) - len(available)} excluded)")
    for names, kind in ((chosen_negatives, "negative"), (choose(rest, unlabeled, rng), "unlabeled")):
        cases += [{"id": name, "image": scans[name], "label": None, "split": "Tr", "kind": kind,
                   "group": pool_patients[name] or name} for name in names]
    return cases + tests, facts


# ----------------------------------------------------------------------------------------------------------------------
# reading and checking volumes


def read_volume(path: Path, what: str, scratch: Path):
    """The 3D scalar volume at ``path`` as a SimpleITK image; unreadable, truncated, non-3D or NaN-holding files are a
    UserInputError naming the file."""
    from nnunet_ext.imageio import nifti_nan_count
    from nnunet_ext.imageio import read_sitk_image

    readable = path
    if volume_stem(path.name) == path.name:  # no suffix, as label_192.zip ships them: a copy with one, for ITK
        with open(path, "rb") as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
        readable = scratch / f"{path.name}{'.nii.gz' if gzipped else '.nii'}"
        shutil.copyfile(path, readable)
    try:
        image = read_sitk_image(readable, what, shown_as=path)
        if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
            raise UserInputError(f"{what} {path} is a {image.GetDimension()}D image with "
                                 f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel; BHSD scans are 3D "
                                 f"scalar volumes")
        # SimpleITK's NIfTI reader turns NaN into 0: count them in the file itself
        nan = nifti_nan_count(readable)
        if nan:
            raise UserInputError(f"{what} {path} contains {nan} NaN voxel(s)")
    finally:
        if readable != path:
            readable.unlink()
    return image


def check_ground_truth(label, path: Path, image, image_path: Path):
    """``label`` as uint8 on its image's grid: within tolerance the image geometry is copied, beyond it (or with
    values other than the integers 0..5) it is a UserInputError naming both files."""
    import SimpleITK as sitk

    from nnunet_ext.geometry import geometry_mismatch

    reason = geometry_mismatch(image, label)
    if reason is not None:
        raise UserInputError(f"ground truth {path} is not on the grid of its image {image_path.name} ({reason})")
    values = sitk.GetArrayViewFromImage(label)
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.mod(values, 1) == 0):
        fractions = np.unique(values[np.mod(values, 1) != 0])
        raise UserInputError(f"ground truth {path} has non-integer values ({', '.join(f'{v:g}' for v in fractions[:3])}"
                             f"{', ...' if len(fractions) > 3 else ''}); labels are the integers 0..5")
    unexpected = [v for v in np.unique(values).tolist() if v not in LABELS.values()]
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        raise UserInputError(f"ground truth {path} has values {shown}; BHSD labels are 0..5 (background, EDH, IPH, "
                             f"IVH, SAH, SDH)")
    label = sitk.Cast(label, sitk.sitkUInt8)
    label.CopyInformation(image)  # identical headers for nnU-Net's exact geometry check
    return label


def empty_label(image):
    """An all-background uint8 label on ``image``'s grid."""
    import SimpleITK as sitk

    label = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    label.CopyInformation(image)
    return label


# ----------------------------------------------------------------------------------------------------------------------
# the dataset


def convert(source: str | Path, dataset_id: int, name: str = DEFAULT_NAME, raw: str | None = None,
            overwrite: bool = False, split: str | Path | None = None, pool: str | Path | None = None,
            csv_path: str | Path | None = None, unlabeled: int | str = 0, negatives: int | str = 0,
            seed: int | None = None, progress=None, merge_classes: bool = False) -> Path:
    """Python API behind the CLI: write the dataset and return its folder (``merge_classes``: labels 0/1)."""
    import SimpleITK as sitk

    from nnunet_ext.atomic import atomic_output_dir
    from nnunet_ext.datasets_conversion._common import raw_dataset_target

    source = Path(source)
    unlabeled, negatives = parse_count(unlabeled, "--unlabeled"), parse_count(negatives, "--negatives")
    folder, retire = raw_dataset_target(raw, dataset_id, name, overwrite)
    cases, facts = plan_cases(source, split, pool, csv_path, unlabeled, negatives, seed)
    inputs = [source] + [Path(p) for p in (split, pool, csv_path) if p is not None]
    with atomic_output_dir(folder, overwrite=overwrite, inputs=inputs, retire=retire,
                           written_by=f"nnunet-ext convert {CONVERTER}") as tmp, \
            tempfile.TemporaryDirectory(prefix="bhsd-") as scratch:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for index, case in enumerate(cases, start=1):
            image = read_volume(case["image"], "image", Path(scratch))
            if case["label"] is not None:
                label = check_ground_truth(read_volume(case["label"], "ground truth", Path(scratch)), case["label"],
                                           image, case["image"])
            else:
                label = empty_label(image)
            if merge_classes:
                merged = sitk.Cast(label > 0, sitk.sitkUInt8)
                merged.CopyInformation(label)
                label = merged
            sitk.WriteImage(image, str(tmp / f"images{case['split']}" / f"{case['id']}_0000{FILE_ENDING}"), True)
            sitk.WriteImage(label, str(tmp / f"labels{case['split']}" / f"{case['id']}{FILE_ENDING}"), True)
            if progress is not None:
                progress(f"[{index}/{len(cases)}] {case['image'].name} -> {case['id']} ({case['kind']}, "
                         f"images{case['split']})")
        training = [c for c in cases if c["split"] == "Tr"]
        of_kind = {kind: [c["id"] for c in training if c["kind"] == kind] for kind in ("negative", "unlabeled")}
        dataset = {
            "channel_names": {"0": "CT"}, "labels": MERGED_LABELS if merge_classes else LABELS,
            "numTraining": len(training),
            "file_ending": FILE_ENDING, "name": name,
            "description": "BHSD brain hemorrhage CT (Wu et al., MLMI 2023), reconstructed from RSNA 2019 slices; "
                           "labels EDH, IPH, IVH, SAH, SDH; imagesTs/labelsTs = the official 96 test scans",
            "reference": REFERENCE,
            "licence": "BHSD: non-commercial, no derivatives (see github.com/White65534/BHSD)",
            "official_split": {
                "note": "the BHSD authors' 96/96 split (balanced bleed types, no patient on both sides): the 96 "
                        "training scans are in imagesTr, the 96 test scans in imagesTs/labelsTs; negatives and "
                        "unlabeled scans come from the slice-level pool",
                "file": str(facts["split_file"].resolve()),
                "training": [c["id"] for c in training if c["kind"] == "labelled"],
                "test": [c["id"] for c in cases if c["split"] == "Ts"]},
            "negative_cases": of_kind["negative"],
            "unlabeled_cases": of_kind["unlabeled"],
            "unlabeled_cases_note": "labelsTr files of these cases are all-background placeholders (nnU-Net needs one "
                                    "per case); do not train segmentation on them",
            "case_groups": {c["id"]: c["group"] for c in training},
            "conversion": {"converter": CONVERTER, "source": str(source.resolve()),
                           "pool": str(facts["pool"].resolve()) if facts["pool"] else None,
                           "csv": str(facts["csv"].resolve()) if facts["csv"] else None,
                           "negatives": negatives, "unlabeled": unlabeled, "seed": seed,
                           "merge_classes": merge_classes,
                           "excluded_from_pool": facts["excluded_from_pool"],
                           "cases": {c["id"]: str(c["image"].resolve()) for c in cases}},
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", dest="input", required=True,
                        help="BHSD folder holding label_192/ (and unlabel_1980/, dataset.json), or label_192 itself "
                             "(read only, never modified)")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1..999)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"dataset name (default {DEFAULT_NAME})")
    parser.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    parser.add_argument("--split", default=None,
                        help=f"the release's {SPLIT_NAME} with the official split (default: found in -i; {SPLIT_URL})")
    parser.add_argument("--pool", default=None,
                        help="folder of the scans without pixel labels (default: the unlabel*/ folder in -i)")
    parser.add_argument("--csv", default=None,
                        help="slice-level labels of the pool, for --negatives (default: the only CSV in the pool "
                             "folder or in -i)")
    parser.add_argument("--negatives", default="0", metavar="N",
                        help="pool scans without bleeding on any slice to add as all-zero-labelled training cases "
                             "(a number or 'all'; default 0)")
    parser.add_argument("--unlabeled", default="0", metavar="N",
                        help="other pool scans to add as unlabeled training cases (a number or 'all'; default 0)")
    parser.add_argument("--seed", type=int, default=None,
                        help="sample the pool scans with this seed (default: the first N in sorted order)")
    parser.add_argument("--merge_classes", action="store_true",
                        help="one label 'hemorrhage' for every bleed type (the binary task of BHSD Table 4)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def run(args: argparse.Namespace) -> int:
    folder = convert(args.input, args.dataset_id, name=args.name, raw=args.raw, overwrite=args.overwrite,
                     split=args.split, pool=args.pool, csv_path=args.csv, unlabeled=args.unlabeled,
                     negatives=args.negatives, seed=args.seed, progress=print, merge_classes=args.merge_classes)
    print(f"wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from nnunet_ext.datasets_conversion._common import cli_main

    return cli_main(f"python -m {CONVERTER}", __doc__.splitlines()[0], configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
