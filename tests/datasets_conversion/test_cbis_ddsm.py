"""Tests of nnunet_ext.datasets_conversion.cbis_ddsm on small fake CBIS-DDSM trees (40 x 30 mammograms, 12 x 10 crops).

The fake trees carry the release's traps: CSV paths (``FOLDER/STUDY_UID/SERIES_UID/000000.dcm``) that name no file on
disk and hold stray spaces and line breaks, NBIA folder names (``07-20-2016-DDSM-74994/1.000000-full mammogram
images-24515/1-1.dcm``), ROI series holding the mask and the crop in either order, a row with the crop and ROI columns
swapped, a crop in a series of its own, an image with two masses, a mask of the wrong size, two spellings of the
density column, a patient in both official parts, and calcification rows beside the mass rows.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
Image = pytest.importorskip("PIL.Image")

from nnunet_ext.atomic import MARKER  # noqa: E402
from nnunet_ext.cli import main  # noqa: E402
from nnunet_ext.datasets_conversion import cbis_ddsm  # noqa: E402
from nnunet_ext.datasets_conversion._2d_common import area_resize  # noqa: E402
from tests.conftest import tree_hash  # noqa: E402
from tests.datasets_conversion.helpers import assert_refused, dataset_json, files, read  # noqa: E402

FULL = (40, 30)  # rows, columns of a full mammogram (real ones are about 5000 x 3000)
CROP = (12, 10)
_FOLDER = re.compile(r"^(?P<kind>Mass|Calc)-(?P<part>Training|Test)_(?P<patient>P_\d+)_(?P<side>LEFT|RIGHT)_"
                     r"(?P<view>CC|MLO)$")


@dataclass(frozen=True)
class Spec:
    """One fake mammogram and its ROIs (one box per abnormality) with the traps it carries."""

    folder: str
    boxes: tuple = ((slice(5, 15), slice(4, 12)),)
    mask_shape: tuple = FULL          # another shape: the mask/image size mismatch
    swapped: bool = False             # the CSV's cropped-image and ROI-mask columns exchanged
    crop_first: bool = False          # 1-1.dcm is the crop, 1-2.dcm the mask
    own_crop_series: bool = False     # the crop in a series of its own
    spacing: tuple | None = None      # (DICOM keyword, (row, column) spacing)

    def part(self, key: str) -> str:
        return _FOLDER.match(self.folder)[key]

    @property
    def kind(self) -> str:
        return "mass" if self.part("kind") == "Mass" else "calcification"


SPECS = (
    Spec("Mass-Training_P_00001_LEFT_CC"),
    Spec("Mass-Training_P_00002_RIGHT_CC", boxes=((slice(3, 12), slice(2, 10)), (slice(20, 33), slice(14, 26))),
         crop_first=True),
    Spec("Mass-Training_P_00003_LEFT_CC", swapped=True),
    Spec("Mass-Training_P_00004_RIGHT_MLO", mask_shape=(36, 30)),
    Spec("Mass-Training_P_00009_LEFT_MLO", own_crop_series=True, crop_first=True),
    Spec("Mass-Test_P_00001_RIGHT_CC", boxes=((slice(22, 34), slice(6, 20)),)),
    Spec("Mass-Test_P_00005_LEFT_CC", spacing=("PixelSpacing", (0.05, 0.06))),
    Spec("Mass-Test_P_00006_RIGHT_CC", spacing=("ImagerPixelSpacing", (0.07, 0.07)), swapped=True),
    Spec("Calc-Training_P_00007_LEFT_CC", boxes=((slice(10, 18), slice(10, 16)),)),
    Spec("Calc-Test_P_00008_LEFT_MLO"),
)
MASS = [spec for spec in SPECS if spec.kind == "mass"]
SKIPPED = "Mass-Training_P_00004_RIGHT_MLO"
MASS_COLUMNS = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
                "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
                "image file path", "cropped image file path", "ROI mask file path"]
CALC_COLUMNS = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
                "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
                "image file path", "cropped image file path", "ROI mask file path"]


def uid(*parts) -> str:
    return pydicom.uid.generate_uid(prefix="1.3.6.1.4.1.9590.100.1.2.", entropy_srcs=[str(p) for p in parts])


def image_of(spec: Spec, dtype=np.uint16) -> np.ndarray:
    rng = np.random.default_rng(sum(map(ord, spec.folder)))
    high = 4000 if dtype == np.uint16 else 255
    return rng.integers(0, high, FULL).astype(dtype)


def masks_of(spec: Spec) -> list[np.ndarray]:
    """One 0/255 mask per ROI."""
    masks = []
    for box in spec.boxes:
        mask = np.zeros(spec.mask_shape, np.uint8)
        mask[box] = 255
        masks.append(mask)
    return masks


def label_of(spec: Spec) -> np.ndarray:
    return np.any([mask > 0 for mask in masks_of(spec)], axis=0).astype(np.uint8)


def crop_of(spec: Spec, k: int, dtype=np.uint16) -> np.ndarray:
    return image_of(spec, dtype)[k:k + CROP[0], k:k + CROP[1]]


@dataclass
class Series:
    """A series of the fake tree: its UIDs, NBIA folder and files (name -> pixels)."""

    subject: str
    study: str
    uid: str
    description: str
    folder: str
    files: dict


def tree_of(spec: Spec) -> tuple[Series, list[tuple[Series, Series, str, str]]]:
    """``(full image series, [(ROI series, crop series, mask file, crop file) per ROI])``."""
    n = sum(map(ord, spec.folder))
    study = uid(spec.folder, "study")
    full = Series(spec.folder, study, uid(spec.folder, "series"), "full mammogram images",
                  f"{spec.folder}/07-20-2016-DDSM-{n % 90000 + 10000}/1.000000-full mammogram images-{n % 9000 + 1000}",
                  {"1-1": image_of(spec)})
    rois = []
    for k, mask in enumerate(masks_of(spec), start=1):
        subject = f"{spec.folder}_{k}"
        roi_study = uid(subject, "study")
        base = f"{subject}/09-06-2017-DDSM-{(n + k) % 90000 + 10000}"
        mask_name, crop_name = ("1-2", "1-1") if spec.crop_first else ("1-1", "1-2")
        roi = Series(subject, roi_study, uid(subject, "roi"), "ROI mask images",
                     f"{base}/1.000000-ROI mask images-{(n + k) % 9000 + 1000}", {mask_name: mask})
        crop = roi
        if spec.own_crop_series:
            crop = Series(subject, roi_study, uid(subject, "crop"), "cropped images",
                          f"{base}/2.000000-cropped images-{(n + 2 * k) % 9000 + 1000}", {})
        crop.files[crop_name] = crop_of(spec, k)
        rois.append((roi, crop, mask_name, crop_name))
    return full, rois


def csv_path(series: Series, number: int) -> str:
    """The CSV's form of a path: old TCIA layout, never the disk's."""
    return f"{series.subject}/{series.study}/{series.uid}/{number:06d}.dcm"


def write_case_csvs(folder: Path, specs=SPECS, rows_for=None) -> None:
    """The four case CSVs, with the release's stray whitespace (a leading space, line breaks in quoted paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, columns in (("mass", MASS_COLUMNS), ("calc", CALC_COLUMNS)):
        for part, csv_part in (("Training", "train"), ("Test", "test")):
            lines = []
            for spec in specs:
                if spec.part("kind").lower() != kind or spec.part("part") != part:
                    continue
                full, rois = tree_of(spec)
                for k, (roi, crop, _, _) in enumerate(rois, start=1):
                    crop_text, roi_text = csv_path(crop, 1) + "\n", csv_path(roi, 0) + "\n"
                    if spec.swapped:
                        crop_text, roi_text = roi_text, crop_text
                    details = ["OVAL", "CIRCUMSCRIBED"] if kind == "mass" else ["PLEOMORPHIC", "CLUSTERED"]
                    lines.append([spec.part("patient"), "3", spec.part("side"), spec.part("view"), str(k), spec.kind,
                                  *details, "4", "MALIGNANT" if k == 1 else "BENIGN", "3", " " + csv_path(full, 0),
                                  crop_text, roi_text])
            if rows_for is not None:
                lines = rows_for(kind, part, lines)
            with open(folder / f"{kind}_case_description_{csv_part}_set.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(columns)
                writer.writerows(lines)


def write_dicom(path: Path, series: Series, pixels: np.ndarray, spacing=None) -> None:
    sop = uid(series.uid, path.name)
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.dataset.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = pydicom.uid.SecondaryCaptureImageStorage, sop, "MG"
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = series.subject, series.study, series.uid
    ds.SeriesDescription = series.description
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if spacing is not None:
        setattr(ds, spacing[0], list(spacing[1]))
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_dicom_release(root: Path, metadata: bool = True, specs=SPECS) -> Path:
    """The NBIA download: CBIS-DDSM/<subject>/<study>/<series>/1-N.dcm, the case CSVs and (optionally) metadata.csv."""
    manifest = []
    for spec in specs:
        full, rois = tree_of(spec)
        write_dicom(root / "CBIS-DDSM" / full.folder / "1-1.dcm", full, full.files["1-1"], spec.spacing)
        series_seen = [full]
        for roi, crop, _, _ in rois:
            series_seen += [roi] + ([crop] if crop is not roi else [])
        for series in series_seen[1:]:
            for name, pixels in series.files.items():
                write_dicom(root / "CBIS-DDSM" / series.folder / f"{name}.dcm", series, pixels)
        manifest += [[s.uid, "CBIS-DDSM", s.subject, s.study, s.description, str(len(s.files)),
                      f"./CBIS-DDSM/{s.folder}"] for s in series_seen]
    if metadata:
        with open(root / "metadata.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Series UID", "Collection", "Subject ID", "Study UID", "Series Description",
                             "Number of Images", "File Location"])
            writer.writerows(manifest)
    write_case_csvs(root, specs)
    return root


