"""Tests of nnunet_ext.datasets_conversion.breast_mri_nact_pilot on small fake TCIA trees written with pydicom.

The fake trees mimic the documented layout: ``UCSF-BR-XX/<study>/<series>/*.dcm``, one sagittal multi-phase DCE
series (pre + 2 post-contrast time points in one series), derived PE1/SER maps, a breast tissue SEG and a tumour SEG
("PE Segmentation thresh=70" / "VOI PE Segmentation thresh=70"). Folder and file names are random, so neither folder
order nor file order matches series numbers, time points or slice order.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
sitk = pytest.importorskip("SimpleITK")

from nnunet_ext.atomic import MARKER  # noqa: E402
from nnunet_ext.errors import UserInputError  # noqa: E402

from nnunet_ext.datasets_conversion import breast_mri_nact_pilot as nact  # noqa: E402
from tests.conftest import tree_hash  # noqa: E402

SHAPE = (4, 8, 8)  # slices, rows, columns
ROW_COSINE = np.array([0.0, 1.0, 0.0])     # sagittal: rows run anterior -> posterior
COLUMN_COSINE = np.array([0.0, 0.0, -1.0])  # columns run superior -> inferior
NORMAL = np.cross(ROW_COSINE, COLUMN_COSINE)
PIXEL_SPACING = (0.7, 0.8)  # DICOM order: between rows, between columns
SLICE_STEP = 2.0
ORIGIN = np.array([40.0, -60.0, 30.0])
SLOPE, INTERCEPT = 2.0, -5.0
PHASE_TIMES = {  # pre, post1 (~2.5 min), post2 (~7.5 min)
    "TemporalPositionIdentifier": [1, 2, 3],
    "TriggerTime": [0.0, 150000.0, 450000.0],
    "AcquisitionTime": ["101500.000", "101800.500", "102300.250"],
    "ContentTime": ["101530.000", "101830.000", "102330.000"],
}


@dataclass
class FakePatient:
    """Ground truth of one fake patient, per study (visit): stored pixel arrays per phase and the tumour mask."""

    patient_id: str
    phases: list[list[np.ndarray]] = field(default_factory=list)   # [visit][phase] -> stored uint16 (z, y, x)
    tumour: list[np.ndarray | None] = field(default_factory=list)  # [visit] -> uint8 (z, y, x) or None


def _uid(*parts) -> str:
    return pydicom.uid.generate_uid(entropy_srcs=[str(p) for p in parts])


def _slice_position(k: float) -> np.ndarray:
    return ORIGIN + k * SLICE_STEP * NORMAL


def _file_meta(sop_class: str, sop_instance: str):
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    return meta


def _base_dataset(study: dict, series_uid: str, series_number: int, description: str, modality: str,
                  sop_class: str, sop_instance: str):
    ds = pydicom.dataset.Dataset()
    ds.file_meta = _file_meta(sop_class, sop_instance)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, sop_instance, modality
    ds.PatientID, ds.StudyInstanceUID = study["patient"], study["uid"]
    ds.StudyDate, ds.StudyTime = study["date"], "101000"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, series_number, description
    return ds


def _write_slice(path: Path, study: dict, series_uid: str, series_number: int, description: str, stored: np.ndarray,
                 k: float, instance: int, times: dict, image_type=("ORIGINAL", "PRIMARY", "OTHER"),
                 rescale=(SLOPE, INTERCEPT)) -> None:
    sop_instance = _uid(series_uid, k, instance, times)
    ds = _base_dataset(study, series_uid, series_number, description, "MR", pydicom.uid.MRImageStorage,
                       sop_instance)
    ds.ImageType = list(image_type)
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in _slice_position(k)]
    ds.ImageOrientationPatient = [float(v) for v in np.concatenate([ROW_COSINE, COLUMN_COSINE])]
    ds.PixelSpacing = list(PIXEL_SPACING)
    ds.SliceThickness = SLICE_STEP
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = rescale
    for key, value in times.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _write_seg(path: Path, study: dict, series_uid: str, series_number: int, description: str, mask: np.ndarray,
               referenced_series: str, slice_shift: float = 0.0) -> None:
    """A binary DICOM SEG with one frame per slice that holds tumour (as SEG writers usually do)."""
    sop_instance = _uid(series_uid, "seg")
    ds = _base_dataset(study, series_uid, series_number, description, "SEG", nact.SEG_SOP_CLASS_UID, sop_instance)
    frames = [k for k in range(mask.shape[0]) if mask[k].any()]
    ds.SegmentationType = "BINARY"
    ds.Rows, ds.Columns = mask.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.NumberOfFrames = len(frames)
    segment = pydicom.dataset.Dataset()
    segment.SegmentNumber, segment.SegmentLabel, segment.SegmentAlgorithmType = 1, "tumor", "SEMIAUTOMATIC"
    ds.SegmentSequence = [segment]
    shared = pydicom.dataset.Dataset()
    orientation, measures = pydicom.dataset.Dataset(), pydicom.dataset.Dataset()
    orientation.ImageOrientationPatient = [float(v) for v in np.concatenate([ROW_COSINE, COLUMN_COSINE])]
    measures.PixelSpacing, measures.SliceThickness, measures.SpacingBetweenSlices = list(PIXEL_SPACING), 2.0, 2.0
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orientation], [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in frames:
        group, plane, ident = pydicom.dataset.Dataset(), pydicom.dataset.Dataset(), pydicom.dataset.Dataset()
        plane.ImagePositionPatient = [float(v) for v in _slice_position(k + slice_shift)]
        ident.ReferencedSegmentNumber = 1
        group.PlanePositionSequence, group.SegmentIdentificationSequence = [plane], [ident]
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    reference = pydicom.dataset.Dataset()
    reference.SeriesInstanceUID = referenced_series
    ds.ReferencedSeriesSequence = [reference]
    ds.PixelData = pydicom.pixels.pack_bits(mask[frames].astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _folder_name(rng: np.random.Generator, text: str) -> str:
    # NBIA-like "<number>-<description>-<number>" with random numbers: folder order says nothing
    return f"{rng.integers(1, 99999)}.000000-{text}-{rng.integers(10000, 99999)}"


def write_study(patient_dir: Path, rng: np.random.Generator, patient_id: str, date: str, *, kind: str = "seg_refs_dce",
                timing_keys=tuple(PHASE_TIMES), instance_order: str = "phase_major", dce_number: int = 5,
                n_phases: int = 3, seg_slice_shift: float = 0.0) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Write one study; return the stored DCE arrays per phase and the tumour mask (None if unlabelled).

    kind: "seg_refs_dce" (SEG references the DCE series), "voi_seg_refs_pe" (VOI SEG references the PE map),
    "unlabelled" (breast tissue SEG only) or "mask_series" (tumour mask as an image series, no references).
    """
    study = {"patient": patient_id, "uid": _uid(patient_id, date), "date": date}
    study_dir = patient_dir / _folder_name(rng, "MR BREAST UNI")
    description = "Sagittal IR 3DFGRE"
    pre = rng.integers(100, 1000, SHAPE).astype(np.uint16)
    tumour = np.zeros(SHAPE, dtype=np.uint8)
    tumour[1:3, 2:5, 3:6] = 1
    phases = [pre, (pre + 300 + 200 * tumour).astype(np.uint16), (pre + 150 + 50 * tumour).astype(np.uint16)]
    phases = phases[:n_phases]

    dce_uid = _uid(study["uid"], "dce")
    dce_dir = study_dir / _folder_name(rng, description)
    files = [(p, k) for p in range(n_phases) for k in range(SHAPE[0])]
    names = rng.permutation(len(files)) + 1  # random file names: file order is not phase/slice order
    for (p, k), name in zip(files, names):
        if instance_order == "phase_major":
            instance = p * SHAPE[0] + k + 1
        else:  # slice-major numbering would give wrong phases if InstanceNumber were used
            instance = k * n_phases + p + 1
        times = {key: PHASE_TIMES[key][p] for key in timing_keys}
        if "TriggerTime" in times:
            times["TriggerTime"] = times["TriggerTime"] + 10.0 * k  # slices of one phase differ a little
        _write_slice(dce_dir / f"1-{name:03d}.dcm", study, dce_uid, dce_number, description, phases[p][k], k,
                     instance, times)

    pe_uid = _uid(study["uid"], "pe")
    pe_dir = study_dir / _folder_name(rng, f"{description}: PE1")
    for k in range(SHAPE[0]):
        _write_slice(pe_dir / f"1-{k + 1:02d}.dcm", study, pe_uid, dce_number * 10000 + 1001, f"{description}: PE1",
                     phases[min(1, n_phases - 1)][k], k, k + 1, {}, image_type=("DERIVED", "SECONDARY"))
    t2_uid, t2_dir = _uid(study["uid"], "t2"), study_dir / _folder_name(rng, "T2 FSE")
    for k in range(SHAPE[0]):
        _write_slice(t2_dir / f"1-{k + 1:02d}.dcm", study, t2_uid, 3, "Sag T2 FSE", pre[k] // 2, k, k + 1, {})
    breast = np.zeros(SHAPE, dtype=np.uint8)
    breast[:, 1:7, 1:7] = 1
    _write_seg(study_dir / _folder_name(rng, "Breast Tissue Segmentation") / "1-1.dcm", study,
               _uid(study["uid"], "breast"), dce_number * 10000 + 2001, "Breast Tissue Segmentation", breast, dce_uid)

    if kind == "unlabelled":
        return phases, None
    if kind == "seg_refs_dce":
        _write_seg(study_dir / _folder_name(rng, "PE Segmentation thresh=70") / "1-1.dcm", study,
                   _uid(study["uid"], "tumour"), dce_number * 10000 + 2000, "PE Segmentation thresh=70", tumour,
                   dce_uid, slice_shift=seg_slice_shift)
    elif kind == "voi_seg_refs_pe":
        _write_seg(study_dir / _folder_name(rng, "VOI PE Segmentation thresh=70") / "1-1.dcm", study,
                   _uid(study["uid"], "tumour"), 77, "VOI PE Segmentation thresh=70", tumour, pe_uid,
                   slice_shift=seg_slice_shift)
    elif kind == "mask_series":
        mask_uid, mask_dir = _uid(study["uid"], "mask"), study_dir / _folder_name(rng, "mask")
        for k in range(SHAPE[0]):
            _write_slice(mask_dir / f"1-{k + 1:02d}.dcm", study, mask_uid, 900, "PE Segmentation thresh=70",
                         tumour[k] * 255, k, k + 1, {}, image_type=("DERIVED", "SECONDARY"), rescale=(1.0, 0.0))
    return phases, tumour


def write_tree(root: Path, seed: int = 0) -> dict[str, FakePatient]:
    """Four patients: SEG->DCE (two visits), VOI SEG->PE map, unlabelled, tumour mask as an image series."""
    rng = np.random.default_rng(seed)
    specs = {"UCSF-BR-01": ["seg_refs_dce", "seg_refs_dce"], "UCSF-BR-02": ["voi_seg_refs_pe"],
             "UCSF-BR-03": ["unlabelled"], "UCSF-BR-04": ["mask_series"]}
    truth = {}
    for patient_id, kinds in specs.items():
        fake = truth[patient_id] = FakePatient(patient_id)
        for visit, kind in enumerate(kinds):
            # the later visit is written first so creation order is not chronological either
            date = f"199{8 - visit}0301"
            phases, tumour = write_study(root / patient_id, rng, patient_id, date, kind=kind)
            fake.phases.insert(0, phases)
            fake.tumour.insert(0, tumour)
    return truth


def expected_image(stored: np.ndarray):
    """The SimpleITK image the converter must produce from stored slices k = 0.. (sorted along the normal)."""
    image = sitk.GetImageFromArray(stored.astype(np.float32) * SLOPE + INTERCEPT)
    image.SetOrigin(ORIGIN.tolist())
    image.SetSpacing([PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_STEP])
    image.SetDirection(np.column_stack([ROW_COSINE, COLUMN_COSINE, NORMAL]).ravel().tolist())
    return image


def assert_same_image(actual, expected) -> None:
    np.testing.assert_array_equal(sitk.GetArrayFromImage(actual), sitk.GetArrayFromImage(expected))
    np.testing.assert_allclose(actual.GetOrigin(), expected.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(actual.GetSpacing(), expected.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(actual.GetDirection(), expected.GetDirection(), atol=1e-6)


def convert(src: Path, raw: Path, **options):
    defaults = dict(dataset_id=11, pre_only_id=12, raw=str(raw))
    return nact.convert(src, **{**defaults, **options})


def assert_no_output(raw: Path) -> None:
    assert not raw.exists() or not any(raw.iterdir()), sorted(p.name for p in raw.iterdir())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("nact")
    download, raw = root / "download", root / "raw"
    src = download / "Breast-MRI-NACT-Pilot"
    truth = write_tree(src)
    before = tree_hash(src)
    folders = convert(download, raw)  # the folder holding the collection folder works as well
    return SimpleNamespace(src=src, raw=raw, truth=truth, folders=folders, hash_before=before)


def _case_files(folder: Path, case: str) -> tuple[str, list[Path], Path]:
    for split in ("Tr", "Ts"):
        images = sorted((folder / f"images{split}").glob(f"{case}_*.nii.gz"))
        if images:
            return split, images, folder / f"labels{split}" / f"{case}.nii.gz"
    raise AssertionError(f"{case} not found in {folder}")


def test_outputs_pass_nnunet_integrity_check(converted, verify_with_nnunet):
    for folder in converted.folders:
        verify_with_nnunet(folder)


def test_dataset_json_links_the_two_datasets(converted):
    dce_folder, pre_folder = converted.folders
    assert dce_folder.name == "Dataset011_BreastMRINACTPilot"
    assert pre_folder.name == "Dataset012_BreastMRINACTPilotPreOnly"
    dce_json = json.loads((dce_folder / "dataset.json").read_text())
    pre_json = json.loads((pre_folder / "dataset.json").read_text())
    assert dce_json["channel_names"] == {"0": "pre", "1": "post1", "2": "post2"}
    assert pre_json["channel_names"] == {"0": "pre"}
    assert dce_json["labels"] == pre_json["labels"] == {"background": 0, "tumor": 1}
    assert dce_json["pre_only_dataset"] == pre_folder.name and pre_json["paired_dce_dataset"] == dce_folder.name
    assert dce_json["unlabeled_cases"] == ["UCSF-BR-03"]
    assert len(dce_json["test_cases"]) == 1 and dce_json["test_cases"] == pre_json["test_cases"]
    assert dce_json["numTraining"] == 3 and pre_json["numTraining"] == 2
    cases = dce_json["conversion"]["cases"]
    assert cases["UCSF-BR-01"]["study_date"] == "19970301"  # earliest study, not the first written
    assert cases["UCSF-BR-01"]["timing_tag"] == "TemporalPositionIdentifier"
    assert cases["UCSF-BR-02"]["segmentation_series"]["description"] == "VOI PE Segmentation thresh=70"
    assert cases["UCSF-BR-04"]["segmentation_series"]["modality"] == "MR"
    assert sorted(pre_json["conversion"]["cases"]) == ["UCSF-BR-01", "UCSF-BR-02", "UCSF-BR-04"]


@pytest.mark.parametrize("patient", ["UCSF-BR-01", "UCSF-BR-02", "UCSF-BR-03", "UCSF-BR-04"])
def test_pixels_geometry_and_labels_preserved(converted, patient):
    dce_folder, pre_folder = converted.folders
    fake = converted.truth[patient]
    split, images, label_file = _case_files(dce_folder, patient)
    assert len(images) == 3
    for channel, stored in enumerate(fake.phases[0]):  # channel order = time order from the metadata
        assert_same_image(sitk.ReadImage(str(images[channel])), expected_image(stored))
    label = sitk.ReadImage(str(label_file))
    expected_label = fake.tumour[0] if fake.tumour[0] is not None else np.zeros(SHAPE, np.uint8)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), expected_label)
    assert label.GetOrigin() == sitk.ReadImage(str(images[0])).GetOrigin()
    pre_images = sorted(pre_folder.glob(f"images*/{patient}_*.nii.gz"))
    if fake.tumour[0] is None:
        assert split == "Tr" and pre_images == []
    else:
        assert [p.parent.name for p in pre_images] == [f"images{split}"] and pre_images[0].name.endswith("_0000.nii.gz")
        assert_same_image(sitk.ReadImage(str(pre_images[0])), expected_image(fake.phases[0][0]))


def test_source_tree_unchanged(converted):
    assert tree_hash(converted.src) == converted.hash_before


def test_subtraction_adds_sub_to_the_dce_dataset_only(converted, tmp_path, verify_with_nnunet):
    from tests.datasets_conversion.helpers import assert_subtraction_channel

    raw = tmp_path / "raw"
    argv = ["-i", str(converted.src.parent), "-d", "11", "--pre_only_id", "12", "--raw", str(raw), "--subtraction"]
    assert nact.main(argv) == 0
    dce, pre_only = raw / "Dataset011_BreastMRINACTPilot", raw / "Dataset012_BreastMRINACTPilotPreOnly"
    assert_subtraction_channel(dce, pre_only, plain_pre_only=converted.folders[1], n_post=2)
    verify_with_nnunet(dce)


@pytest.mark.parametrize("timing_key", ["TemporalPositionIdentifier", "TriggerTime", "AcquisitionTime",
                                        "ContentTime", "InstanceNumber"])
def test_phase_order_follows_timing_metadata(tmp_path, timing_key):
    src = tmp_path / "src"
    keys = () if timing_key == "InstanceNumber" else (timing_key,)
    order = "phase_major" if timing_key == "InstanceNumber" else "slice_major"
    phases, _ = write_study(src / "UCSF-BR-07", np.random.default_rng(3), "UCSF-BR-07", "20000101",
                            timing_keys=keys, instance_order=order)
    dce_folder, _ = convert(src, tmp_path / "raw", test_fraction=0.0)
    for channel, stored in enumerate(phases):
        image = sitk.ReadImage(str(dce_folder / "imagesTr" / f"UCSF-BR-07_{channel:04d}.nii.gz"))
        assert_same_image(image, expected_image(stored))
    provenance = json.loads((dce_folder / "dataset.json").read_text())["conversion"]["cases"]["UCSF-BR-07"]
    assert provenance["timing_tag"] == timing_key


def _drop_post2(src: Path) -> str:
    for path in (src / "UCSF-BR-02").rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.get("TemporalPositionIdentifier") == 3:
            path.unlink()
    return "UCSF-BR-02"


def _drop_one_post2_slice(src: Path) -> str:
    for path in sorted((src / "UCSF-BR-02").rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.get("TemporalPositionIdentifier") == 3:
            path.unlink()
            return "UCSF-BR-02"
    raise AssertionError("no post2 slice found")


def _corrupt_file(src: Path) -> tuple[str, str]:
    path = sorted((src / "UCSF-BR-03").rglob("*.dcm"))[5]
    path.write_bytes(b"this is not a DICOM file" * 10)
    return "UCSF-BR-03", path.name


def _truncate_pixels(src: Path) -> tuple[str, str]:
    for path in sorted((src / "UCSF-BR-01").rglob("*.dcm")):
        if pydicom.dcmread(path, stop_before_pixels=True).get("TemporalPositionIdentifier") == 2:
            path.write_bytes(path.read_bytes()[:-40])
            return "UCSF-BR-01", path.name
    raise AssertionError("no DCE slice found")


def _seg_off_grid(src: Path) -> tuple[str, str]:
    rng = np.random.default_rng(5)
    patient_dir = src / "UCSF-BR-05"
    write_study(patient_dir, rng, "UCSF-BR-05", "19990101", seg_slice_shift=0.25)
    return "UCSF-BR-05", "PE Segmentation thresh=70"


def _non_uniform_spacing(src: Path) -> str:
    for path in sorted((src / "UCSF-BR-04").rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.get("TemporalPositionIdentifier") is not None and ds.InstanceNumber in (4, 8, 12):
            ds.ImagePositionPatient = [float(v) for v in _slice_position(3.3)]  # last slice of every phase moved
            ds.save_as(path, enforce_file_format=True)
    return "UCSF-BR-04"


@pytest.mark.parametrize("mutate, message", [
    (_drop_post2, "missing phase"),
    (_drop_one_post2_slice, "missing"),
    (_corrupt_file, "cannot read DICOM file"),
    (_truncate_pixels, "pixel data"),
    (_seg_off_grid, "not on the pre-contrast grid"),
    (_non_uniform_spacing, "non-uniform slice spacing"),
])
def test_bad_input_raises_and_writes_nothing(tmp_path, mutate, message):
    src, raw = tmp_path / "src", tmp_path / "raw"
    write_tree(src)
    result = mutate(src)
    patient, file_hint = result if isinstance(result, tuple) else (result, ".dcm")
    before = tree_hash(src)
    with pytest.raises(UserInputError) as info:
        convert(src, raw)
    text = str(info.value)
    assert message in text and patient in text and file_hint in text and "\n" not in text
    assert_no_output(raw)
    assert tree_hash(src) == before


def test_empty_source_is_an_error(tmp_path):
    (tmp_path / "src" / "UCSF-BR-01").mkdir(parents=True)
    with pytest.raises(UserInputError, match="no patient folders"):
        convert(tmp_path / "src", tmp_path / "raw")
    assert_no_output(tmp_path / "raw")


def test_resample_to_pre_puts_off_grid_segmentation_on_the_pre_grid(tmp_path):
    src = tmp_path / "src"
    _, tumour = write_study(src / "UCSF-BR-05", np.random.default_rng(5), "UCSF-BR-05", "19990101",
                            seg_slice_shift=0.25)
    dce_folder, _ = convert(src, tmp_path / "raw", test_fraction=0.0, resample_to_pre=True)
    label = sitk.ReadImage(str(dce_folder / "labelsTr" / "UCSF-BR-05.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), tumour)  # a quarter slice: nearest is exact
    resampled = json.loads((dce_folder / "dataset.json").read_text())["conversion"]["resampled_to_pre"]
    assert resampled == {"UCSF-BR-05": ["seg"]}


def test_skip_incomplete_lists_skipped_patients(tmp_path):
    src = tmp_path / "src"
    write_tree(src)
    _drop_post2(src)
    dce_folder, pre_folder = convert(src, tmp_path / "raw", skip_incomplete=True)
    dce_json = json.loads((dce_folder / "dataset.json").read_text())
    assert list(dce_json["skipped_cases"]) == ["UCSF-BR-02"]
    assert "missing phase" in dce_json["skipped_cases"]["UCSF-BR-02"]
    assert not list(dce_folder.glob("images*/UCSF-BR-02_*"))


def test_all_visits_keep_a_patient_in_one_split(tmp_path):
    src = tmp_path / "src"
    truth = write_tree(src)
    dce_folder, _ = convert(src, tmp_path / "raw", visits="all", test_fraction=0.5, seed=1)
    first = _case_files(dce_folder, "UCSF-BR-01_visit1")
    second = _case_files(dce_folder, "UCSF-BR-01_visit2")
    assert first[0] == second[0]
    assert_same_image(sitk.ReadImage(str(second[1][2])), expected_image(truth["UCSF-BR-01"].phases[1][2]))


def test_existing_dataset_id_is_refused_unless_overwrite(tmp_path):
    src, raw = tmp_path / "src", tmp_path / "raw"
    write_study(src / "UCSF-BR-06", np.random.default_rng(6), "UCSF-BR-06", "19990101")
    (raw / "Dataset012_Other").mkdir(parents=True)
    with pytest.raises(UserInputError, match="dataset id 12 already exists"):
        convert(src, raw, test_fraction=0.0)
    with pytest.raises(UserInputError, match="refusing to replace .*Dataset012_Other"):
        convert(src, raw, test_fraction=0.0, overwrite=True)  # not written by nnunet-ext: never replaced
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset012_Other"]
    (raw / "Dataset012_Other" / MARKER).write_text("{}")
    convert(src, raw, test_fraction=0.0, overwrite=True)
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset011_BreastMRINACTPilot",
                                                       "Dataset012_BreastMRINACTPilotPreOnly"]


def test_cli_reports_errors_on_one_line(tmp_path, capsys):
    src = tmp_path / "src"
    write_study(src / "UCSF-BR-06", np.random.default_rng(6), "UCSF-BR-06", "19990101", n_phases=2)
    argv = ["-i", str(src), "-d", "21", "--pre_only_id", "22", "--raw", str(tmp_path / "raw")]
    assert nact.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "UCSF-BR-06" in err and "missing phase" in err
    assert nact.main(argv + ["--n_post", "1", "--test_fraction", "0"]) == 0
    assert (tmp_path / "raw" / "Dataset021_BreastMRINACTPilot" / "imagesTr" / "UCSF-BR-06_0001.nii.gz").is_file()
