"""Tests of nnunet_ext.datasets_conversion.inbreast on a small fake INbreast tree (40 x 30 DICOMs written with pydicom,
plist XMLs written with plistlib, the semicolon- or comma-separated table)."""
from __future__ import annotations

import plistlib
import shutil
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from nnunet_ext.atomic import MARKER  # noqa: E402
from nnunet_ext.cli import main  # noqa: E402
from nnunet_ext.datasets_conversion import inbreast  # noqa: E402
from nnunet_ext.errors import UserInputError  # noqa: E402
from tests.conftest import tree_hash  # noqa: E402
from tests.datasets_conversion.helpers import assert_refused, dataset_json, files, read  # noqa: E402

ROWS, COLUMNS = 30, 40
SPACING = 0.07
# INbreast file name -> (patient hash, laterality, view in the DICOM name)
IMAGES = {
    "20586908": ("6c613a14b80a8591", "R", "CC"),
    "20586934": ("6c613a14b80a8591", "L", "CC"),
    "22614097": ("d571b4e3b7f5a2a1", "L", "ML"),
    "22678622": ("61b13c59bcba149e", "R", "ML"),
}
# rectangles with half-integer corners: exactly the pixels whose centres lie inside are filled
RECT_A = [(5.5, 3.5), (15.5, 3.5), (15.5, 10.5), (5.5, 10.5)]     # columns 6..15, rows 4..10: 10 x 7 = 70 pixels
RECT_B = [(10.5, 8.5), (20.5, 8.5), (20.5, 12.5), (10.5, 12.5)]   # columns 11..20, rows 9..12: 10 x 4 = 40 pixels
# overlap of A and B: columns 11..15, rows 9..10 = 10 pixels -> union 100
CSV_HEADER = ["Patient ID", " Patient age", "Laterality", "View", "Acquisition date", "File Name ", "ACR", "Bi-Rads"]
CSV_ROWS = [["removed", "removed", "R", "CC", "201001", "20586908", "2", "4c"],
            ["removed", "removed", "L", "CC", "201001", "20586934", " 3 ", "5"],
            ["removed", "removed", "R", "MLO", "201001", "22678622", "1", "2"]]
MASS_CASES = ["inbreast_20586908", "inbreast_20586934"]
ALL_CASES = ["inbreast_20586908", "inbreast_20586934", "inbreast_22614097", "inbreast_22678622"]


def dicom_name(file_name: str) -> str:
    patient, laterality, view = IMAGES[file_name]
    return f"{file_name}_{patient}_MG_{laterality}_{view}_ANON.dcm"


def pixels(file_name: str) -> np.ndarray:
    return np.random.default_rng(int(file_name)).integers(0, 1 << 14, (ROWS, COLUMNS)).astype(np.uint16)


def write_dicom(path: Path, stored: np.ndarray, spacing_tag: str = "PixelSpacing",
                photometric: str = "MONOCHROME2") -> None:
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography, for presentation
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[path.name])
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.dataset.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "MG"
    ds.Rows, ds.Columns = stored.shape
    setattr(ds, spacing_tag, [SPACING, SPACING])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 14, 13, 0
    ds.PixelData = stored.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def roi(name: str, points) -> dict:
    return {"Name": name, "NumberOfPoints": len(points), "Point_px": [f"({x}, {y})" for x, y in points],
            "Point_mm": [f"({x * SPACING}, {y * SPACING})" for x, y in points], "Index": 0, "Type": 15}


def write_xml(path: Path, rois: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plistlib.dumps({"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": rois}]}))


def write_table(src: Path, delimiter: str = ";") -> None:
    lines = [delimiter.join(row) for row in [CSV_HEADER, *CSV_ROWS]]
    (src / "INbreast.csv").write_text("\n".join(lines) + "\n\n")