def jpeg_bytes(pixels: np.ndarray, quality: int = 75) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_jpeg_release(root: Path, specs=SPECS) -> Path:
    """The Kaggle copy: jpeg/<SeriesInstanceUID>/1-N.jpg, csv/dicom_info.csv and csv/<case CSVs>."""
    info = []
    for spec in specs:
        full, rois = tree_of(spec)
        pictures = [(full, "1-1", image_of(spec, np.uint8), full.description)]
        for k, ((roi, crop, mask_name, crop_name), mask) in enumerate(zip(rois, masks_of(spec)), start=1):
            pictures += [(roi, mask_name, mask, "ROI mask images"),
                         (crop, crop_name, crop_of(spec, k, np.uint8), "cropped images")]
        for series, name, pixels, description in pictures:
            path = root / "jpeg" / series.uid / f"{name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg_bytes(pixels))
            info.append([f"CBIS-DDSM/jpeg/{series.uid}/{name}.jpg", series.subject, series.study, series.uid,
                         description, str(pixels.shape[0]), str(pixels.shape[1])])
    (root / "csv").mkdir(parents=True, exist_ok=True)
    with open(root / "csv" / "dicom_info.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_path", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesDescription",
                         "Rows", "Columns"])
        writer.writerows(info)
    write_case_csvs(root / "csv", specs)
    return root


def full_file(root: Path, spec: Spec) -> Path:
    return root / "CBIS-DDSM" / tree_of(spec)[0].folder / "1-1.dcm"


@pytest.fixture(scope="module")
def dicom_template(tmp_path_factory) -> Path:
    return write_dicom_release(tmp_path_factory.mktemp("cbis") / "dicom")


@pytest.fixture
def release(dicom_template, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(dicom_template, tmp_path / "CBIS"))


# ----------------------------------------------------------------------------------------------------------------------
# the DICOM release


@pytest.mark.parametrize("metadata", [True, False], ids=["metadata_csv", "dicom_headers"])
def test_dicom_release_official_split(release, tmp_path, monkeypatch, metadata):
    if metadata:  # every path resolves through metadata.csv: the headers are never scanned
        def no_scan(self):
            raise AssertionError("DICOM headers scanned although metadata.csv lists every series")
        monkeypatch.setattr(cbis_ddsm.DicomResolver, "headers", no_scan)
    else:
        (release / "metadata.csv").unlink()
    before = tree_hash(release)
    messages = []
    folder = cbis_ddsm.convert(release, 440, raw=tmp_path / "raw", max_size=0, progress=messages.append)
    assert tree_hash(release) == before
    assert folder.name == "Dataset440_CBISDDSM" and (folder / MARKER).is_file()
    training = [s.folder for s in MASS if s.part("part") == "Training" and s.folder != SKIPPED]
    test = [s.folder for s in MASS if s.part("part") == "Test"]
    assert files(folder / "imagesTr") == sorted(f"{c}_0000.nii.gz" for c in training)
    assert files(folder / "labelsTr") == sorted(f"{c}.nii.gz" for c in training)
    assert files(folder / "imagesTs") == sorted(f"{c}_0000.nii.gz" for c in test)
    assert files(folder / "labelsTs") == sorted(f"{c}.nii.gz" for c in test)
    dataset = dataset_json(folder)
    assert dataset["channel_names"] == {"0": "MG"} and dataset["labels"] == {"background": 0, "mass": 1}
    assert dataset["numTraining"] == len(training) and dataset["file_ending"] == ".nii.gz"
    assert dataset["split"]["mode"] == "official" and dataset["test_cases"] == sorted(test)
    assert dataset["case_groups"]["Mass-Training_P_00001_LEFT_CC"] == "P_00001"
    assert dataset["conversion"]["layout"] == "dicom"
    how = " ".join(dataset["conversion"]["resolved_with"])
    assert ("metadata.csv" in how) == metadata and ("DICOM headers" in how) != metadata
    for spec in MASS:
        if spec.folder == SKIPPED:
            continue
        split = "Tr" if spec.part("part") == "Training" else "Ts"
        image, _ = read(folder / f"images{split}" / f"{spec.folder}_0000.nii.gz")
        label, _ = read(folder / f"labels{split}" / f"{spec.folder}.nii.gz")
        assert image.dtype == np.uint16 and np.array_equal(image, image_of(spec)), spec.folder
        # the union of every ROI, told from the crop by content whatever the file order or CSV column
        assert np.array_equal(label, label_of(spec)), spec.folder
    assert any("skipped 1 of 8" in m for m in messages)