def write_inbreast(src: Path, delimiter: str = ";") -> Path:
    """A fake INbreast release: 20586908 has one mass (and ignored calcification and cluster ROIs), 20586934 two
    overlapping masses, 22678622 a calcification only, 22614097 no XML; INbreast.csv lists three of them."""
    for file_name in IMAGES:
        write_dicom(src / "AllDICOMs" / dicom_name(file_name), pixels(file_name))
    write_xml(src / "AllXML" / "20586908.xml", [roi("Calcification", [(30.2, 20.1)]), roi("Mass", RECT_A),
                                                 roi("Cluster", [(20, 15), (35, 15), (35, 28), (20, 28)])])
    write_xml(src / "AllXML" / "20586934.xml", [roi(" MASS ", RECT_A), roi("mass", RECT_B)])
    write_xml(src / "AllXML" / "22678622.xml", [roi("Calcification", [(3.0, 4.0)])])
    write_table(src, delimiter)
    return src


@pytest.fixture
def source(tmp_path) -> Path:
    return write_inbreast(tmp_path / "INbreast")


def _rectangle(points) -> np.ndarray:
    (x0, y0), (x1, y1) = points[0], points[2]
    mask = np.zeros((ROWS, COLUMNS), np.uint8)
    mask[int(y0 + 0.5):int(y1 + 0.5), int(x0 + 0.5):int(x1 + 0.5)] = 1
    return mask


def test_default_writes_the_mass_images_as_an_external_test_set(source, tmp_path):
    before = tree_hash(source)
    folder = inbreast.convert(source, 431, raw=tmp_path / "raw")
    assert tree_hash(source) == before
    assert folder.name == "Dataset431_INbreast" and (folder / MARKER).is_file()
    assert files(folder / "imagesTs") == [f"{case}_0000.nii.gz" for case in MASS_CASES]
    assert files(folder / "labelsTs") == [f"{case}.nii.gz" for case in MASS_CASES]
    assert files(folder / "imagesTr") == [] and files(folder / "labelsTr") == []
    dataset = dataset_json(folder)
    assert dataset["numTraining"] == 0 and dataset["channel_names"] == {"0": "MG"}
    assert dataset["labels"] == {"background": 0, "mass": 1} and dataset["file_ending"] == ".nii.gz"

    image, itk = read(folder / "imagesTs" / "inbreast_20586908_0000.nii.gz")
    assert np.array_equal(image, pixels("20586908")) and image.dtype == np.uint16
    assert np.allclose(itk.GetSpacing(), (SPACING, SPACING))
    label, itk = read(folder / "labelsTs" / "inbreast_20586908.nii.gz")
    assert np.array_equal(label, _rectangle(RECT_A)) and label.sum() == 70  # the cluster ROI is not a mass
    assert np.allclose(itk.GetSpacing(), (SPACING, SPACING))
    union, _ = read(folder / "labelsTs" / "inbreast_20586934.nii.gz")
    assert np.array_equal(union, _rectangle(RECT_A) | _rectangle(RECT_B)) and union.sum() == 100

    conversion = dataset["conversion"]
    assert conversion["layout"] == {"images": "AllDICOMs", "annotations": "AllXML", "table": "INbreast.csv"}
    assert conversion["split"] == "imagesTs/labelsTs" and conversion["max_size"] == 1024
    case = conversion["cases"]["inbreast_20586934"]
    assert case["file_name"] == "20586934" and case["dicom"] == f"AllDICOMs/{dicom_name('20586934')}"
    assert (case["laterality"], case["view"], case["acr"], case["birads"]) == ("L", "CC", "3", "5")
    assert case["masses"] == 2 and case["mass_rois"] == [0, 1] and case["scale"] == [1.0, 1.0]
    assert conversion["cases"]["inbreast_20586908"]["mass_rois"] == [1]
    skipped = {entry["file"]: entry["reason"] for entry in conversion["skipped"]}
    assert sorted(skipped) == [f"AllDICOMs/{dicom_name('22614097')}", f"AllDICOMs/{dicom_name('22678622')}"]
    assert all("no mass ROI" in reason for reason in skipped.values())