def test_two_masses_are_one_label_and_pathologies_are_kept(release, tmp_path):
    folder = cbis_ddsm.convert(release, 441, raw=tmp_path / "raw", max_size=0)
    label, _ = read(folder / "labelsTr" / "Mass-Training_P_00002_RIGHT_CC.nii.gz")
    assert label.sum() == 9 * 8 + 13 * 12 and set(np.unique(label)) == {0, 1}
    rois = dataset_json(folder)["conversion"]["cases"]["Mass-Training_P_00002_RIGHT_CC"]["rois"]
    assert [(r["abnormality_id"], r["pathology"]) for r in rois] == [("1", "MALIGNANT"), ("2", "BENIGN")]
    assert all(len(r["candidates"]) == 2 for r in rois)  # mask and crop, both looked at


def test_size_mismatch_is_skipped_and_reported(release, tmp_path, capsys):
    code = main(["convert", "cbis_ddsm", "-i", str(release), "-d", "442", "--raw", str(tmp_path / "raw"),
                 "--max-size", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "skipped 1 of 8 image(s): mask_size_mismatch 1" in out
    assert re.search(rf"{SKIPPED}: mass_case_description_train_set\.csv line 14 \(patient P_00004, abnormality 1\): "
                     rf"ROI mask .*1-1\.dcm is 30x36 but its mammogram .*1-1\.dcm is 30x40", out)
    dataset = dataset_json(tmp_path / "raw" / "Dataset442_CBISDDSM")
    assert dataset["skipped_images"]["counts"] == {"mask_size_mismatch": 1}
    assert dataset["skipped_images"]["cases"][SKIPPED]["reason"] == "mask_size_mismatch"
    assert SKIPPED not in dataset["conversion"]["cases"]


def test_pixel_spacing_from_the_headers_else_one(release, tmp_path):
    folder = cbis_ddsm.convert(release, 443, raw=tmp_path / "raw", max_size=0)
    dataset = dataset_json(folder)
    cases = dataset["conversion"]["cases"]
    assert cases["Mass-Test_P_00005_LEFT_CC"]["spacing_source"] == "PixelSpacing"
    assert cases["Mass-Test_P_00006_RIGHT_CC"]["spacing_source"] == "ImagerPixelSpacing"
    assert cases["Mass-Training_P_00001_LEFT_CC"]["spacing_source"] == "default 1.0"
    assert dataset["spacing_note"].startswith("5 of 7 images carry no PixelSpacing")
    _, image = read(folder / "imagesTs" / "Mass-Test_P_00005_LEFT_CC_0000.nii.gz")
    _, label = read(folder / "labelsTs" / "Mass-Test_P_00005_LEFT_CC.nii.gz")
    assert image.GetSpacing() == pytest.approx((0.06, 0.05)) and label.GetSpacing() == image.GetSpacing()
    _, image = read(folder / "imagesTr" / "Mass-Training_P_00001_LEFT_CC_0000.nii.gz")
    assert image.GetSpacing() == pytest.approx((1.0, 1.0))


def test_stale_metadata_location_falls_back_to_the_headers(release, tmp_path):
    text = (release / "metadata.csv").read_text()
    (release / "metadata.csv").write_text(text.replace("./CBIS-DDSM/Mass-Training_P_00001_LEFT_CC/",
                                                       "./CBIS-DDSM/moved/"))
    folder = cbis_ddsm.convert(release, 444, raw=tmp_path / "raw", max_size=0)
    resolved = dataset_json(folder)["conversion"]["resolved_with"]
    assert resolved["DICOM headers (series UID)"] == 1 and resolved["metadata.csv (series UID)"] > 1
    image, _ = read(folder / "imagesTr" / "Mass-Training_P_00001_LEFT_CC_0000.nii.gz")
    assert np.array_equal(image, image_of(SPECS[0]))


def test_roi_series_without_a_binary_image_is_skipped(release, tmp_path):
    spec = SPECS[0]
    roi, _, mask_name, _ = tree_of(spec)[1][0]
    write_dicom(release / "CBIS-DDSM" / roi.folder / f"{mask_name}.dcm", roi, image_of(spec))  # grey, full size
    folder = cbis_ddsm.convert(release, 446, raw=tmp_path / "raw", max_size=0)
    skipped = dataset_json(folder)["skipped_images"]
    assert skipped["counts"] == {"mask_size_mismatch": 1, "no_roi_mask": 1}
    assert re.search(r"line 2 \(patient P_00001, abnormality 1\): no binary ROI mask among .*1-1\.dcm, .*1-2\.dcm",
                     skipped["cases"][spec.folder]["detail"])


def test_monochrome1_is_inverted(release, tmp_path):
    spec = SPECS[0]
    full = tree_of(spec)[0]
    path = full_file(release, spec)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation, ds.BitsStored, ds.HighBit = "MONOCHROME1", 12, 11
    ds.save_as(path, enforce_file_format=True)
    folder = cbis_ddsm.convert(release, 447, raw=tmp_path / "raw", max_size=0)
    image, _ = read(folder / "imagesTr" / f"{full.subject}_0000.nii.gz")
    assert np.array_equal(image, 4095 - image_of(spec))


def test_calcification_rows_on_request(release, tmp_path):
    folder = cbis_ddsm.convert(release, 445, raw=tmp_path / "raw", max_size=0, abnormality="calcification")
    assert folder.name == "Dataset445_CBISDDSMCalc"
    dataset = dataset_json(folder)
    assert dataset["labels"] == {"background": 0, "calcification": 1}
    assert files(folder / "imagesTr") == ["Calc-Training_P_00007_LEFT_CC_0000.nii.gz"]
    assert files(folder / "imagesTs") == ["Calc-Test_P_00008_LEFT_MLO_0000.nii.gz"]


# ----------------------------------------------------------------------------------------------------------------------
# splits


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_paper_split_groups_patients_and_is_seeded(release, tmp_path, seed):
    folder = cbis_ddsm.convert(release, 446, raw=tmp_path / "a", max_size=0, split="paper", seed=seed)
    again = cbis_ddsm.convert(release, 446, raw=tmp_path / "b", max_size=0, split="paper", seed=seed)
    dataset = dataset_json(folder)
    assert dataset["test_cases"] == dataset_json(again)["test_cases"]
    assert files(folder / "imagesTs") == files(again / "imagesTs")
    drawn = cbis_ddsm.paper_split({s.folder: s.part("patient") for s in MASS}, seed)
    assert len(drawn) == 2  # round(25 % of the 8 mass images), Training and Test rows together
    kept = drawn - {SKIPPED}
    assert dataset["test_cases"] == sorted(kept)
    assert dataset["split"] | {"note": ""} == {"mode": "paper", "seed": seed, "train_images": 7 - len(kept),
                                               "test_images": len(kept), "test_fraction": 0.25, "drawn_from": 8,
                                               "note": ""}
    sides = {}
    for spec in MASS:
        sides.setdefault(spec.part("patient"), set()).add(spec.folder in drawn)
    assert all(len(side) == 1 for side in sides.values())
    assert files(folder / "imagesTs") == sorted(f"{c}_0000.nii.gz" for c in kept)


def test_paper_split_proportion_grouping_and_seed_on_a_release_sized_list():
    rng = np.random.default_rng(0)
    groups = {}
    patient = 0
    while len(groups) < 1592:  # 1 to 4 mass images per patient, as in CBIS-DDSM
        patient += 1
        for k in range(int(rng.integers(1, 5))):
            groups[f"P_{patient:05d}_{k}"] = f"P_{patient:05d}"
    groups = dict(list(groups.items())[:1592])
    splits = [cbis_ddsm.paper_split(groups, seed) for seed in range(5)]
    for test in splits:
        assert len(test) == 398  # 25 % of 1,592
        assert not {groups[c] for c in test} & {groups[c] for c in set(groups) - test}
    assert cbis_ddsm.paper_split(groups, 3) == splits[3]
    assert len({frozenset(s) for s in splits}) == 5
    # the patient with two images of the fake release is drawn for testing by some seed
    small = {s.folder: s.part("patient") for s in MASS}
    assert any({"Mass-Training_P_00001_LEFT_CC", "Mass-Test_P_00001_RIGHT_CC"} <= cbis_ddsm.paper_split(small, seed)
               for seed in range(20))


# ----------------------------------------------------------------------------------------------------------------------
# downsampling


@pytest.mark.parametrize("max_size, shape", [(20, (20, 15)), (16, (16, 12)), (64, (40, 30))])
def test_max_size_shrinks_records_the_scale_and_scales_the_spacing(release, tmp_path, max_size, shape):
    folder = cbis_ddsm.convert(release, 447, raw=tmp_path / "raw", max_size=max_size)
    spec = SPECS[1]
    image, itk = read(folder / "imagesTr" / f"{spec.folder}_0000.nii.gz")
    label, label_itk = read(folder / "labelsTr" / f"{spec.folder}.nii.gz")
    assert image.shape == label.shape == shape and image.dtype == np.uint16
    scale = shape[0] / FULL[0], shape[1] / FULL[1]
    assert itk.GetSpacing() == pytest.approx((1 / scale[1], 1 / scale[0])) == label_itk.GetSpacing()
    record = dataset_json(folder)["conversion"]["cases"][spec.folder]
    assert record["size"] == list(FULL) and record["written_size"] == list(shape)
    assert record["scale"] == pytest.approx(list(scale))
    assert str(max_size) in dataset_json(folder)["conversion"]["downsampling"]["rule"]
    expected = area_resize(label_of(spec), shape) >= 0.5
    assert np.array_equal(label, expected.astype(np.uint8))
    if max_size == 20:
        means = image_of(spec).astype(float).reshape(20, 2, 15, 2).mean(axis=(1, 3))
        assert np.array_equal(image, np.rint(means).astype(np.uint16))
        assert np.array_equal(label, (label_of(spec).reshape(20, 2, 15, 2).mean(axis=(1, 3)) >= 0.5))


# ----------------------------------------------------------------------------------------------------------------------
# the JPEG copy


def test_jpeg_copy_thresholds_lossy_masks_found_by_content(tmp_path):
    source = write_jpeg_release(tmp_path / "kaggle")
    mask_file = source / "jpeg" / tree_of(SPECS[1])[1][0][0].uid / "1-2.jpg"
    stored = np.array(Image.open(mask_file))
    assert len(np.unique(stored)) > 2  # lossy: not 0/255 any more
    before = tree_hash(source)
    folder = cbis_ddsm.convert(source, 448, raw=tmp_path / "raw", max_size=0)
    assert tree_hash(source) == before
    dataset = dataset_json(folder)
    assert dataset["conversion"]["layout"] == "jpeg"
    assert "dicom_info.csv (series UID)" in dataset["conversion"]["resolved_with"]
    assert dataset["skipped_images"]["counts"] == {"mask_size_mismatch": 1}
    for spec in MASS:
        if spec.folder == SKIPPED:
            continue
        split = "Tr" if spec.part("part") == "Training" else "Ts"
        image, _ = read(folder / f"images{split}" / f"{spec.folder}_0000.nii.gz")
        label, _ = read(folder / f"labels{split}" / f"{spec.folder}.nii.gz")
        full = source / "jpeg" / tree_of(spec)[0].uid / "1-1.jpg"
        assert image.dtype == np.uint8 and np.array_equal(image, np.array(Image.open(full)))
        assert np.array_equal(label, label_of(spec)), spec.folder


def test_jpeg_folder_is_found_without_dicom_info_rows(tmp_path):
    source = write_jpeg_release(tmp_path / "kaggle")
    info = source / "csv" / "dicom_info.csv"
    lines = info.read_text().splitlines()
    info.write_text("\n".join(line for line in lines if tree_of(SPECS[0])[0].uid not in line) + "\n")
    folder = cbis_ddsm.convert(source, 449, raw=tmp_path / "raw", max_size=0)
    assert dataset_json(folder)["conversion"]["resolved_with"]["jpeg/<series UID> folder"] == 1


# ----------------------------------------------------------------------------------------------------------------------
# refusals: one line, nothing written, the source untouched


def _drop_mass_rows(kind, part, lines):
    return [] if kind == "mass" else lines


def unknown_image_series(kind, part, lines):
    """The first Training mass row with an image path whose UIDs are nowhere in the release."""
    if kind == "mass" and part == "Training":
        lines[0][11] = " Mass-Training_P_00001_LEFT_CC/1.2.3.4/1.2.3.5/000000.dcm\n"
    return lines


def _break(what: str):
    def setup(root: Path) -> None:
        if what == "no_csvs":
            for path in root.glob("*_case_description_*.csv"):
                path.unlink()
        elif what == "no_mass_rows":
            write_case_csvs(root, rows_for=_drop_mass_rows)
        elif what == "unknown_series":
            write_case_csvs(root, rows_for=unknown_image_series)
        elif what.startswith("corrupt"):
            full_file(root, SPECS[2]).write_bytes(b"this is not a DICOM file" * 10)
            if what == "corrupt_no_metadata":
                (root / "metadata.csv").unlink()
        elif what == "truncated_pixels":
            path = full_file(root, SPECS[2])
            path.write_bytes(path.read_bytes()[:-200])
        elif what == "all_skipped":
            for spec in MASS:
                for roi, _, mask_name, _ in tree_of(spec)[1]:
                    path = root / "CBIS-DDSM" / roi.folder / f"{mask_name}.dcm"
                    write_dicom(path, roi, np.zeros((5, 5), np.uint8))
    return setup


REFUSALS = [
    ("missing_source", None, {}, r"source folder .*nope does not exist"),
    ("no_case_csvs", _break("no_csvs"), {}, r"no CBIS-DDSM case CSVs \(mass_case_description_train_set\.csv"),
    ("no_mass_rows", _break("no_mass_rows"), {},
     r"no rows with abnormality type 'mass' in .*\(types found: calcification\)"),
    ("unresolvable_row", _break("unknown_series"), {},
     r"mass_case_description_train_set\.csv line 2 \(patient P_00001, abnormality 1\): image file path "
     r"'Mass-Training_P_00001_LEFT_CC/1\.2\.3\.4/1\.2\.3\.5/000000\.dcm' matches no file"),
    ("corrupt_dicom_pixels", _break("corrupt"), {},
     r"cannot read DICOM file .*Mass-Training_P_00003_LEFT_CC/.*1-1\.dcm"),
    ("corrupt_dicom_header", _break("corrupt_no_metadata"), {},
     r"cannot read DICOM file .*Mass-Training_P_00003_LEFT_CC/.*1-1\.dcm"),
    ("truncated_pixels", _break("truncated_pixels"), {}, r"cannot read DICOM file .*P_00003_LEFT_CC/.*1-1\.dcm"),
    ("all_images_skipped", _break("all_skipped"), {}, r"no image left to convert: all 8 were skipped"),
    ("layout_jpeg_on_dicom", None, {"layout": "jpeg"}, r"--layout jpeg: .* lacks csv/dicom_info\.csv"),
    ("negative_max_size", None, {"max_size": -1},
     r"--max-size must be 0 \(full resolution\) or a positive number of pixels, got -1"),
    ("unknown_split", None, {"split": "random"}, r"--split must be one of official, paper, got 'random'"),
]


@pytest.mark.parametrize("setup, options, message", [pytest.param(*row[1:], id=row[0]) for row in REFUSALS])
def test_refusals(release, tmp_path, setup, options, message):
    source = tmp_path / "nope" if setup is None and not options else release
    if setup is not None:
        setup(release)
    assert_refused(lambda raw: cbis_ddsm.convert(source, 450, raw=raw, **options), source, tmp_path / "raw",
                   "Dataset450_CBISDDSM", message)


def test_neither_layout_is_refused(tmp_path):
    source = tmp_path / "only_csvs"
    write_case_csvs(source)
    assert_refused(lambda raw: cbis_ddsm.convert(source, 451, raw=raw), source, tmp_path / "raw",
                   "Dataset451_CBISDDSM", r"holds neither the TCIA DICOM release \(\.dcm files\) nor the JPEG copy")


def test_dicom_layout_on_the_jpeg_copy_is_refused(tmp_path):
    source = write_jpeg_release(tmp_path / "kaggle", specs=SPECS[:1])
    assert_refused(lambda raw: cbis_ddsm.convert(source, 452, raw=raw, layout="dicom"), source, tmp_path / "raw",
                   "Dataset452_CBISDDSM", r"--layout dicom: no \.dcm files under .*kaggle")


def test_corrupt_jpeg_is_refused(tmp_path):
    source = write_jpeg_release(tmp_path / "kaggle")
    path = source / "jpeg" / tree_of(SPECS[0])[0].uid / "1-1.jpg"
    path.write_bytes(b"not a jpeg" * 20)
    assert_refused(lambda raw: cbis_ddsm.convert(source, 452, raw=raw), source, tmp_path / "raw",
                   "Dataset452_CBISDDSM", rf"cannot read JPEG file .*{path.parent.name}/1-1\.jpg")


def test_cli_error_is_one_line_exit_2(tmp_path, capsys):
    code = main(["convert", "cbis_ddsm", "-i", str(tmp_path / "nope"), "-d", "453", "--raw", str(tmp_path / "raw")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("nnunet-ext convert: error: source folder")