@pytest.mark.parametrize("delimiter", [";", ","])
def test_table_with_either_delimiter_and_stray_spaces(tmp_path, delimiter):
    src = write_inbreast(tmp_path / "src", delimiter)
    cases = dataset_json(inbreast.convert(src, 432, raw=tmp_path / "raw", all_images=True))["conversion"]["cases"]
    assert (cases["inbreast_20586908"]["acr"], cases["inbreast_20586908"]["birads"]) == ("2", "4c")
    assert cases["inbreast_20586934"]["acr"] == "3"
    assert (cases["inbreast_22678622"]["view"], cases["inbreast_22678622"]["birads"]) == ("MLO", "2")
    # not in the table: laterality and view from the DICOM name (ML is the MLO view), no density or BI-RADS
    assert [cases["inbreast_22614097"][key] for key in ("laterality", "view", "acr", "birads")] == [
        "L", "MLO", None, None]


def test_without_table_laterality_and_view_come_from_the_file_names(source, tmp_path):
    (source / "INbreast.csv").unlink()
    dataset = dataset_json(inbreast.convert(source, 433, raw=tmp_path / "raw"))
    case = dataset["conversion"]["cases"]["inbreast_20586908"]
    assert (case["laterality"], case["view"], case["acr"], case["birads"]) == ("R", "CC", None, None)
    assert dataset["conversion"]["layout"]["table"] is None


def test_all_images_gives_mass_free_images_empty_labels(source, tmp_path):
    folder = inbreast.convert(source, 434, raw=tmp_path / "raw", all_images=True)
    assert files(folder / "labelsTs") == [f"{case}.nii.gz" for case in ALL_CASES]
    for case in ("inbreast_22614097", "inbreast_22678622"):  # no XML / a calcification only
        label, _ = read(folder / "labelsTs" / f"{case}.nii.gz")
        assert label.shape == (ROWS, COLUMNS) and not label.any()
    dataset = dataset_json(folder)
    assert dataset["conversion"]["skipped"] == [] and dataset["conversion"]["all_images"] is True
    assert dataset["conversion"]["cases"]["inbreast_22614097"]["xml"] is None


def test_as_training_writes_a_dataset_nnunet_accepts(source, tmp_path, verify_with_nnunet):
    folder = inbreast.convert(source, 435, raw=tmp_path / "raw", as_training=True)
    assert files(folder / "imagesTr") == [f"{case}_0000.nii.gz" for case in MASS_CASES]
    assert files(folder / "labelsTr") == [f"{case}.nii.gz" for case in MASS_CASES]
    assert files(folder / "imagesTs") == [] and files(folder / "labelsTs") == []
    dataset = dataset_json(folder)
    assert dataset["numTraining"] == 2 and dataset["conversion"]["split"] == "imagesTr/labelsTr"
    verify_with_nnunet(folder)


@pytest.mark.parametrize("max_size, shape", [(20, (15, 20)), (16, (12, 16)), (40, (30, 40)), (0, (30, 40))])
def test_max_size_area_averages_and_records_the_scale(source, tmp_path, max_size, shape):
    folder = inbreast.convert(source, 436, raw=tmp_path / "raw", max_size=max_size)
    image, itk = read(folder / "imagesTs" / "inbreast_20586934_0000.nii.gz")
    label, _ = read(folder / "labelsTs" / "inbreast_20586934.nii.gz")
    assert image.shape == label.shape == shape and image.dtype == np.uint16
    scale = (shape[0] / ROWS, shape[1] / COLUMNS)
    assert np.allclose(itk.GetSpacing(), (SPACING / scale[1], SPACING / scale[0]))
    case = dataset_json(folder)["conversion"]["cases"]["inbreast_20586934"]
    assert case["scale"] == pytest.approx(list(scale)) and case["original_shape"] == [ROWS, COLUMNS]
    assert case["spacing_mm"] == pytest.approx([SPACING / s for s in scale])
    full = pixels("20586934").astype(float)
    union = (_rectangle(RECT_A) | _rectangle(RECT_B)).astype(float)
    if shape == (15, 20):  # factor 2: each pixel is the mean of a 2 x 2 block; mass where half the block is
        blocks = full.reshape(15, 2, 20, 2).mean(axis=(1, 3))
        assert np.array_equal(image, np.round(blocks))
        assert np.array_equal(label, union.reshape(15, 2, 20, 2).mean(axis=(1, 3)) >= 0.5)
    # the mass keeps its area (in source pixels) up to the rounding of its border pixels
    assert label.sum() / (scale[0] * scale[1]) == pytest.approx(union.sum(), rel=0.25)


@pytest.mark.parametrize("spacing_tag, photometric", [("ImagerPixelSpacing", "MONOCHROME2"),
                                                       ("PixelSpacing", "MONOCHROME1")])
def test_spacing_fallback_and_monochrome1_inversion(source, tmp_path, spacing_tag, photometric):
    stored = pixels("20586908")
    write_dicom(source / "AllDICOMs" / dicom_name("20586908"), stored, spacing_tag, photometric)
    folder = inbreast.convert(source, 437, raw=tmp_path / "raw")
    image, itk = read(folder / "imagesTs" / "inbreast_20586908_0000.nii.gz")
    assert np.allclose(itk.GetSpacing(), (SPACING, SPACING))
    assert np.array_equal(image, stored if photometric == "MONOCHROME2" else (1 << 14) - 1 - stored)


def _garbage(relative: str, content: bytes = b"this is not the file it claims to be " * 8):
    return lambda src: (src / relative).write_bytes(content)


def _xml(file_name: str, document):
    return lambda src: (src / "AllXML" / f"{file_name}.xml").write_bytes(plistlib.dumps(document))


def _rois(file_name: str, rois):
    return lambda src: write_xml(src / "AllXML" / f"{file_name}.xml", rois)


def _remove_masses(src: Path) -> None:
    for file_name in ("20586908", "20586934"):
        (src / "AllXML" / f"{file_name}.xml").unlink()


BAD = [
    ("missing_source", lambda src: shutil.rmtree(src), {}, r"source folder .*INbreast does not exist"),
    ("missing_dicom_folder", lambda src: (src / "AllDICOMs").rename(src / "DICOMs"), {},
     r"has no AllDICOMs folder \(INbreast layout"),
    ("no_dicoms", lambda src: [p.unlink() for p in (src / "AllDICOMs").iterdir()], {},
     r"no INbreast DICOMs .* in .*AllDICOMs"),
    ("xml_not_a_plist", _garbage("AllXML/20586934.xml"), {}, r"AllXML/20586934\.xml is not a valid plist XML"),
    ("xml_truncated", lambda src: (src / "AllXML" / "20586908.xml").write_bytes(
        (src / "AllXML" / "20586908.xml").read_bytes()[:300]), {}, r"AllXML/20586908\.xml is not a valid plist XML"),
    ("xml_without_images", _xml("20586934", {"Patient": "x"}), {},
     r"AllXML/20586934\.xml lacks the INbreast structure: .*'Images' array"),
    ("xml_not_a_dict", _xml("20586934", ["Images"]), {}, r"AllXML/20586934\.xml lacks the INbreast structure"),
    ("xml_without_rois", _xml("22678622", {"Images": [{"ImageIndex": 0}]}), {},
     r"AllXML/22678622\.xml lacks the INbreast structure: Images\[0\] has no 'ROIs' array"),
    ("roi_without_name", _xml("22678622", {"Images": [{"ROIs": [{"Point_px": []}]}]}), {},
     r"AllXML/22678622\.xml lacks the INbreast structure: ROI 0 is not a dict with a 'Name'"),
    ("unreadable_dicom", _garbage(f"AllDICOMs/{dicom_name('20586934')}"), {},
     rf"cannot read DICOM file .*{dicom_name('20586934')}"),
    ("truncated_dicom", lambda src: (src / "AllDICOMs" / dicom_name("20586908")).write_bytes(
        (src / "AllDICOMs" / dicom_name("20586908")).read_bytes()[:-500]), {},
     rf"cannot read DICOM file .*{dicom_name('20586908')}"),
    ("unreadable_dicom_all_images", _garbage(f"AllDICOMs/{dicom_name('22614097')}"), {"all_images": True},
     rf"cannot read DICOM file .*{dicom_name('22614097')}"),
    ("xml_without_dicom", _rois("24055274", [roi("Mass", RECT_A)]), {},
     r"AllXML/24055274\.xml has no DICOM: no 24055274_\*_MG_\*_ANON\.dcm in .*AllDICOMs"),
    ("mass_with_two_points", _rois("20586934", [roi("Mass", RECT_A), roi("Mass", RECT_B[:2])]), {},
     r"AllXML/20586934\.xml: ROI 1 \(Mass\) has 2 point\(s\); a mass outline needs at least 3"),
    ("mass_outside_the_image", _rois("20586908", [roi("Mass", [(30, 5), (41.2, 5), (35, 12)])]), {},
     r"AllXML/20586908\.xml: ROI 0 \(Mass\) has point \(41\.2, 5\) outside the 40x30 image"),
    ("mass_above_the_image",
     _rois("20586908", [roi("Calcification", [(1, 1)]), roi("Mass", [(3, -4), (9, 5), (3, 9)])]), {},
     r"AllXML/20586908\.xml: ROI 1 \(Mass\) has point \(3, -4\) outside the 40x30 image"),
    ("mass_bad_point", _xml("20586908", {"Images": [{"ROIs": [{"Name": "Mass", "Point_px": ["(1, 2)", "1;2"]}]}]}),
     {}, r"AllXML/20586908\.xml: ROI 0 \(Mass\) has point '1;2'"),
    ("no_mass_at_all", _remove_masses, {}, r"no mass ROI in the XMLs of .*AllXML: nothing to convert"),
    ("no_xml_folder", lambda src: shutil.rmtree(src / "AllXML"), {},
     r"no mass ROI in .*INbreast \(no AllXML folder\)"),
    ("table_without_file_name", lambda src: (src / "INbreast.csv").write_text("ID;ACR\n1;2\n"), {},
     r"INbreast\.csv has no 'File Name' column \(header: ID;ACR\)"),
    ("bad_max_size", None, {"max_size": -1}, r"--max-size must be 0 \(full resolution\) or a positive number"),
    ("bad_name", None, {"name": "my data"}, r"dataset name 'my data' must start with"),
]


@pytest.mark.parametrize("damage, options, message", [pytest.param(*row[1:], id=row[0]) for row in BAD])
def test_bad_input_is_one_line_naming_the_file_and_writes_nothing(source, tmp_path, damage, options, message):
    if damage is not None:
        damage(source)
    assert_refused(lambda raw: inbreast.convert(source, 438, raw=raw, **options), source, tmp_path / "raw",
                   f"Dataset438_{options.get('name', 'INbreast')}", message)


def test_hidden_and_unrecognised_files_are_skipped_and_listed(source, tmp_path):
    (source / "AllDICOMs" / "._20586908_6c613a14b80a8591_MG_R_CC_ANON.dcm").write_bytes(b"AppleDouble")
    (source / "AllDICOMs" / "readme.txt").write_text("notes")
    (source / "AllXML" / "notes.xml").write_text("<notes/>")
    skipped = dataset_json(inbreast.convert(source, 439, raw=tmp_path / "raw"))["conversion"]["skipped"]
    reasons = {entry["file"]: entry["reason"] for entry in skipped}
    assert "not named" in reasons["AllDICOMs/readme.txt"] and "not named" in reasons["AllXML/notes.xml"]
    assert not any("._" in name for name in reasons)


def test_existing_dataset_id_needs_overwrite(source, tmp_path):
    inbreast.convert(source, 440, raw=tmp_path / "raw")
    with pytest.raises(UserInputError, match="already exists"):
        inbreast.convert(source, 440, raw=tmp_path / "raw", all_images=True)
    folder = inbreast.convert(source, 440, raw=tmp_path / "raw", all_images=True, overwrite=True)
    assert len(files(folder / "imagesTs")) == 4


def test_cli_converts_and_refuses_in_one_line(source, tmp_path, capsys):
    raw = tmp_path / "raw"
    assert main(["convert", "inbreast", "-i", str(source), "-d", "441", "--raw", str(raw), "--all-images",
                 "--max-size", "20", "--as-training", "--name", "INbreastAll"]) == 0
    assert "wrote" in capsys.readouterr().out
    dataset = dataset_json(raw / "Dataset441_INbreastAll")
    assert dataset["numTraining"] == 4 and dataset["conversion"]["max_size"] == 20
    assert main(["convert", "inbreast", "-i", str(tmp_path / "nope"), "-d", "442", "--raw", str(raw)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("nnunet-ext convert: error: source folder")
