"""The bad-input suite: one table of bad inputs covering every ``nnunet-ext`` verb.

Each row runs ``nnunet_ext.cli.main(argv)`` in-process inside a fresh copy of a small "world" (nnU-Net folders, a tiny
raw dataset, reference/prediction label maps, a DCE NIfTI folder, a fake TCIA DICOM tree, pre-contrast images and a
fake trained DKM model) and asserts the house rules for bad input:

* exit code 2;
* stderr is exactly one non-empty line ``nnunet-ext VERB: error: ...`` that matches the row's regex;
* no partial output: the row's output path is absent, and no file or folder appeared anywhere in the world;
* the user's files are untouched: sha256 of every file in the world is the same before and after.

A new verb (or a new bad input) joins by adding rows to :data:`CASES`. The ``synth`` rows are generated from each
phantom kind's declared options (unknown key per kind; a wrong type and an out-of-range value per option), so a new
option gets its rows automatically. Heavy work (fingerprinting, training, model loading) is replaced by a tripwire:
a row that gets past validation fails fast with :class:`WorkStarted` instead of running for minutes.
``count_cases()`` is read by the results script (``bad_input_cases``).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from nnunet_ext.cli import COMMANDS, main
from nnunet_ext.synth.cli import KIND_MODULES, get_kind
from nnunet_ext.synth.options import Choice, Flag, Integer, Number, Numbers, Option, RangePair

W = "{w}"  # placeholder for the world root in argv


@dataclass(frozen=True)
class Case:
    """One bad input.

    Args:
        id: test id.
        argv: command line after ``nnunet-ext``; ``{w}`` is replaced by the world folder.
        error: regex searched in the single stderr line (after ``VERB: error: ``).
        setup: ``setup(world, monkeypatch)`` breaks the world before the call (corrupt a file, unset a variable).
        absent: output path (with ``{w}``) that must not exist afterwards.
        xfail: reason, when the row documents a known gap owned by someone else.
    """

    id: str
    argv: tuple[str, ...]
    error: str
    setup: Callable[[Path, pytest.MonkeyPatch], None] | None = None
    absent: str | None = None
    xfail: str | None = None

    @property
    def verb(self) -> str:
        return self.argv[0] if self.argv and self.argv[0] in COMMANDS else ""


def _case(id: str, argv: list[str], error: str, setup=None, absent=None, xfail=None) -> Case:
    return Case(id, tuple(argv), error, setup, absent, xfail)


# ----------------------------------------------------------------------------------------------------------------------
# world setup helpers (each breaks one thing in the world copy of one row)


def _write_label(path: Path, array: np.ndarray, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                 direction=None) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(spacing)])
    image.SetOrigin([float(o) for o in reversed(origin)])
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)


def _label_map(seed: int) -> np.ndarray:
    label = np.zeros((4, 8, 8), np.uint8)
    label[1:3, 2 + seed:5 + seed, 2:6] = 1
    return label


def _unset(variable: str):
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(variable, raising=False)
    return setup


def _no_cuda(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _garbage(relative: str, content: bytes = b"this is not an image file " * 8):
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (world / relative).write_bytes(content)
    return setup


def _truncate(relative: str, keep: float = 0.5):
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        data = (world / relative).read_bytes()
        (world / relative).write_bytes(data[:int(len(data) * keep)])
    return setup


def _delete(relative: str):
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        target = world / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return setup


def _empty(relative: str):
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        for path in (world / relative).iterdir():
            path.unlink()
    return setup


def _folder(relative: str, files: dict[str, bytes] | None = None, marker_by: str | None = None):
    """A folder that exists before the call (a user's, or another verb's output)."""
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        folder = world / relative
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in (files or {}).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
        if marker_by is not None:
            from nnunet_ext.atomic import write_marker
            write_marker(folder, marker_by)
    return setup


def _file(relative: str, content: bytes = b"a user's file\n"):
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (world / relative).write_bytes(content)
    return setup


def _image(relative: str, array: np.ndarray, **geometry):
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        _write_label(world / relative, array, **geometry)
    return setup


def _json(relative: str, content: Any):
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (world / relative).write_text(content if isinstance(content, str) else json.dumps(content))
    return setup


def _torch_save(relative: str, content: Any):
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import torch

        torch.save(content, world / relative)
    return setup


def _in_process_integrity_check(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nnU-Net's integrity check without its spawn pool (as tests/conftest.py's fixture does)."""
    from types import SimpleNamespace

    from nnunetv2.experiment_planning import verify_dataset_integrity as vdi

    from tests.conftest import InProcessPool

    monkeypatch.setattr(vdi, "multiprocessing", SimpleNamespace(
        get_context=lambda method: SimpleNamespace(Pool=InProcessPool)))
    bad = _label_map(0)
    bad[0, 0, 0] = 3  # dataset.json declares labels 0 and 1 only
    _write_label(world / "raw" / "Dataset005_Tiny" / "labelsTr" / "case_0000.nii.gz", bad)


def _dicom_first_of_phase(world: Path, temporal_position: int) -> Path:
    import pydicom

    for path in sorted((world / "dicom" / "UCSF-BR-01").rglob("*.dcm")):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if header.get("TemporalPositionIdentifier") == temporal_position:
            return path
    raise AssertionError(f"no DCE slice of phase {temporal_position} in the fake DICOM tree")


def _corrupt_dicom(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dicom_first_of_phase(world, 2).write_bytes(b"this is not a DICOM file" * 10)


def _truncate_dicom_pixels(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _dicom_first_of_phase(world, 2)
    path.write_bytes(path.read_bytes()[:-40])


def _dicom_seg_off_grid(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.datasets_conversion.test_breast_mri_nact_pilot import write_study

    write_study(world / "dicom" / "UCSF-BR-05", np.random.default_rng(5), "UCSF-BR-05", "19990101",
                seg_slice_shift=0.25)


def _camus_gt(array: np.ndarray, spacing=(0.3, 0.15)):
    """Replace the world's CAMUS segmentation of patient0001 2CH ES by ``array`` ((y, x) spacing in mm)."""
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from tests.datasets_conversion.test_camus import write_frame

        write_frame(world / "camus" / "training" / "patient0001" / "patient0001_2CH_ES_gt.mhd", array, spacing,
                    singleton=True)
    return setup


def _bhsd_volume(relative: str, array: np.ndarray, **geometry):
    """Replace a volume of the world's fake BHSD release (``bhsd/label_192/...``)."""
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from tests.datasets_conversion.test_bhsd import write_volume

        write_volume(world / "bhsd" / relative, array, **geometry)
    return setup


def _bhsd_split_overlap(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The world's BHSD split file with one training scan listed for test too."""
    from tests.datasets_conversion.test_bhsd import TEST, TRAIN

    (world / "bhsd" / "dataset.json").write_text(json.dumps({
        "training": [{"image": f"./imagesTr/{n}.nii.gz"} for n in TRAIN],
        "test": [f"./imagesTs/{n}.nii.gz" for n in TEST + TRAIN[:1]]}))


def _brats_volume(case: str, suffix: str, array: np.ndarray, **geometry):
    """Replace a file of the world's fake BraTS-GLI release (``brats/<training folder>/<case>/<case>-<suffix>``)."""
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from tests.datasets_conversion.test_brats2023 import case_path, write_volume

        write_volume(case_path(world / "brats", case, suffix), array, **geometry)
    return setup


def _oasis_description(**changes):
    """Rewrite the world's fake OASIS_dataset.json with ``changes``."""
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from tests.datasets_conversion.test_oasis_learn2reg import write_description

        write_description(world / "oasis" / "OASIS", **changes)
    return setup


def _oasis_label(case: str, array: np.ndarray, spacing=(1.0, 1.0, 1.0)):
    """Replace the label of ``case`` in the world's fake OASIS download (1 mm grid at the origin)."""
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        _write_label(world / "oasis" / "OASIS" / "labelsTr" / f"{case}_0000.nii.gz", array, spacing=spacing)
    return setup


def _regpairs_volume(relative: str, array: np.ndarray, **geometry):
    """Replace a volume of the world's fake registration-pairs folder (8 x 10 x 12 at 2 x 1 x 1 mm)."""
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from tests.datasets_conversion.test_registration_pairs import write_volume

        write_volume(world / "regpairs" / relative, array, **geometry)
    return setup


def _img2d_nan_nifti(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Image a as NIfTI (its mask stays a.png) with one NaN pixel."""
    image = np.ones((12, 10), np.float32)
    image[4, 5] = np.nan
    (world / "img2d" / "images" / "a.png").unlink()
    _write_label(world / "img2d" / "images" / "a.nii.gz", image, spacing=(1.0, 1.0), origin=(0.0, 0.0))


def _img2d_clash(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a b.png", "a_b.png"):
        _png(world / "img2d" / "images" / name, np.zeros((12, 10)))
        _png(world / "img2d" / "masks" / name, np.zeros((12, 10)))


def _cbis(damage: str | None = None):
    """Write three images of the fake CBIS-DDSM DICOM release of tests/datasets_conversion/test_cbis_ddsm.py into
    ``cbis/`` (no metadata.csv: the DICOM headers resolve its CSV paths) and break it: ``corrupt`` a full mammogram,
    ``unresolvable`` the first CSV image path, ``no_csvs`` the case CSVs deleted."""
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from tests.datasets_conversion import test_cbis_ddsm as fake

        root = fake.write_dicom_release(world / "cbis", metadata=False, specs=fake.SPECS[:3])
        if damage == "corrupt":
            fake.full_file(root, fake.SPECS[1]).write_bytes(b"this is not a DICOM file" * 10)
        elif damage == "unresolvable":
            fake.write_case_csvs(root, fake.SPECS[:3], rows_for=fake.unknown_image_series)
        elif damage == "no_csvs":
            for path in root.glob("*_case_description_*.csv"):
                path.unlink()
    return setup


# ----------------------------------------------------------------------------------------------------------------------
# rows: synth (generated from the declared options of every kind)

SYNTH_OUT = f"{W}/synth_raw"  # absent: synth refuses before it creates anything
SYNTH_BASE = ["-d", "7", "--cases", "1", "--test_cases", "0", "--raw", SYNTH_OUT]


def _wrong_type(option: Option) -> Any:
    """A value of the wrong JSON type for ``option`` (never null, which optional options accept)."""
    kind = option.type
    if isinstance(kind, Number):
        return "abc"
    if isinstance(kind, Integer):
        return 2.5
    if isinstance(kind, Flag):
        return 1
    if isinstance(kind, Choice):
        return 3
    if isinstance(kind, RangePair):
        return "abc" if kind.single else 5
    if isinstance(kind, Numbers):
        return [8] * (kind.length - 1) + ["x"]
    raise AssertionError(f"no wrong-type value for {option}")


def _outside(element: Number | Integer) -> float | int:
    """A value of the element's type just outside its allowed range."""
    step = 1 if isinstance(element, Integer) else 0.5
    if element.minimum is not None:
        return element.minimum if getattr(element, "exclusive_minimum", False) else element.minimum - step
    return element.maximum + step


def _out_of_range(option: Option) -> Any | None:
    """A value of the right type but outside the allowed values; None for flags (true/false are all allowed)."""
    kind = option.type
    if isinstance(kind, (Number, Integer)):
        return _outside(kind)
    if isinstance(kind, Choice):
        return "not_a_choice"
    if isinstance(kind, RangePair):
        inside = kind.element.maximum if kind.element.maximum is not None else (kind.element.minimum or 0) + 1
        return [_outside(kind.element), inside]
    if isinstance(kind, Numbers):
        return [_outside(kind.element)] * kind.length
    return None


def _synth_option_rows() -> list[Case]:
    rows = []
    for kind_name in KIND_MODULES:
        kind = get_kind(kind_name)
        rows.append(_case(f"synth-{kind_name}-unknown_option", ["synth", kind_name, *SYNTH_BASE, "--option",
                                                                "bogus=1"],
                          rf"^{kind_name}: unknown option bogus \(options: shape, ", absent=SYNTH_OUT))
        for option in kind.option_specs:
            values = {"wrong_type": _wrong_type(option), "out_of_range": _out_of_range(option)}
            for what, value in values.items():
                if value is None:
                    continue
                rows.append(_case(f"synth-{kind_name}-{option.name}-{what}",
                                  ["synth", kind_name, *SYNTH_BASE, "--option", f"{option.name}={json.dumps(value)}"],
                                  rf"^{kind_name}: option {option.name}=.* is invalid: expected ",
                                  absent=SYNTH_OUT))
    return rows


SYNTH_ROWS = _synth_option_rows() + [
    _case("synth-unknown_kind", ["synth", "lungs", *SYNTH_BASE], r"unknown synth kind 'lungs' \(choose from breast_dce"),
    _case("synth-zero_cases", ["synth", "mammo_2d", *SYNTH_BASE, "--cases", "0"], r"--cases must be >= 1, got 0",
          absent=SYNTH_OUT),
    _case("synth-negative_test_cases", ["synth", "mammo_2d", *SYNTH_BASE, "--test_cases", "-1"],
          r"--test_cases must be >= 0, got -1", absent=SYNTH_OUT),
    _case("synth-dataset_id_1000", ["synth", "mammo_2d", *SYNTH_BASE, "-d", "1000"],
          r"dataset id must be in 1\.\.999, got 1000", absent=SYNTH_OUT),
    _case("synth-dataset_id_not_a_number", ["synth", "mammo_2d", "-d", "seven"],
          r"argument -d: invalid int value: 'seven'"),
    _case("synth-missing_dataset_id", ["synth", "mammo_2d", "--raw", SYNTH_OUT], r"-d DATASET_ID is required",
          absent=SYNTH_OUT),
    _case("synth-no_raw_folder", ["synth", "mammo_2d", "-d", "7"], r"no output folder: set nnUNet_raw",
          setup=_unset("nnUNet_raw")),
    _case("synth-existing_id", ["synth", "head_ct_ich", "-d", "5", "--raw", f"{W}/raw", "--cases", "1"],
          r"dataset id 5 already exists at .*Dataset005_Tiny \(pass --overwrite"),
    _case("synth-existing_foreign_id_overwrite", ["synth", "head_ct_ich", "-d", "5", "--raw", f"{W}/raw", "--cases",
                                                  "1", "--overwrite"],
          r"refusing to replace .*Dataset005_Tiny: it was not written by nnunet-ext"),
    _case("synth-option_without_value", ["synth", "ultrasound_2d", *SYNTH_BASE, "--option", "scene"],
          r"--option expects KEY=VALUE, got 'scene'", absent=SYNTH_OUT),
    _case("synth-option_twice", ["synth", "ultrasound_2d", *SYNTH_BASE, "--option", "scene=cardiac", "--option",
                                 "scene=fetal_head"], r"--option scene is given twice", absent=SYNTH_OUT),
    _case("synth-shape_flag_2d_for_3d", ["synth", "breast_dce", *SYNTH_BASE, "--shape", "32", "32"],
          r"breast_dce: option shape=\[32, 32\] is invalid: expected 3 integers each >= 8 \(z y x\)",
          absent=SYNTH_OUT),
    _case("synth-shape_flag_not_integer", ["synth", "breast_dce", *SYNTH_BASE, "--shape", "8", "x", "8"],
          r"argument --shape: invalid int value: 'x'"),
    _case("synth-pre_only_id_same", ["synth", "breast_dce", *SYNTH_BASE, "--pre_only_id", "7"],
          r"--pre_only_id must differ from -d", absent=SYNTH_OUT),
    _case("synth-pre_only_single_channel", ["synth", "mammo_2d", *SYNTH_BASE, "--pre_only_id", "8"],
          r"--pre_only_id needs a multi-channel kind", absent=SYNTH_OUT),
    _case("synth-labeled_cases_too_many", ["synth", "breast_dce", *SYNTH_BASE, "--pre_only_id", "8",
                                           "--labeled_cases", "3"], r"--labeled_cases must be in 1\.\.1, got 3",
          absent=SYNTH_OUT),
    # --subtraction / --subregions: shorthands for --option NAME=true, refused by a kind without that option
    _case("synth-subtraction_flag_kind_without_it", ["synth", "head_ct_ich", *SYNTH_BASE, "--subtraction"],
          r"^head_ct_ich: unknown option subtraction \(options: shape, ", absent=SYNTH_OUT),
    _case("synth-subregions_flag_kind_without_it", ["synth", "mammo_2d", *SYNTH_BASE, "--subregions"],
          r"^mammo_2d: unknown option subregions \(options: shape, ", absent=SYNTH_OUT),
    _case("synth-subtraction_flag_and_option", ["synth", "breast_dce", *SYNTH_BASE, "--subtraction", "--option",
                                                "subtraction=true"],
          r"subtraction is given twice \(--subtraction and --option subtraction=\.\.\.\)", absent=SYNTH_OUT),
]

# ----------------------------------------------------------------------------------------------------------------------
# rows: evaluate

EVAL = ["evaluate", "-ref", f"{W}/eval/ref", "-pred", f"{W}/eval/pred"]
PRED1 = "eval/pred/case_001.nii.gz"

EVALUATE_ROWS = [
    _case("evaluate-missing_reference_folder", ["evaluate", "-ref", f"{W}/nope", "-pred", f"{W}/eval/pred"],
          r"reference folder not found: .*nope"),
    _case("evaluate-missing_prediction_folder", ["evaluate", "-ref", f"{W}/eval/ref", "-pred", f"{W}/nope"],
          r"prediction folder not found: .*nope"),
    _case("evaluate-missing_prediction", EVAL, r"reference case_001\.nii\.gz has no prediction",
          setup=_delete(PRED1)),
    _case("evaluate-no_references", EVAL, r"no reference images", setup=_empty("eval/ref")),
    _case("evaluate-shape_mismatch", EVAL, r"case_001\.nii\.gz: shape mismatch, reference \(4, 8, 8\) vs prediction "
                                           r"\(4, 8, 9\)", setup=_image(PRED1, np.zeros((4, 8, 9), np.uint8))),
    _case("evaluate-spacing_mismatch", EVAL, r"case_001\.nii\.gz: spacing mismatch",
          setup=_image(PRED1, _label_map(1), spacing=(2.0, 1.0, 1.1))),
    _case("evaluate-origin_mismatch", EVAL, r"case_001\.nii\.gz: origin mismatch",
          setup=_image(PRED1, _label_map(1), origin=(0.0, 0.5, 0.0))),
    _case("evaluate-direction_mismatch", EVAL, r"case_001\.nii\.gz: direction mismatch",
          setup=_image(PRED1, _label_map(1), direction=(0, 1, 0, 1, 0, 0, 0, 0, -1))),
    _case("evaluate-non_integer_labels", EVAL, r"case_001\.nii\.gz: label values must be integers, found 0\.5",
          setup=_image(PRED1, np.full((4, 8, 8), 0.5, np.float32))),
    _case("evaluate-negative_labels", EVAL, r"case_001\.nii\.gz: label values must be non-negative, found -1",
          setup=_image(PRED1, np.full((4, 8, 8), -1, np.int16))),
    _case("evaluate-corrupt_prediction", EVAL, r"cannot read image .*case_001\.nii\.gz", setup=_garbage(PRED1)),
    _case("evaluate-truncated_prediction", EVAL, r"cannot read image .*case_001\.nii\.gz", setup=_truncate(PRED1)),
    _case("evaluate-summary_over_reference", [*EVAL, "-o", f"{W}/eval/ref/case_000.nii.gz"],
          r"-o .* would overwrite the reference image case_000\.nii\.gz"),
    _case("evaluate-csv_over_prediction", [*EVAL, "--csv", f"{W}/eval/pred/case_001.nii.gz"],
          r"--csv .* would overwrite the prediction image case_001\.nii\.gz"),
    _case("evaluate-summary_inside_references", [*EVAL, "-o", f"{W}/eval/ref/summary.json"],
          r"-o .* lies inside the reference folder", absent=f"{W}/eval/ref/summary.json"),
    _case("evaluate-summary_onto_folder", [*EVAL, "-o", f"{W}/eval"], r"-o .* is a folder"),
    _case("evaluate-same_output_twice", [*EVAL, "-o", f"{W}/x.json", "--csv", f"{W}/x.json"],
          r"summary and CSV outputs are the same file", absent=f"{W}/x.json"),
    _case("evaluate-zero_processes", [*EVAL, "-np", "0"], r"-np must be >= 1, got 0"),
    _case("evaluate-negative_label_option", [*EVAL, "-l", "1", "-2"], r"labels must be non-negative, got -2"),
    _case("evaluate-missing_argument", ["evaluate", "-pred", f"{W}/eval/pred"],
          r"the following arguments are required: -ref"),
    _case("evaluate-regions_malformed", [*EVAL, "--regions", "WT"],
          r"--regions: expected 'brats' or NAME=LABEL,LABEL;NAME=LABEL, but entry 'WT' of 'WT' is not NAME=LABEL"),
    _case("evaluate-regions_empty_name", [*EVAL, "--regions", "=1,2"], r"--regions: a region has no name in '=1,2'"),
    _case("evaluate-regions_duplicate_name", [*EVAL, "--regions", "WT=1,2,3;WT=3"],
          r"--regions: region WT is given twice"),
    _case("evaluate-regions_non_integer_label", [*EVAL, "--regions", "ET=3.5"],
          r"--regions: region ET: label value '3\.5' is not an integer"),
]

# ----------------------------------------------------------------------------------------------------------------------
# rows: plan_and_preprocess

PLAN = ["plan_and_preprocess", "-pl", "CPUPlanner", "-c", "3d_fullres"]

PLAN_ROWS = [
    _case("plan-id_out_of_range", [*PLAN, "-d", "0"], r"-d: dataset id must be in 1\.\.999, got 0"),
    _case("plan-id_not_a_number", [*PLAN, "-d", "five"], r"argument -d: invalid int value: 'five'"),
    _case("plan-id_twice", [*PLAN, "-d", "5", "5"], r"-d lists a dataset id twice"),
    _case("plan-unknown_id", [*PLAN, "-d", "6"], r"no dataset with id 6 in .*raw"),
    _case("plan-no_dataset_json", [*PLAN, "-d", "5"], r"Dataset005_Tiny has no dataset\.json",
          setup=_delete("raw/Dataset005_Tiny/dataset.json")),
    _case("plan-raw_not_set", [*PLAN, "-d", "5"], r"nnUNet_raw is not set", setup=_unset("nnUNet_raw")),
    _case("plan-raw_missing", [*PLAN, "-d", "5"], r"nnUNet_raw folder .*raw does not exist", setup=_delete("raw")),
    _case("plan-preprocessed_not_set", [*PLAN, "-d", "5"], r"nnUNet_preprocessed is not set",
          setup=_unset("nnUNet_preprocessed")),
    _case("plan-unknown_planner", ["plan_and_preprocess", "-d", "5", "-pl", "NoSuchPlanner"],
          r"planner 'NoSuchPlanner' not found"),
    _case("plan-unknown_configuration", ["plan_and_preprocess", "-d", "5", "-pl", "CPUPlanner", "-c", "3d_highres"],
          r"-c: unknown configuration 3d_highres \(choose from 2d, 3d_fullres, 3d_lowres\)"),
    _case("plan-zero_processes", [*PLAN, "-d", "5", "-npfp", "0"], r"-npfp must be >= 1, got 0"),
    _case("plan-plans_name_with_path", [*PLAN, "-d", "5", "-overwrite_plans_name", "../../elsewhere"],
          r"-overwrite_plans_name '\.\./\.\./elsewhere' must be a plain file name"),
    _case("plan-stale_dataset_name", [*PLAN, "-d", "5"], r"Dataset005_Old in .*preprocessed",
          setup=_folder("preprocessed/Dataset005_Old")),
    _case("plan-integrity_check_fails", [*PLAN, "-d", "5", "--verify_dataset_integrity"],
          r"Dataset005_Tiny fails nnU-Net's dataset integrity check", setup=_in_process_integrity_check,
          absent=f"{W}/preprocessed/Dataset005_Tiny"),
]

# ----------------------------------------------------------------------------------------------------------------------
# rows: dkm synthesize-post

DKM = ["dkm", "synthesize-post", "-i", f"{W}/dkm/in", "-o", f"{W}/out_dkm", "-d", "601",
       "--reference", f"{W}/dkm/ref"]
MODEL = "results/Dataset601_DKMFake/DKMDiffusionTrainer_small__nnUNetPlansCPU__3d_fullres"
DKM_OUT = f"{W}/out_dkm"

DKM_ROWS = [
    _case("dkm-timestep_too_large", [*DKM, "--timesteps", "5000"],
          r"--timesteps must lie in 0\.\.999 .* got 5000", absent=DKM_OUT),
    _case("dkm-timestep_negative", [*DKM, "--timesteps", "50", "-1"], r"--timesteps must lie in 0\.\.999 .* got -1",
          absent=DKM_OUT),
    _case("dkm-timestep_not_a_number", [*DKM, "--timesteps", "early"], r"argument --timesteps: invalid int value"),
    _case("dkm-cuda_without_gpu", [*DKM, "-device", "cuda"], r"-device cuda: no CUDA device is available",
          setup=_no_cuda, absent=DKM_OUT),
    _case("dkm-unknown_device", [*DKM, "-device", "tpu"], r"-device must be cpu, cuda or mps, got 'tpu'",
          absent=DKM_OUT),
    _case("dkm-bad_fold", [*DKM, "-f", "first"], r"-f must be a fold number or 'all', got 'first'", absent=DKM_OUT),
    _case("dkm-output_is_input", ["dkm", "synthesize-post", "-i", f"{W}/dkm/in", "-o", f"{W}/dkm/in", "-d", "601"],
          r"-o .* is the same folder as the input"),
    _case("dkm-output_inside_reference", [*DKM[:5], f"{W}/dkm/ref/synth", *DKM[6:]],
          r"-o .* lies inside the input .*ref", absent=f"{W}/dkm/ref/synth"),
    _case("dkm-output_exists", DKM, r"-o .*out_dkm already exists \(pass --overwrite",
          setup=_folder("out_dkm", {"mine.txt": b"keep me"})),
    _case("dkm-output_foreign_overwrite", [*DKM, "--overwrite"], r"refusing to replace .*out_dkm: it was not written",
          setup=_folder("out_dkm", {"mine.txt": b"keep me"})),
    _case("dkm-missing_input_folder", ["dkm", "synthesize-post", "-i", f"{W}/nope", "-o", DKM_OUT, "-d", "601"],
          r"input folder does not exist: .*nope", absent=DKM_OUT),
    _case("dkm-no_pre_contrast_images", DKM, r"no pre-contrast images \(\*_0000\.nii\.gz\) in .*in",
          setup=_delete("dkm/in/case_0000_0000.nii.gz"), absent=DKM_OUT),
    _case("dkm-corrupt_input_image", DKM, r"cannot read image .*case_0000_0000\.nii\.gz",
          setup=_garbage("dkm/in/case_0000_0000.nii.gz"), absent=DKM_OUT),
    _case("dkm-truncated_input_image", DKM, r"cannot read image .*case_0000_0000\.nii\.gz",
          setup=_truncate("dkm/in/case_0000_0000.nii.gz"), absent=DKM_OUT),
    _case("dkm-missing_reference_folder", [*DKM[:-1], f"{W}/nope"], r"--reference folder does not exist",
          absent=DKM_OUT),
    _case("dkm-missing_reference_image", DKM, r"no reference post-contrast image for case case_0000",
          setup=_delete("dkm/ref/case_0000_0001.nii.gz"), absent=DKM_OUT),
    _case("dkm-reference_shape_mismatch", DKM, r"reference .*case_0000_0001\.nii\.gz has shape \(4, 16, 15\)",
          setup=_image("dkm/ref/case_0000_0001.nii.gz", np.zeros((4, 16, 15), np.float32)), absent=DKM_OUT),
    _case("dkm-results_not_set", DKM, r"nnUNet_results is not set", setup=_unset("nnUNet_results"), absent=DKM_OUT),
    _case("dkm-unknown_dataset", [*DKM[:7], "602", *DKM[8:]], r"dataset 602 not found", absent=DKM_OUT),
    _case("dkm-dataset_not_an_id", [*DKM[:7], "breast", *DKM[8:]], r"-d must be a dataset id or a DatasetXXX_Name",
          absent=DKM_OUT),
    _case("dkm-unknown_configuration_folder", [*DKM, "-c", "2d"],
          r"no trained diffusion module at .*__2d \(found: .*__3d_fullres", absent=DKM_OUT),
    _case("dkm-configuration_not_in_plans", [*DKM, "-c", "3d_lowres"],
          r"-c 3d_lowres is not a configuration of .*plans\.json \(has: 3d_fullres\)", absent=DKM_OUT),
    _case("dkm-unknown_trainer", [*DKM, "-tr", "NoSuchTrainer"], r"no trained diffusion module at .*NoSuchTrainer__",
          absent=DKM_OUT),
    _case("dkm-plans_missing", DKM, r"model folder lacks plans\.json", setup=_delete(f"{MODEL}/plans.json"),
          absent=DKM_OUT),
    _case("dkm-plans_corrupt", DKM, r"plans\.json is not valid JSON", setup=_json(f"{MODEL}/plans.json", "{oops"),
          absent=DKM_OUT),
    _case("dkm-missing_checkpoint", [*DKM, "-f", "0"], r"missing checkpoint .*fold_0.*checkpoint_final\.pth",
          absent=DKM_OUT),
    _case("dkm-corrupt_checkpoint", DKM, r"cannot load checkpoint .*checkpoint_final\.pth",
          setup=_garbage(f"{MODEL}/fold_all/checkpoint_final.pth"), absent=DKM_OUT),
    _case("dkm-foreign_checkpoint", DKM, r"checkpoint_final\.pth is not an nnU-Net checkpoint",
          setup=_torch_save(f"{MODEL}/fold_all/checkpoint_final.pth", {"weights": [1, 2]}), absent=DKM_OUT),
    _case("dkm-missing_arguments", ["dkm", "synthesize-post", "-i", f"{W}/dkm/in"],
          r"the following arguments are required: -o, -d"),
    _case("dkm-unknown_action", ["dkm", "synthesize-pre"], r"argument action: invalid choice: 'synthesize-pre'"),
]

# ----------------------------------------------------------------------------------------------------------------------
# rows: convert (every converter)

NIFTI = ["convert", "dce_nifti_folder", "-i", f"{W}/dce", "-d", "11", "--pre_only_id", "12", "--raw",
         f"{W}/out_raw", "--test_fraction", "0"]
NACT = ["convert", "breast_mri_nact_pilot", "-i", f"{W}/dicom", "-d", "11", "--pre_only_id", "12", "--raw",
        f"{W}/out_raw", "--test_fraction", "0"]
HC18 = ["convert", "hc18", "-i", f"{W}/hc18", "-d", "11", "--raw", f"{W}/out_raw"]
CAMUS = ["convert", "camus", "-i", f"{W}/camus", "-d", "11", "--raw", f"{W}/out_raw"]
IMG2D = ["convert", "image_folder_2d", "-i", f"{W}/img2d/images", "-m", f"{W}/img2d/masks", "-d", "11", "--raw",
         f"{W}/out_raw"]
BHSD = ["convert", "bhsd", "-i", f"{W}/bhsd", "-d", "11", "--raw", f"{W}/out_raw"]
OASIS = ["convert", "oasis_learn2reg", "-i", f"{W}/oasis", "-d", "11", "--raw", f"{W}/out_raw"]
REGPAIRS = ["convert", "registration_pairs", "-i", f"{W}/regpairs", "-d", "11", "--raw", f"{W}/out_raw"]
INBREAST = ["convert", "inbreast", "-i", f"{W}/inbreast", "-d", "11", "--raw", f"{W}/out_raw"]
CBIS = ["convert", "cbis_ddsm", "-i", f"{W}/cbis", "-d", "11", "--raw", f"{W}/out_raw"]
BRATS = ["convert", "brats2023", "-i", f"{W}/brats", "-d", "11", "--raw", f"{W}/out_raw"]
# out_raw exists (as a user's nnUNet_raw does); the converters' dataset folders must not appear in it
OUT_NIFTI = f"{W}/out_raw/Dataset011_DCENifti"
OUT_HC18 = f"{W}/out_raw/Dataset011_HC18"
OUT_NACT = f"{W}/out_raw/Dataset011_BreastMRINACTPilot"
OUT_CAMUS = f"{W}/out_raw/Dataset011_CAMUS"
OUT_IMG2D = f"{W}/out_raw/Dataset011_ImageFolder2D"
OUT_BHSD = f"{W}/out_raw/Dataset011_BHSD"
OUT_OASIS = f"{W}/out_raw/Dataset011_OASIS"
OUT_REGPAIRS = f"{W}/out_raw/Dataset011_RegistrationPairs"
OUT_INBREAST = f"{W}/out_raw/Dataset011_INbreast"
OUT_CBIS = f"{W}/out_raw/Dataset011_CBISDDSM"
OUT_BRATS = f"{W}/out_raw/Dataset011_BraTS2023GLI"
# the fake INbreast release of tests/datasets_conversion/test_inbreast.py: 20586934 holds two masses
INBREAST_DICOM = "inbreast/AllDICOMs/20586934_6c613a14b80a8591_MG_L_CC_ANON.dcm"
# the fake BHSD release of tests/datasets_conversion/test_bhsd.py: TRAIN[1] and TEST[0] are scans of it
BHSD_GT = "label_192/ground truths/ID_aaaa0001_ID_bbbb000002.nii.gz"
BHSD_IMAGE = "label_192/images/ID_aaaa0004_ID_bbbb000005.nii.gz"
CAMUS_PATIENT = "camus/training/patient0001"
# the fake BraTS-GLI release of tests/datasets_conversion/test_brats2023.py (case folders one level down)
BRATS_CASE = "BraTS-GLI-00001-001"
BRATS_FOLDER = f"brats/ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/{BRATS_CASE}"

CONVERT_ROWS = [
    _case("convert-unknown_converter", ["convert", "kits23", "-i", f"{W}/dce"],
          r"unknown converter 'kits23' \(choose from bhsd, brats2023, breast_mri_nact_pilot, camus, cbis_ddsm, "
          r"dce_nifti_folder, hc18, image_folder_2d, inbreast, mama_mia, oasis_learn2reg, registration_pairs\)"),
    # dce_nifti_folder
    _case("convert-nifti-missing_source", [*NIFTI[:3], f"{W}/nope", *NIFTI[4:]],
          r"source folder .*nope does not exist", absent=OUT_NIFTI),
    _case("convert-nifti-corrupt_nifti", NIFTI, r"b_post1", setup=_garbage("dce/b_post1.nii.gz"), absent=OUT_NIFTI),
    _case("convert-nifti-truncated_nifti", NIFTI, r"case a: cannot read .*a_post1\.nii\.gz: truncated or corrupt gzip",
          setup=_truncate("dce/a_post1.nii.gz"), absent=OUT_NIFTI),
    _case("convert-nifti-wrong_label_values", NIFTI, r"segmentation .*a_seg\.nii\.gz has label values 2",
          setup=_image("dce/a_seg.nii.gz", np.full((4, 8, 8), 2, np.uint8)), absent=OUT_NIFTI),
    _case("convert-nifti-mismatched_geometry", NIFTI, r"post1 image .*b_post1\.nii\.gz is not on the pre-contrast grid",
          setup=_image("dce/b_post1.nii.gz", np.ones((4, 8, 8), np.float32), spacing=(2.0, 1.0, 1.5)),
          absent=OUT_NIFTI),
    _case("convert-nifti-nan_voxels", NIFTI, r"a_post2\.nii\.gz contains 1 NaN voxel",
          setup=lambda w, m: _write_label(w / "dce" / "a_post2.nii.gz",
                                          np.where(np.arange(256).reshape(4, 8, 8) == 7, np.nan, 1.0)
                                          .astype(np.float32)), absent=OUT_NIFTI),
    _case("convert-nifti-missing_phase", NIFTI, r"case b: missing phase post2", setup=_delete("dce/b_post2.nii.gz"),
          absent=OUT_NIFTI),
    _case("convert-nifti-unrecognised_file", NIFTI, r"unrecognised NIfTI file .*notes\.nii\.gz",
          setup=_file("dce/notes.nii.gz"), absent=OUT_NIFTI),
    _case("convert-nifti-no_segmentation", NIFTI, r"no case in .* has a tumour segmentation",
          setup=lambda w, m: [p.unlink() for p in (w / "dce").glob("*_seg.nii.gz")], absent=OUT_NIFTI),
    _case("convert-nifti-output_inside_source", [*NIFTI[:-3], f"{W}/dce/raw", *NIFTI[-2:]],
          r"the output folder .*dce/raw is inside the source folder", absent=f"{W}/dce/raw"),
    _case("convert-nifti-test_fraction_out_of_range", [*NIFTI[:-1], "1.5"], r"--test_fraction must be in \[0, 1\)",
          absent=OUT_NIFTI),
    _case("convert-nifti-same_ids", [*NIFTI[:7], "11", *NIFTI[8:]], r"--pre_only_id must differ from -d",
          absent=OUT_NIFTI),
    _case("convert-nifti-bad_name", [*NIFTI, "--name", "my data"], r"dataset name 'my data' must start with",
          absent=OUT_NIFTI),
    _case("convert-nifti-foreign_dataset_overwrite", [*NIFTI, "--overwrite"],
          r"refusing to replace .*Dataset011_Mine: it was not written by nnunet-ext",
          setup=_folder("out_raw/Dataset011_Mine", {"dataset.json": b"{}"}), absent=OUT_NIFTI),
    _case("convert-nifti-new_raw_root_left_behind", [*NIFTI[:9], f"{W}/new_raw", *NIFTI[10:]], r"b_post1",
          setup=_garbage("dce/b_post1.nii.gz"), absent=f"{W}/new_raw"),
    _case("convert-nifti-missing_arguments", ["convert", "dce_nifti_folder", "-i", f"{W}/dce"],
          r"^the following arguments are required: -d, --pre_only_id"),
    _case("convert-nifti-subtraction_with_value", [*NIFTI, "--subtraction=yes"],
          r"argument --subtraction: ignored explicit argument 'yes'", absent=OUT_NIFTI),
    # breast_mri_nact_pilot
    _case("convert-nact-missing_source", [*NACT[:3], f"{W}/nope", *NACT[4:]], r"source folder .*nope does not exist",
          absent=OUT_NACT),
    _case("convert-nact-no_patients", [*NACT[:3], f"{W}/eval", *NACT[4:]], r"no patient folders with DICOM files",
          absent=OUT_NACT),
    _case("convert-nact-corrupt_dicom", NACT, r"UCSF-BR-01.*cannot read DICOM file", setup=_corrupt_dicom,
          absent=OUT_NACT),
    _case("convert-nact-truncated_pixels", NACT, r"UCSF-BR-01.*pixel data", setup=_truncate_dicom_pixels,
          absent=OUT_NACT),
    _case("convert-nact-segmentation_off_grid", NACT, r"UCSF-BR-05.*not on the pre-contrast grid",
          setup=_dicom_seg_off_grid, absent=OUT_NACT),
    _case("convert-nact-missing_phase", [*NACT, "--n_post", "3"], r"UCSF-BR-01.*missing phase", absent=OUT_NACT),
    _case("convert-nact-zero_post_phases", [*NACT, "--n_post", "0"], r"--n_post must be >= 1, got 0",
          absent=OUT_NACT),
    _case("convert-nact-bad_regex", [*NACT, "--seg_description", "(PE"],
          r"--seg_description '\(PE' is not a valid regular expression", absent=OUT_NACT),
    _case("convert-nact-output_inside_source", [*NACT[:-3], f"{W}/dicom/raw", *NACT[-2:]],
          r"the output folder .*dicom/raw is inside the source folder", absent=f"{W}/dicom/raw"),
    _case("convert-nact-bad_visits", [*NACT, "--visits", "last"], r"argument --visits: invalid choice: 'last'"),
    # hc18
    _case("convert-hc18-missing_source", [*HC18[:3], f"{W}/nope", *HC18[4:]], r"source folder .*nope does not exist",
          absent=OUT_HC18),
    _case("convert-hc18-open_outline", HC18, r"annotation .*002_HC_Annotation\.png is not a closed outline",
          setup=lambda w, m: _png(w / "hc18" / "training_set" / "002_HC_Annotation.png", _hc18_outline(open_=True)),
          absent=OUT_HC18),
    _case("convert-hc18-missing_annotation", HC18, r"image without annotation: .*001_HC\.png",
          setup=_delete("hc18/training_set/001_HC_Annotation.png"), absent=OUT_HC18),
    _case("convert-hc18-corrupt_png", HC18, r"cannot read image .*002_HC\.png",
          setup=_garbage("hc18/training_set/002_HC.png"), absent=OUT_HC18),
    _case("convert-hc18-missing_pixel_size", HC18, r"no pixel size for .*002_HC\.png in the CSV",
          setup=lambda w, m: (w / "hc18" / "pixel_size_and_HC.csv").write_text("filename,px,hc\n001_HC.png,0.1,60\n"),
          absent=OUT_HC18),
    _case("convert-hc18-bad_pixel_size", HC18, r"pixel_size_and_HC\.csv line 3: values must be positive",
          setup=lambda w, m: (w / "hc18" / "pixel_size_and_HC.csv").write_text(
              "filename,px,hc\n001_HC.png,0.1,60\n002_HC.png,0,60\n"), absent=OUT_HC18),
    _case("convert-hc18-no_training_set", [*HC18[:3], f"{W}/dce", *HC18[4:]], r"has no training_set folder",
          absent=OUT_HC18),
    _case("convert-hc18-missing_arguments", ["convert", "hc18", "-i", f"{W}/hc18"],
          r"^the following arguments are required: -d"),
    # camus
    _case("convert-camus-missing_source", [*CAMUS[:3], f"{W}/nope", *CAMUS[4:]],
          r"source folder .*nope does not exist", absent=OUT_CAMUS),
    _case("convert-camus-no_patient_folders", [*CAMUS[:3], f"{W}/eval", *CAMUS[4:]],
          r"no patient folders \(patientNNNN/\) in .*eval", absent=OUT_CAMUS),
    _case("convert-camus-truncated_raw", CAMUS, r"cannot read image .*patient0001_2CH_ED\.mhd: .*data not read",
          setup=_truncate(f"{CAMUS_PATIENT}/patient0001_2CH_ED.raw"), absent=OUT_CAMUS),
    _case("convert-camus-missing_raw", CAMUS, r"cannot read image .*patient0001_4CH_ES\.mhd",
          setup=_delete(f"{CAMUS_PATIENT}/patient0001_4CH_ES.raw"), absent=OUT_CAMUS),
    _case("convert-camus-corrupt_segmentation", CAMUS, r"cannot read segmentation .*patient0001_2CH_ES_gt\.mhd",
          setup=_garbage(f"{CAMUS_PATIENT}/patient0001_2CH_ES_gt.mhd"), absent=OUT_CAMUS),
    _case("convert-camus-segmentation_shape", CAMUS,
          r"segmentation .*patient0001_2CH_ES_gt\.mhd is 20x23 but its image patient0001_2CH_ES\.mhd is 20x24",
          setup=_camus_gt(np.zeros((23, 20), np.uint8)), absent=OUT_CAMUS),
    _case("convert-camus-segmentation_spacing", CAMUS, r"patient0001_2CH_ES_gt\.mhd has spacing 0\.15 x 0\.2 mm but "
          r"its image patient0001_2CH_ES\.mhd has 0\.15 x 0\.3 mm",
          setup=_camus_gt(np.zeros((24, 20), np.uint8), spacing=(0.2, 0.15)), absent=OUT_CAMUS),
    _case("convert-camus-segmentation_values", CAMUS, r"patient0001_2CH_ES_gt\.mhd has values 5; CAMUS labels are 0",
          setup=_camus_gt(np.full((24, 20), 5, np.uint8)), absent=OUT_CAMUS),
    _case("convert-camus-missing_view", CAMUS,
          r"missing patient0001_4CH_ED\.mhd or \.nii\.gz in .*patient0001 \(asked for by --views 4CH --phases ED",
          setup=_delete(f"{CAMUS_PATIENT}/patient0001_4CH_ED.mhd"), absent=OUT_CAMUS),
    _case("convert-camus-unknown_view", [*CAMUS, "--views", "2CH", "3CH"],
          r"--views 3CH: unknown value \(choose from 2CH, 4CH\)", absent=OUT_CAMUS),
    _case("convert-camus-unknown_phase", [*CAMUS, "--phases", "diastole"],
          r"--phases diastole: unknown value \(choose from ED, ES\)", absent=OUT_CAMUS),
    _case("convert-camus-existing_id", [*CAMUS[:5], "5", "--raw", f"{W}/raw"],
          r"dataset id 5 already exists at .*Dataset005_Tiny \(pass --overwrite"),
    _case("convert-camus-output_inside_source", [*CAMUS[:-1], f"{W}/camus/raw"],
          r"output .*Dataset011_CAMUS lies inside the input .*camus", absent=f"{W}/camus/raw"),
    _case("convert-camus-missing_arguments", ["convert", "camus", "-i", f"{W}/camus"],
          r"^the following arguments are required: -d"),
    # image_folder_2d
    _case("convert-img2d-missing_images", [*IMG2D[:3], f"{W}/nope", *IMG2D[4:]],
          r"-i folder .*nope does not exist", absent=OUT_IMG2D),
    _case("convert-img2d-empty_images", IMG2D, r"no images in -i folder .*images \(formats read: png, ",
          setup=_empty("img2d/images"), absent=OUT_IMG2D),
    _case("convert-img2d-image_without_mask", IMG2D, r"image without mask: .*images/b\.png \(no b\.\* in",
          setup=_delete("img2d/masks/b.png"), absent=OUT_IMG2D),
    _case("convert-img2d-mask_without_image", IMG2D, r"mask without image: .*masks/c\.png",
          setup=lambda w, m: _png(w / "img2d" / "masks" / "c.png", np.zeros((12, 10))), absent=OUT_IMG2D),
    _case("convert-img2d-shape_mismatch", IMG2D, r"mask .*masks/b\.png is 12x10 but its image b\.png is 10x12",
          setup=lambda w, m: _png(w / "img2d" / "masks" / "b.png", np.zeros((10, 12))), absent=OUT_IMG2D),
    _case("convert-img2d-unreadable_image", IMG2D, r"cannot read image .*images/a\.png",
          setup=_garbage("img2d/images/a.png"), absent=OUT_IMG2D),
    _case("convert-img2d-nan_in_nifti", IMG2D, r"image .*images/a\.nii\.gz contains 1 NaN pixel",
          setup=_img2d_nan_nifti, absent=OUT_IMG2D),
    _case("convert-img2d-unlisted_mask_value", IMG2D,
          r"mask .*masks/a\.png has value 255, which is neither background 0 nor a --labels value \(1\)",
          setup=lambda w, m: _png(w / "img2d" / "masks" / "a.png", np.full((12, 10), 255)), absent=OUT_IMG2D),
    _case("convert-img2d-case_id_clash", IMG2D, r"a b\.png and a_b\.png in .*images both become case id a_b",
          setup=_img2d_clash, absent=OUT_IMG2D),
    _case("convert-img2d-bad_label", [*IMG2D, "--labels", "tumour"], r"--labels expects NAME=VALUE, got 'tumour'",
          absent=OUT_IMG2D),
    _case("convert-img2d-label_zero", [*IMG2D, "--labels", "tumour=0"], r"--labels tumour=0: the value must be >= 1",
          absent=OUT_IMG2D),
    _case("convert-img2d-binary_two_labels", [*IMG2D, "--binary", "--labels", "a=1", "b=2"],
          r"--binary makes every nonzero mask value one label; --labels lists 2", absent=OUT_IMG2D),
    _case("convert-img2d-zero_spacing", [*IMG2D, "--spacing", "0"], r"--spacing must be a positive pixel size",
          absent=OUT_IMG2D),
    _case("convert-img2d-spacing_not_a_number", [*IMG2D, "--spacing", "fine"],
          r"argument --spacing: invalid float value: 'fine'"),
    _case("convert-img2d-masks_are_images", [*IMG2D[:5], f"{W}/img2d/images", *IMG2D[6:]],
          r"-m .*images is the -i folder", absent=OUT_IMG2D),
    _case("convert-img2d-missing_test_images", [*IMG2D, "--test_images", f"{W}/nope"],
          r"--test_images folder .*nope does not exist", absent=OUT_IMG2D),
    _case("convert-img2d-missing_arguments", ["convert", "image_folder_2d", "-i", f"{W}/img2d/images"],
          r"^the following arguments are required: -m, -d"),
    # bhsd
    _case("convert-bhsd-missing_source", [*BHSD[:3], f"{W}/nope", *BHSD[4:]], r"source folder .*nope does not exist",
          absent=OUT_BHSD),
    _case("convert-bhsd-no_release_layout", [*BHSD[:3], f"{W}/eval", *BHSD[4:]],
          r"no label_192/images/ folder in .*eval \(BHSD layout", absent=OUT_BHSD),
    _case("convert-bhsd-image_without_ground_truth", BHSD,
          r"image without ground truth: .*ID_aaaa0001_ID_bbbb000002\.nii\.gz \(no ID_aaaa0001_ID_bbbb000002\.nii\.gz",
          setup=_delete(f"bhsd/{BHSD_GT}"), absent=OUT_BHSD),
    _case("convert-bhsd-geometry_mismatch", BHSD,
          r"ground truth .*ID_aaaa0001_ID_bbbb000002\.nii\.gz is not on the grid of its image .*\(spacing",
          setup=_bhsd_volume(BHSD_GT, np.zeros((4, 8, 8), np.uint8), spacing=(2.5, 0.45, 0.45)), absent=OUT_BHSD),
    _case("convert-bhsd-bad_label_value", BHSD,
          r"ground truth .*ID_aaaa0001_ID_bbbb000002\.nii\.gz has values 9; BHSD labels are 0\.\.5",
          setup=_bhsd_volume(BHSD_GT, np.full((4, 8, 8), 9, np.uint8)), absent=OUT_BHSD),
    _case("convert-bhsd-corrupt_nifti", BHSD,
          r"cannot read image .*ID_aaaa0004_ID_bbbb000005\.nii\.gz: not an image file",
          setup=_garbage(f"bhsd/{BHSD_IMAGE}"), absent=OUT_BHSD),
    _case("convert-bhsd-case_in_both_splits", BHSD,
          r"dataset\.json lists 1 case\(s\) in both training and test: ID_aaaa0001_ID_bbbb000001",
          setup=_bhsd_split_overlap, absent=OUT_BHSD),
    _case("convert-bhsd-too_many_negatives", [*BHSD, "--negatives", "99"],
          r"--negatives 99: only 4 pool scan\(s\) in .*unlabel_1980 have no bleeding", absent=OUT_BHSD),
    _case("convert-bhsd-bad_count", [*BHSD, "--unlabeled", "many"],
          r"--unlabeled must be a non-negative integer or 'all', got 'many'", absent=OUT_BHSD),
    _case("convert-bhsd-missing_arguments", ["convert", "bhsd", "-i", f"{W}/bhsd"],
          r"^the following arguments are required: -d"),
    # oasis_learn2reg (the fake download of tests/datasets_conversion/test_oasis_learn2reg.py)
    _case("convert-oasis-missing_source", [*OASIS[:3], f"{W}/nope", *OASIS[4:]],
          r"source folder .*nope does not exist", absent=OUT_OASIS),
    _case("convert-oasis-no_description", OASIS, r"no OASIS_dataset\.json in .*oasis \(the Learn2Reg OASIS download",
          setup=_delete("oasis/OASIS/OASIS_dataset.json"), absent=OUT_OASIS),
    _case("convert-oasis-pair_missing_image", OASIS,
          r"registration_val\[0\] names moving image \./imagesTr/OASIS_0999_0000\.nii\.gz, which is not in",
          setup=_oasis_description(registration_val=[{"fixed": "./imagesTr/OASIS_0438_0000.nii.gz",
                                                      "moving": "./imagesTr/OASIS_0999_0000.nii.gz"}]),
          absent=OUT_OASIS),
    _case("convert-oasis-label_shape_mismatch", OASIS,
          r"label .*OASIS_0002_0000\.nii\.gz is not on the grid of its image OASIS_0002_0000\.nii\.gz \(size",
          setup=_oasis_label("OASIS_0002", np.zeros((8, 10, 11), np.uint8)), absent=OUT_OASIS),
    _case("convert-oasis-label_spacing_mismatch", OASIS, r"OASIS_0002_0000\.nii\.gz is not on the grid .*\(spacing",
          setup=_oasis_label("OASIS_0002", np.zeros((8, 10, 12), np.uint8), spacing=(2.0, 1.0, 1.0)),
          absent=OUT_OASIS),
    _case("convert-oasis-label_outside_declared", OASIS,
          r"label .*OASIS_0003_0000\.nii\.gz has values 40, outside the labels declared for the dataset \(0\.\.35",
          setup=_oasis_label("OASIS_0003", np.full((8, 10, 12), 40, np.uint8)), absent=OUT_OASIS),
    _case("convert-oasis-bad_max_cases", [*OASIS, "--max_cases", "0"], r"--max_cases must be a positive integer",
          absent=OUT_OASIS),
    _case("convert-oasis-missing_arguments", ["convert", "oasis_learn2reg", "-i", f"{W}/oasis"],
          r"^the following arguments are required: -d"),
    # registration_pairs (the fake folder of tests/datasets_conversion/test_registration_pairs.py)
    _case("convert-regpairs-missing_source", [*REGPAIRS[:3], f"{W}/nope", *REGPAIRS[4:]],
          r"source folder .*nope does not exist", absent=OUT_REGPAIRS),
    _case("convert-regpairs-pair_missing_image", REGPAIRS,
          r"pairs\.csv line 2: moving image 'zzz' is not an image in .*images",
          setup=_file("regpairs/pairs.csv", b"fixed,moving\na,zzz\n"), absent=OUT_REGPAIRS),
    _case("convert-regpairs-atlas_missing", [*REGPAIRS, "--atlas", "nope"], r"--atlas 'nope' is not an image in",
          setup=_delete("regpairs/pairs.csv"), absent=OUT_REGPAIRS),
    _case("convert-regpairs-atlas_and_pairs", [*REGPAIRS, "--atlas", "atlas"],
          r"holds pairs\.csv and --atlas atlas was given", absent=OUT_REGPAIRS),
    _case("convert-regpairs-pair_grid_mismatch", REGPAIRS,
          r"pairs\.csv line 2: fixed image a\.nii\.gz is 12x10x8 at 1 x 1 x 2 mm but moving image b\.mha is 12x10x9 "
          r"at 1 x 1 x 2 mm; .*pass --resample", setup=_regpairs_volume("images/b.mha", np.zeros((9, 10, 12))),
          absent=OUT_REGPAIRS),
    _case("convert-regpairs-label_off_grid", REGPAIRS,
          r"label .*labels/a\.nii\.gz is not on the grid of its image a\.nii\.gz \(origin",
          setup=_regpairs_volume("labels/a.nii.gz", np.zeros((8, 10, 12), np.uint8), origin=(0.0, 0.0, 0.0)),
          absent=OUT_REGPAIRS),
    _case("convert-regpairs-negative_label", REGPAIRS, r"label .*labels/b\.nii\.gz has negative values \(-1\)",
          setup=_regpairs_volume("labels/b.nii.gz", np.full((8, 10, 12), -1, np.int16)), absent=OUT_REGPAIRS),
    _case("convert-regpairs-non_integer_label", REGPAIRS, r"labels/b\.nii\.gz has non-integer values \(0\.25\)",
          setup=_regpairs_volume("labels/b.nii.gz", np.full((8, 10, 12), 0.25, np.float32)), absent=OUT_REGPAIRS),
    _case("convert-regpairs-labels_not_consecutive", REGPAIRS,
          r"label values are not consecutive 0\.\.K: .*pass --remap_labels",
          setup=_regpairs_volume("labels/a.nii.gz", np.full((8, 10, 12), 9, np.uint8)), absent=OUT_REGPAIRS),
    _case("convert-regpairs-missing_arguments", ["convert", "registration_pairs", "-i", f"{W}/regpairs"],
          r"^the following arguments are required: -d"),
    # inbreast (the fake release of tests/datasets_conversion/test_inbreast.py)
    _case("convert-inbreast-missing_source", [*INBREAST[:3], f"{W}/nope", *INBREAST[4:]],
          r"source folder .*nope does not exist", absent=OUT_INBREAST),
    _case("convert-inbreast-no_dicom_folder", [*INBREAST[:3], f"{W}/eval", *INBREAST[4:]],
          r"eval has no AllDICOMs folder \(INbreast layout", absent=OUT_INBREAST),
    _case("convert-inbreast-corrupt_xml", INBREAST, r"AllXML/20586934\.xml is not a valid plist XML",
          setup=_garbage("inbreast/AllXML/20586934.xml"), absent=OUT_INBREAST),
    _case("convert-inbreast-xml_without_images", INBREAST,
          r"AllXML/20586934\.xml lacks the INbreast structure: .*'Images' array",
          setup=_file("inbreast/AllXML/20586934.xml", b'<plist version="1.0"><dict/></plist>'), absent=OUT_INBREAST),
    _case("convert-inbreast-corrupt_dicom", INBREAST, r"cannot read DICOM file .*20586934_6c613a14b80a8591_MG_L_CC",
          setup=_garbage(INBREAST_DICOM), absent=OUT_INBREAST),
    _case("convert-inbreast-xml_without_dicom", INBREAST, r"AllXML/20586934\.xml has no DICOM: no 20586934_\*",
          setup=_delete(INBREAST_DICOM), absent=OUT_INBREAST),
    _case("convert-inbreast-bad_max_size", [*INBREAST, "--max-size", "-5"],
          r"--max-size must be 0 \(full resolution\) or a positive number of pixels, got -5", absent=OUT_INBREAST),
    _case("convert-inbreast-missing_arguments", ["convert", "inbreast", "-i", f"{W}/inbreast"],
          r"^the following arguments are required: -d"),
    # cbis_ddsm (the setups write the fake DICOM release of tests/datasets_conversion/test_cbis_ddsm.py)
    _case("convert-cbis-missing_source", [*CBIS[:3], f"{W}/nope", *CBIS[4:]], r"source folder .*nope does not exist",
          absent=OUT_CBIS),
    _case("convert-cbis-no_release_layout", [*CBIS[:3], f"{W}/eval", *CBIS[4:]],
          r"eval holds neither the TCIA DICOM release \(\.dcm files\) nor the JPEG copy", absent=OUT_CBIS),
    _case("convert-cbis-no_case_csvs", CBIS, r"no CBIS-DDSM case CSVs \(mass_case_description_train_set\.csv",
          setup=_cbis("no_csvs"), absent=OUT_CBIS),
    _case("convert-cbis-corrupt_dicom", CBIS,
          r"cannot read DICOM file .*cbis/CBIS-DDSM/Mass-Training_P_00002_RIGHT_CC/.*1-1\.dcm: InvalidDicomError",
          setup=_cbis("corrupt"), absent=OUT_CBIS),
    _case("convert-cbis-unresolvable_row", CBIS,
          r"mass_case_description_train_set\.csv line 2 \(patient P_00001, abnormality 1\): image file path "
          r"'Mass-Training_P_00001_LEFT_CC/1\.2\.3\.4/1\.2\.3\.5/000000\.dcm' matches no file",
          setup=_cbis("unresolvable"), absent=OUT_CBIS),
    _case("convert-cbis-bad_max_size", [*CBIS, "--max-size", "-5"],
          r"--max-size must be 0 \(full resolution\) or a positive number of pixels, got -5", absent=OUT_CBIS),
    _case("convert-cbis-bad_split", [*CBIS, "--split", "random"], r"argument --split: invalid choice: 'random'"),
    _case("convert-cbis-missing_arguments", ["convert", "cbis_ddsm", "-i", f"{W}/cbis"],
          r"^the following arguments are required: -d"),
    # brats2023 (the fake release of tests/datasets_conversion/test_brats2023.py)
    _case("convert-brats-missing_source", [*BRATS[:3], f"{W}/nope", *BRATS[4:]],
          r"source folder .*nope does not exist", absent=OUT_BRATS),
    _case("convert-brats-no_case_folders", [*BRATS[:3], f"{W}/eval", *BRATS[4:]],
          r"no BraTS-GLI case folders \(BraTS-GLI-XXXXX-YYY/\) in .*eval or its subfolders", absent=OUT_BRATS),
    _case("convert-brats-missing_modality", BRATS,
          rf"case {BRATS_CASE}: t1c image missing \(.*{BRATS_CASE}-t1c\.nii\.gz not found",
          setup=_delete(f"{BRATS_FOLDER}/{BRATS_CASE}-t1c.nii.gz"), absent=OUT_BRATS),
    _case("convert-brats-label_4", BRATS,
          rf"case {BRATS_CASE}: segmentation .*{BRATS_CASE}-seg\.nii\.gz has values 4; .*BraTS 2021 .*map 4 -> 3",
          setup=_brats_volume(BRATS_CASE, "seg", np.full((8, 10, 12), 4, np.uint8)), absent=OUT_BRATS),
    _case("convert-brats-geometry_mismatch", BRATS,
          rf"case {BRATS_CASE}: segmentation .*{BRATS_CASE}-seg\.nii\.gz is not on the grid of {BRATS_CASE}-t1n"
          rf"\.nii\.gz \(spacing", setup=_brats_volume(BRATS_CASE, "seg", np.zeros((8, 10, 12), np.uint8),
                                                      spacing=(2.0, 1.0, 1.0)), absent=OUT_BRATS),
    _case("convert-brats-nan_in_image", BRATS, rf"case {BRATS_CASE}: t1n image .*-t1n\.nii\.gz contains 1 NaN voxel",
          setup=_brats_volume(BRATS_CASE, "t1n", np.where(np.arange(960).reshape(8, 10, 12) == 5, np.nan,
                                                          np.float32(1)).astype(np.float32)), absent=OUT_BRATS),
    _case("convert-brats-corrupt_nifti", BRATS, rf"case {BRATS_CASE}: cannot read t1n image .*: not an image file",
          setup=_garbage(f"{BRATS_FOLDER}/{BRATS_CASE}-t1n.nii.gz"), absent=OUT_BRATS),
    _case("convert-brats-bad_modalities", [*BRATS, "--modalities", "flair"],
          r"argument --modalities: invalid choice: 'flair'"),
    _case("convert-brats-missing_arguments", ["convert", "brats2023", "-i", f"{W}/brats"],
          r"^the following arguments are required: -d"),
]

# ----------------------------------------------------------------------------------------------------------------------
# rows: ffpn predict-hc18

FFPN_OUT = f"{W}/out_ffpn"
FFPN = ["ffpn", "predict-hc18", "-i", f"{W}/hc18/training_set", "--csv", f"{W}/hc18/pixel_size_and_HC.csv", "-o",
        FFPN_OUT, "-d", "412"]
FFPN_MODEL = "results/Dataset412_HC18Fake/FFPNRTrainer__nnUNetPlansWholeImage__2d"

FFPN_ROWS = [
    _case("ffpn-missing_input_folder", [*FFPN[:3], f"{W}/nope", *FFPN[4:]],
          r"-i .*nope does not exist or is not a folder", absent=FFPN_OUT),
    _case("ffpn-no_images", [*FFPN[:3], f"{W}/eval", *FFPN[4:]], r"no HC18 images \(NNN_HC\.png\) in .*eval",
          absent=FFPN_OUT),
    _case("ffpn-missing_csv", [*FFPN[:5], f"{W}/nope.csv", *FFPN[6:]], r"--csv .*nope\.csv does not exist",
          absent=FFPN_OUT),
    _case("ffpn-png_without_csv_row", FFPN, r"no pixel size for .*002_HC\.png in .*pixel_size_and_HC\.csv",
          setup=_file("hc18/pixel_size_and_HC.csv", b"filename,px,hc\n001_HC.png,0.1,60\n"), absent=FFPN_OUT),
    _case("ffpn-csv_not_a_number", FFPN, r"pixel_size_and_HC\.csv line 2: not a number",
          setup=_file("hc18/pixel_size_and_HC.csv", b"filename,px,hc\n001_HC.png,abc,60\n"), absent=FFPN_OUT),
    _case("ffpn-unrecognised_image_name", FFPN, r"unrecognised HC18 image name head_HC\.png",
          setup=lambda w, m: _png(w / "hc18" / "training_set" / "head_HC.png", np.zeros((24, 32))), absent=FFPN_OUT),
    _case("ffpn-no_model_for_dataset", [*FFPN[:-1], "601"],
          r"no trained model at .*Dataset601_DKMFake/FFPNRTrainer__nnUNetPlansWholeImage__2d", absent=FFPN_OUT),
    _case("ffpn-no_model_for_trainer", [*FFPN, "-tr", "NoSuchTrainer"],
          r"no trained model at .*Dataset412_HC18Fake/NoSuchTrainer__nnUNetPlansWholeImage__2d \(train it first",
          absent=FFPN_OUT),
    _case("ffpn-no_model_for_plans", [*FFPN, "-p", "nnUNetPlans"],
          r"no trained model at .*/FFPNRTrainer__nnUNetPlans__2d", absent=FFPN_OUT),
    _case("ffpn-no_model_for_configuration", [*FFPN, "-c", "3d_fullres"],
          r"no trained model at .*/FFPNRTrainer__nnUNetPlansWholeImage__3d_fullres", absent=FFPN_OUT),
    _case("ffpn-model_without_dataset_json", FFPN, r"no trained model at .*Dataset412_HC18Fake/FFPNRTrainer__",
          setup=_delete(f"{FFPN_MODEL}/dataset.json"), absent=FFPN_OUT),
    _case("ffpn-unknown_dataset", [*FFPN[:-1], "413"], r"-d 413: no such dataset in nnUNet_raw", absent=FFPN_OUT),
    _case("ffpn-dataset_not_an_id", [*FFPN[:-1], "hc18"], r"-d hc18", absent=FFPN_OUT),
    _case("ffpn-results_not_set", FFPN, r"nnUNet_results is not set", setup=_unset("nnUNet_results"),
          absent=FFPN_OUT),
    _case("ffpn-unknown_device", [*FFPN, "-device", "tpu"], r"-device must be cpu, cuda or mps, got 'tpu'",
          absent=FFPN_OUT),
    _case("ffpn-cuda_without_gpu", [*FFPN, "-device", "cuda"], r"-device cuda: no CUDA device is available",
          setup=_no_cuda, absent=FFPN_OUT),
    _case("ffpn-output_exists", FFPN, r"output .*out_ffpn already exists \(pass --overwrite",
          setup=_folder("out_ffpn", {"mine.txt": b"keep me"})),
    _case("ffpn-output_foreign_overwrite", [*FFPN, "--overwrite"],
          r"refusing to replace .*out_ffpn: it was not written by nnunet-ext",
          setup=_folder("out_ffpn", {"mine.txt": b"keep me"})),
    _case("ffpn-output_inside_input", [*FFPN[:7], f"{W}/hc18/training_set/pred", *FFPN[8:]],
          r"output .*training_set/pred lies inside the input", absent=f"{W}/hc18/training_set/pred"),
    _case("ffpn-missing_arguments", ["ffpn", "predict-hc18", "-i", f"{W}/hc18/training_set"],
          r"the following arguments are required: --csv, -o, -d"),
    _case("ffpn-no_action", ["ffpn"], r"the following arguments are required: action"),
    _case("ffpn-unknown_action", ["ffpn", "predict-hc19"], r"argument action: invalid choice: 'predict-hc19'"),
]

# ----------------------------------------------------------------------------------------------------------------------
# rows: mammo-sam export-encoder

SAM_OUT = f"{W}/sam_export.pth"
SAM_EXPORT = ["mammo-sam", "export-encoder", "-i", f"{W}/model_checkpoint.pth", "-o", SAM_OUT]


def _torch_file(relative: str, content):
    def setup(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import torch

        torch.save(content, world / relative)
    return setup


MAMMO_SAM_ROWS = [
    _case("mammo_sam-missing_checkpoint", SAM_EXPORT, r"-i .*model_checkpoint\.pth: no such file", absent=SAM_OUT),
    _case("mammo_sam-corrupt_checkpoint", SAM_EXPORT, r"model_checkpoint\.pth: not a checkpoint torch\.load can read",
          setup=_garbage("model_checkpoint.pth"), absent=SAM_OUT),
    _case("mammo_sam-not_nnunet_checkpoint", SAM_EXPORT, r"not an nnU-Net checkpoint \(no network_weights\)",
          setup=_torch_file("model_checkpoint.pth", {"weights": 1}), absent=SAM_OUT),
    _case("mammo_sam-not_mammo_sam_weights", SAM_EXPORT,
          r"trainer DemoTrainer\): no image_encoder\.patch_embed\.proj\.weight: not the weights of a Mammo-SAM",
          setup=_torch_file("model_checkpoint.pth", {"network_weights": {"conv.weight": [0.0]},
                                                     "trainer_name": "DemoTrainer"}), absent=SAM_OUT),
    _case("mammo_sam-output_exists", [*SAM_EXPORT[:3], SAM_OUT, *SAM_EXPORT[4:]],
          r"-o .*sam_export\.pth exists; nothing is overwritten", setup=_file("sam_export.pth")),
    _case("mammo_sam-missing_arguments", ["mammo-sam", "export-encoder", "-i", f"{W}/x.pth"],
          r"the following arguments are required: -o"),
    _case("mammo_sam-no_action", ["mammo-sam"], r"the following arguments are required: action"),
]

# ----------------------------------------------------------------------------------------------------------------------
# rows: hcnet cluster

HC = ["hcnet", "cluster", "-d", "60", "-o", "62", "-K", "3", "--preset", "small"]
HC_DCE = "raw/Dataset060_HCDce"
HC_OUT = f"{W}/raw/Dataset062_HCDceHCNetMapK3"

HCNET_ROWS = [
    _case("hcnet-k_below_2", [*HC[:6], "-K", "1"], r"-K must be >= 2 \(clusters\), got 1"),
    _case("hcnet-unknown_roi", [*HC, "--roi", "lung"], r"--roi must be one of breast, box, image, got 'lung'"),
    _case("hcnet-unknown_preset", [*HC[:8], "--preset", "huge"], r"--preset must be one of .*got 'huge'"),
    _case("hcnet-unknown_normalization", [*HC, "--normalization", "z"], r"--normalization must be one of case, voxel"),
    _case("hcnet-missing_dataset", ["hcnet", "cluster", "-d", "999", "-o", "62"], r"dataset 999 not found in"),
    _case("hcnet-single_time_point", ["hcnet", "cluster", "-d", "61", "-o", "62"],
          r"Dataset061_HCPre has 1 channel\(s\): TIC clustering needs .*2 time points or more"),
    _case("hcnet-map_exists", [*HC[:5], "61", *HC[6:]], r"dataset id 61 already exists .*pass --overwrite"),
    _case("hcnet-map_is_the_source", [*HC[:5], "60", *HC[6:]], r"-o 60 is the DCE dataset itself"),
    _case("hcnet-missing_phase", HC, r"case case_0000: missing phase .*case_0000_0001\.nii\.gz",
          setup=_delete(f"{HC_DCE}/imagesTr/case_0000_0001.nii.gz"), absent=HC_OUT),
    _case("hcnet-phase_off_grid", HC,
          r"case case_0000: phase .*case_0000_0001\.nii\.gz is not on the pre-contrast grid \(spacing",
          setup=_image(f"{HC_DCE}/imagesTr/case_0000_0001.nii.gz", np.ones((4, 8, 8), np.float32),
                       spacing=(3.0, 1.0, 1.0)), absent=HC_OUT),
    _case("hcnet-nan_phase", HC, r"case case_0000: NaN or infinite values in its phases",
          setup=_image(f"{HC_DCE}/imagesTr/case_0000_0001.nii.gz", np.full((4, 8, 8), np.nan, np.float32)),
          absent=HC_OUT),
    _case("hcnet-empty_roi", HC, r"case case_0000: empty ROI \(--roi breast\)",
          setup=_image(f"{HC_DCE}/extrasTr/case_0000_breast.nii.gz", np.zeros((4, 8, 8), np.uint8)), absent=HC_OUT),
    _case("hcnet-no_breast_mask", HC, r"case case_0000: no breast mask .*use --roi box or --roi image",
          setup=_delete(f"{HC_DCE}/extrasTr/case_0000_breast.nii.gz"), absent=HC_OUT),
    _case("hcnet-corrupt_phase", HC, r"cannot read image .*case_0000_0001\.nii\.gz",
          setup=_garbage(f"{HC_DCE}/imagesTr/case_0000_0001.nii.gz"), absent=HC_OUT),
    _case("hcnet-no_action", ["hcnet"], r"the following arguments are required: action"),
]

# ----------------------------------------------------------------------------------------------------------------------
# rows: postprocess breast-mask (the evaluate fixtures: predictions eval/pred, references as breast masks)

MASK_OUT = f"{W}/out_masked"
MASK = ["postprocess", "breast-mask", "-i", f"{W}/eval/pred", "-m", f"{W}/eval/ref", "-o", MASK_OUT]
MASK1 = "eval/ref/case_001.nii.gz"

POSTPROCESS_ROWS = [
    _case("postprocess-missing_predictions", [*MASK[:3], f"{W}/nope", *MASK[4:]],
          r"prediction folder not found: .*nope", absent=MASK_OUT),
    _case("postprocess-missing_masks", [*MASK[:5], f"{W}/nope", *MASK[6:]], r"mask folder not found: .*nope",
          absent=MASK_OUT),
    _case("postprocess-no_mask_for_case", MASK, r"no breast mask for case case_001 in .*eval/ref",
          setup=_delete(MASK1), absent=MASK_OUT),
    _case("postprocess-mask_off_grid", MASK, r"case_001\.nii\.gz: geometry differs from the prediction",
          setup=_image(MASK1, np.ones((4, 8, 9), np.uint8)), absent=MASK_OUT),
    _case("postprocess-corrupt_mask", MASK, r"cannot read breast mask .*case_001\.nii\.gz",
          setup=_garbage(MASK1), absent=MASK_OUT),
    _case("postprocess-output_is_input", [*MASK[:7], f"{W}/eval/pred"], r"eval/pred"),
    _case("postprocess-no_action", ["postprocess"], r"the following arguments are required: action"),
]

# ----------------------------------------------------------------------------------------------------------------------
# rows: bhsd merge

MERGE_OUT = f"{W}/out_merge"
MERGE = ["bhsd", "merge", "-i", f"{W}/merge_in/class2", f"{W}/merge_in/class4", "-o", MERGE_OUT]

BHSD_ROWS = [
    _case("bhsd-missing_input_folder", [*MERGE[:3], f"{W}/nope", *MERGE[4:]], r"prediction folder not found: .*nope",
          absent=MERGE_OUT),
    _case("bhsd-one_input_folder", [*MERGE[:4], *MERGE[5:]], r"merging needs at least two prediction folders",
          absent=MERGE_OUT),
    _case("bhsd-no_dataset_json", MERGE, r"class4 has no dataset\.json", setup=_delete("merge_in/class4/dataset.json"),
          absent=MERGE_OUT),
    _case("bhsd-multi_class_model", MERGE, r"class4/dataset\.json: a one-class model has exactly one foreground",
          setup=_json("merge_in/class4/dataset.json", {"labels": {"background": 0, "a": 1, "b": 2}}),
          absent=MERGE_OUT),
    _case("bhsd-same_class_twice", MERGE, r"two folders hold the same class",
          setup=_json("merge_in/class4/dataset.json", {"labels": {"background": 0, "c2": [2]}}), absent=MERGE_OUT),
    _case("bhsd-region_of_two_labels", MERGE, r"region \[1, 2\] of several labels cannot be merged",
          setup=_json("merge_in/class4/dataset.json", {"labels": {"background": 0, "bleed": [1, 2]}}),
          absent=MERGE_OUT),
    _case("bhsd-missing_probabilities", MERGE, r"--rule probability needs .*class4/case_000\.npz",
          setup=_delete("merge_in/class4/case_000.npz"), absent=MERGE_OUT),
    _case("bhsd-corrupt_probabilities", MERGE, r"cannot read probabilities from .*class2/case_000\.npz",
          setup=_garbage("merge_in/class2/case_000.npz"), absent=MERGE_OUT),
    _case("bhsd-corrupt_prediction", [*MERGE, "--rule", "priority"],
          r"cannot read prediction .*class2/case_000\.nii\.gz",
          setup=_truncate("merge_in/class2/case_000.nii.gz"), absent=MERGE_OUT),
    _case("bhsd-different_cases", MERGE, r"hold different cases \(e\.g\. case_000\.nii\.gz\)",
          setup=_delete("merge_in/class4/case_000.nii.gz"), absent=MERGE_OUT),
    _case("bhsd-bad_priority", [*MERGE, "--rule", "priority", "--priority", "2", "3"],
          r"--priority \[2, 3\] must list each class of the inputs \[2, 4\] once", absent=MERGE_OUT),
    _case("bhsd-unknown_rule", [*MERGE, "--rule", "vote"], r"argument --rule: invalid choice: 'vote'",
          absent=MERGE_OUT),
    _case("bhsd-output_exists", MERGE, r"output .*out_merge already exists \(pass --overwrite",
          setup=_folder("out_merge", {"mine.txt": b"keep me"})),
    _case("bhsd-output_inside_input", [*MERGE[:-1], f"{W}/merge_in/class2/merged"],
          r"output .*class2/merged lies inside the input", absent=f"{W}/merge_in/class2/merged"),
    _case("bhsd-no_action", ["bhsd"], r"the following arguments are required: action"),
]

REG_OUT = f"{W}/out_register"
REG = ["register", "-f", f"{W}/register/fixed.nii.gz", "-m", f"{W}/register/moving.nii.gz", "-o", REG_OUT]
REG_SEGS = [*REG, "-ms", f"{W}/register/moving_seg.nii.gz", "-fs", f"{W}/register/fixed_seg.nii.gz"]
REG_NO_RESAMPLING = r": register does not resample, bring both onto one grid first"


def _register_nan() -> np.ndarray:
    image = np.ones((6, 8, 8), np.float32)
    image[2, 3, 4] = np.nan
    return image


REGISTER_ROWS = [
    _case("register-missing_moving", [*REG[:4], f"{W}/register/nope.nii.gz", *REG[5:]],
          r"missing file: .*register/nope\.nii\.gz", absent=REG_OUT),
    _case("register-corrupt_moving", REG, r"cannot read moving image \(-m\) .*moving\.nii\.gz",
          setup=_truncate("register/moving.nii.gz"), absent=REG_OUT),
    _case("register-shape_mismatch", REG,
          r"fixed image \(-f\) .*fixed\.nii\.gz has shape \(6, 8, 8\) but moving image \(-m\) .*moving\.nii\.gz "
          r"has shape \(6, 8, 9\)" + REG_NO_RESAMPLING,
          setup=_image("register/moving.nii.gz", np.zeros((6, 8, 9), np.float32)), absent=REG_OUT),
    _case("register-spacing_mismatch", REG,
          r"has spacing \(2\.0, 1\.0, 1\.0\) but moving image \(-m\) .*moving\.nii\.gz has spacing "
          r"\(1\.0, 1\.0, 1\.0\)" + REG_NO_RESAMPLING,
          setup=_image("register/moving.nii.gz", np.zeros((6, 8, 8), np.float32), spacing=(1.0, 1.0, 1.0)),
          absent=REG_OUT),
    _case("register-nan_image", REG, r"moving image \(-m\) .*moving\.nii\.gz contains 1 NaN or infinite voxel",
          setup=_image("register/moving.nii.gz", _register_nan()), absent=REG_OUT),
    _case("register-image_too_small", REG,
          r"fixed image \(-f\) .*fixed\.nii\.gz has shape \(3, 8, 8\): register needs at least 5 voxels",
          setup=_image("register/fixed.nii.gz", np.zeros((3, 8, 8), np.float32)), absent=REG_OUT),
    _case("register-float_labels", REG_SEGS,
          r"moving segmentation \(-ms\) .*moving_seg\.nii\.gz: labels must be non-negative integers, found 0\.5",
          setup=_image("register/moving_seg.nii.gz", np.full((6, 8, 8), 0.5, np.float32)), absent=REG_OUT),
    _case("register-negative_labels", REG_SEGS,
          r"fixed segmentation \(-fs\) .*fixed_seg\.nii\.gz: labels must be non-negative integers, found -1",
          setup=_image("register/fixed_seg.nii.gz", np.full((6, 8, 8), -1, np.int16)), absent=REG_OUT),
    _case("register-segmentation_shape_mismatch", REG_SEGS,
          r"moving image \(-m\) .*has shape \(6, 8, 8\) but moving segmentation \(-ms\) .*has shape \(6, 8, 7\)",
          setup=_image("register/moving_seg.nii.gz", np.zeros((6, 8, 7), np.uint8)), absent=REG_OUT),
    _case("register-npz_without_image", [*REG[:4], f"{W}/register/other.npz", *REG[5:]],
          r"moving image \(-m\) .*other\.npz has no array 'vol' or 'vol_data' \(arrays: image, mask\)",
          absent=REG_OUT),
    _case("register-unknown_network", [*REG, "--network", "unet"], r"--network must be tmdca or convnet, got 'unet'",
          absent=REG_OUT),
    _case("register-downsample_zero", [*REG, "--downsample", "0"], r"--downsample must be an integer >= 1, got 0",
          absent=REG_OUT),
    _case("register-zero_iterations_without_model", [*REG, "--iterations", "0"],
          r"--iterations 0 registers with a trained model only", absent=REG_OUT),
    _case("register-model_without_configuration", [*REG, "-tr", "DCARegSegTrainer", "-d", "1"],
          r"a trained model needs -tr, -d and -c \(missing -c\), or --model", absent=REG_OUT),
    _case("register-model_folder_missing", [*REG, "--model", f"{W}/nowhere"],
          r"nowhere: not an nnU-Net model folder \(plans.json missing\)", absent=REG_OUT),
    _case("register-unknown_preset", [*REG, "--preset", "huge"],
          r"--preset huge: unknown TM-DCA preset; choose one of paper, small", absent=REG_OUT),
    _case("register-negative_iterations", [*REG, "--iterations", "-1"], r"--iterations must be >= 0, got -1",
          absent=REG_OUT),
    _case("register-iterations_not_a_number", [*REG, "--iterations", "many"],
          r"argument --iterations: invalid int value: 'many'", absent=REG_OUT),
    _case("register-zero_lr", [*REG, "--lr", "0"], r"--lr must be a number > 0, got 0\.0", absent=REG_OUT),
    _case("register-negative_lambda_reg", [*REG, "--lambda_reg=-1"], r"--lambda_reg must be a number >= 0, got -1",
          absent=REG_OUT),
    _case("register-lambda_seg_without_fixed_seg", [*REG, "-ms", f"{W}/register/moving_seg.nii.gz", "--lambda_seg",
                                                    "1"], r"--lambda_seg 1 needs both -ms and -fs", absent=REG_OUT),
    _case("register-unknown_device", [*REG, "--device", "tpu"], r"--device must be cpu or cuda, got 'tpu'",
          absent=REG_OUT),
    _case("register-cuda_without_gpu", [*REG, "--device", "cuda"], r"--device cuda: no CUDA device is available",
          setup=_no_cuda, absent=REG_OUT),
    _case("register-output_exists", REG, r"output .*out_register already exists \(pass --overwrite",
          setup=_folder("out_register", {"mine.txt": b"keep me"})),
    _case("register-output_contains_inputs", [*REG[:-1], f"{W}/register"], r"output .*register contains the input"),
    _case("register-missing_arguments", ["register", "-f", f"{W}/register/fixed.nii.gz"],
          r"the following arguments are required: -m, -o"),
]

# ----------------------------------------------------------------------------------------------------------------------
# rows: demo, env, benchmark, the dispatcher itself

DEMO = ["demo", "--workspace", f"{W}/demo_ws"]
DEMO_FOREIGN = r"--workspace .*demo_ws exists and was not created by nnunet-ext demo"

DEMO_ROWS = [
    _case("demo-foreign_workspace", DEMO, DEMO_FOREIGN, setup=_folder("demo_ws", {"thesis.tex": b"\\begin"})),
    _case("demo-workspace_is_nnunet_root", DEMO, DEMO_FOREIGN,
          setup=_folder("demo_ws", {"nnUNet_raw/Dataset001_Mine/dataset.json": b"{}"})),
    _case("demo-workspace_is_a_file", DEMO, DEMO_FOREIGN, setup=_file("demo_ws")),
    _case("demo-workspace_of_another_verb", DEMO, DEMO_FOREIGN,
          setup=_folder("demo_ws", marker_by="nnunet-ext dkm synthesize-post")),
    _case("demo-zero_cases", [*DEMO, "--cases", "0"], r"--cases must be >= 5", absent=f"{W}/demo_ws"),
    _case("demo-negative_test_cases", [*DEMO, "--test_cases", "-1"], r"--test_cases must be >= 1",
          absent=f"{W}/demo_ws"),
    _case("demo-zero_epochs", [*DEMO, "--epochs", "0"], r"--epochs must be >= 1", absent=f"{W}/demo_ws"),
    _case("demo-shape_too_small", [*DEMO, "--shape", "4", "32", "32"], r"--shape entries must be >= 8",
          absent=f"{W}/demo_ws"),
    _case("demo-shape_two_numbers", [*DEMO, "--shape", "32", "32"], r"argument --shape: expected 3 arguments"),
    _case("demo-cuda_without_gpu", [*DEMO, "-device", "cuda"], r"-device cuda: no CUDA device is available",
          setup=_no_cuda, absent=f"{W}/demo_ws"),
    _case("demo-unknown_device", [*DEMO, "-device", "tpu"], r"-device must be cpu, cuda or mps, got 'tpu'",
          absent=f"{W}/demo_ws"),
    _case("demo-unknown_method", [*DEMO, "--method", "unet"], r"argument --method: invalid choice: 'unet'"),
]

ENV_ROWS = [
    _case("env-unknown_flag", ["env", "--frobnicate"], r"unrecognized arguments: --frobnicate"),
    _case("env-workspace_without_value", ["env", "--workspace"], r"argument --workspace: expected one argument"),
    _case("env-workspace_is_a_file", ["env", "--workspace", f"{W}/a_file"], r"a_file", setup=_file("a_file")),
]

BENCHMARK_ROWS = [
    _case("benchmark-missing_spec", ["benchmark", "run", f"{W}/nope.yaml"], r"spec file not found: .*nope\.yaml"),
    _case("benchmark-invalid_yaml", ["benchmark", "run", f"{W}/bad.yaml"], r"bad\.yaml: line \d+: not valid YAML",
          setup=_file("bad.yaml", b"rows: [\n")),
    _case("benchmark-missing_workdir", ["benchmark", "report", f"{W}/nope"], r"benchmark workdir not found"),
    _case("benchmark-no_action", ["benchmark"], r"the following arguments are required: ACTION"),
    _case("benchmark-unknown_action", ["benchmark", "fly"], r"argument ACTION: invalid choice: 'fly'"),
    _case("benchmark-unknown_key", ["benchmark", "run", f"{W}/s.yaml"], r"s\.yaml: colour: unknown key",
          setup=_file("s.yaml", b"name: x\ncolour: red\nrows: [{label: a, kind: command, command: 'true'}]\n")),
    _case("benchmark-missing_trainer", ["benchmark", "run", f"{W}/s.yaml"], r"rows\[0\]\.trainer is missing",
          setup=_file("s.yaml", b"name: x\ndatasets: [{synth: breast_dce, id: 5, cases: 2}]\n"
                                b"rows: [{label: a, dataset: 5}]\n")),
    _case("benchmark-unknown_dataset", ["benchmark", "run", f"{W}/s.yaml"], r"rows\[0\]\.dataset: no dataset with id 7",
          setup=_file("s.yaml", b"name: x\ndatasets: [{synth: breast_dce, id: 5, cases: 2}]\n"
                                b"rows: [{label: a, trainer: DemoTrainer, dataset: 7}]\n")),
    _case("benchmark-baseline_not_a_row", ["benchmark", "run", f"{W}/s.yaml"], r"baseline: no row labelled 'Z'",
          setup=_file("s.yaml", b"name: x\nbaseline: Z\nrows: [{label: a, kind: command, command: 'true'}]\n")),
    _case("benchmark-requires_unknown_row", ["benchmark", "run", f"{W}/s.yaml"],
          r"rows\[0\]\.requires\[0\]: no row labelled 'Q'",
          setup=_file("s.yaml", b"name: x\nrows: [{label: a, kind: command, command: 'true', requires: [Q]}]\n")),
    _case("benchmark-seed_wrong_type", ["benchmark", "run", f"{W}/s.yaml"], r"seeds\[1\] must be a non-negative integer",
          setup=_file("s.yaml", b"name: x\nseeds: [0, x]\nrows: [{label: a, kind: command, command: 'true'}]\n")),
    _case("benchmark-jobs_zero", ["benchmark", "run", f"{W}/s.yaml", "--jobs", "0"], r"--jobs must be >= 1, got 0",
          setup=_file("s.yaml", b"name: x\nrows: [{label: a, kind: command, command: 'true'}]\n")),
    _case("benchmark-unknown_device", ["benchmark", "run", f"{W}/s.yaml", "-device", "tpu"],
          r"-device must be cpu, cuda or mps, got 'tpu'",
          setup=_file("s.yaml", b"name: x\nrows: [{label: a, kind: command, command: 'true'}]\n")),
    _case("benchmark-not_a_workdir", ["benchmark", "report", f"{W}/raw"], r"is not a benchmark workdir \(no study\.json",
          setup=_folder("raw", {"x.txt": b"1"})),
]

DISPATCHER_ROWS = [
    _case("dispatcher-no_command", [], r"no command given \(choose from env, synth"),
    _case("dispatcher-unknown_command", ["frobnicate"], r"unknown command 'frobnicate'"),
]

CASES: list[Case] = (DISPATCHER_ROWS + ENV_ROWS + SYNTH_ROWS + EVALUATE_ROWS + PLAN_ROWS + DKM_ROWS + CONVERT_ROWS
                     + FFPN_ROWS + MAMMO_SAM_ROWS + HCNET_ROWS + POSTPROCESS_ROWS + BHSD_ROWS + REGISTER_ROWS
                     + DEMO_ROWS + BENCHMARK_ROWS)


def count_cases() -> int:
    """Number of bad-input rows (recorded as ``bad_input_cases`` in the results file)."""
    return len(CASES)


# ----------------------------------------------------------------------------------------------------------------------
# the world


def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def _hc18_outline(open_: bool = False) -> np.ndarray:
    """A closed ellipse outline in a 24 x 32 image (HC18 style); ``open_`` cuts a gap into it."""
    from skimage.draw import ellipse_perimeter

    outline = np.zeros((24, 32), np.uint8)
    outline[ellipse_perimeter(12, 16, 8, 11, shape=outline.shape)] = 255
    if open_:
        outline[:, 12:20] = 0
    return outline


def _build_world(root: Path) -> None:
    import torch

    from nnunet_ext.imageio import write_image
    from tests.datasets_conversion.test_bhsd import write_release
    from tests.datasets_conversion.test_brats2023 import write_brats
    from tests.datasets_conversion.test_breast_mri_nact_pilot import write_study
    from tests.datasets_conversion.test_camus import write_patient
    from tests.datasets_conversion.test_inbreast import write_inbreast
    from tests.datasets_conversion.test_oasis_learn2reg import write_oasis
    from tests.datasets_conversion.test_registration_pairs import write_pairs_folder

    for folder in ("preprocessed", "results", "out_raw", "eval/ref", "eval/pred", "dce", "dkm/in", "dkm/ref"):
        (root / folder).mkdir(parents=True)
    tiny = root / "raw" / "Dataset005_Tiny"
    (tiny / "imagesTr").mkdir(parents=True)
    (tiny / "labelsTr").mkdir()
    (tiny / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0, "x": 1},
                                                   "numTraining": 1, "file_ending": ".nii.gz"}))
    rng = np.random.default_rng(0)
    write_image(tiny / "imagesTr" / "case_0000_0000.nii.gz", rng.normal(size=(4, 8, 8)).astype(np.float32),
                (2.0, 1.0, 1.0))
    _write_label(tiny / "labelsTr" / "case_0000.nii.gz", _label_map(0))

    # a two-phase DCE dataset with a breast mask, and a one-channel dataset, for hcnet cluster
    dce = root / "raw" / "Dataset060_HCDce"
    for folder in ("imagesTr", "labelsTr", "extrasTr"):
        (dce / folder).mkdir(parents=True)
    (dce / "dataset.json").write_text(json.dumps({"channel_names": {"0": "pre", "1": "post1"}, "labels": {
        "background": 0, "tumor": 1}, "numTraining": 1, "file_ending": ".nii.gz"}))
    for channel in range(2):
        write_image(dce / "imagesTr" / f"case_0000_{channel:04d}.nii.gz",
                    rng.uniform(100, 200, size=(4, 8, 8)).astype(np.float32), (2.0, 1.0, 1.0))
    _write_label(dce / "labelsTr" / "case_0000.nii.gz", _label_map(0))
    _write_label(dce / "extrasTr" / "case_0000_breast.nii.gz", np.ones((4, 8, 8), np.uint8))
    shutil.copytree(dce, root / "raw" / "Dataset061_HCPre", ignore=shutil.ignore_patterns("*_0001.nii.gz"))
    (root / "raw" / "Dataset061_HCPre" / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "pre"}, "labels": {"background": 0, "tumor": 1}, "numTraining": 1,
        "file_ending": ".nii.gz"}))

    for seed in range(2):
        _write_label(root / "eval" / "ref" / f"case_{seed:03d}.nii.gz", _label_map(seed))
        _write_label(root / "eval" / "pred" / f"case_{seed:03d}.nii.gz", np.roll(_label_map(seed), 1, axis=2))

    for case in ("a", "b"):
        pre = rng.uniform(50, 150, (4, 8, 8)).astype(np.float32)
        for k, role in enumerate(("pre", "post1", "post2")):
            _write_label(root / "dce" / f"{case}_{role}.nii.gz", pre + 40 * k)
        _write_label(root / "dce" / f"{case}_seg.nii.gz", _label_map(0))

    write_study(root / "dicom" / "UCSF-BR-01", np.random.default_rng(1), "UCSF-BR-01", "19980301")

    (root / "hc18" / "training_set").mkdir(parents=True)
    for name in ("001_HC", "002_HC"):
        _png(root / "hc18" / "training_set" / f"{name}.png", rng.integers(0, 255, (24, 32)))
        _png(root / "hc18" / "training_set" / f"{name}_Annotation.png", _hc18_outline())
    (root / "hc18" / "pixel_size_and_HC.csv").write_text("filename,px,hc\n001_HC.png,0.1,60\n002_HC.png,0.1,60\n")
    ffpn_model = root / "results" / "Dataset412_HC18Fake" / "FFPNRTrainer__nnUNetPlansWholeImage__2d"
    ffpn_model.mkdir(parents=True)
    (ffpn_model / "dataset.json").write_text(json.dumps({"channel_names": {"0": "US"}, "file_ending": ".nii.gz",
                                                         "labels": {"background": 0, "head": 1},
                                                         "conversion": {"downsample": 1}}))

    write_patient(root / "camus" / "training" / "patient0001", ".mhd", 1, singleton=True)  # 24 x 20, 0.3 x 0.15 mm
    write_release(root / "bhsd")  # 6 labelled 4 x 8 x 8 scans, a pool of 8, the slice-level CSV
    write_brats(root / "brats")  # <training folder>/: 3 labelled BraTS-GLI cases, 1 without seg, 8 x 10 x 12
    write_oasis(root / "oasis")  # OASIS/: 5 subjects of 8 x 10 x 12, labels 0..35, OASIS_dataset.json
    write_pairs_folder(root / "regpairs")  # images/ (4), labels/ (3), pairs.csv
    write_inbreast(root / "inbreast")  # AllDICOMs/ (4 of 40 x 30), AllXML/ (2 with masses, 1 without), INbreast.csv
    for folder in ("images", "masks"):
        (root / "img2d" / folder).mkdir(parents=True)
    for name in ("a", "b"):
        _png(root / "img2d" / "images" / f"{name}.png", np.random.default_rng(7).integers(0, 255, (12, 10)))
        _png(root / "img2d" / "masks" / f"{name}.png", np.pad(np.ones((4, 4)), ((2, 6), (3, 3))))

    write_image(root / "dkm" / "in" / "case_0000_0000.nii.gz", rng.normal(size=(4, 16, 16)).astype(np.float32),
                (2.0, 1.0, 1.0))
    write_image(root / "dkm" / "ref" / "case_0000_0001.nii.gz", rng.normal(size=(4, 16, 16)).astype(np.float32),
                (2.0, 1.0, 1.0))
    plans = {"dataset_name": "Dataset601_DKMFake", "plans_name": "nnUNetPlansCPU",
             "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlansCPU_3d_fullres"}}}
    trained = root / "results" / "Dataset601_DKMFake"
    for configuration in ("3d_fullres", "3d_lowres"):  # 3d_lowres: a folder whose plans lack that configuration
        model = trained / f"DKMDiffusionTrainer_small__nnUNetPlansCPU__{configuration}"
        (model / "fold_all").mkdir(parents=True)
        (model / "plans.json").write_text(json.dumps(plans))
        (model / "dataset.json").write_text(json.dumps({"channel_names": {"0": "pre"}, "labels": {"background": 0},
                                                        "file_ending": ".nii.gz"}))
        torch.save({"network_weights": {}, "trainer_name": "DKMDiffusionTrainer_small",
                    "init_args": {"configuration": configuration}}, model / "fold_all" / "checkpoint_final.pth")
    # two one-class prediction folders (nnUNetv2_predict layout) for bhsd merge
    for label in (2, 4):
        folder = root / "merge_in" / f"class{label}"
        folder.mkdir(parents=True)
        (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, f"c{label}": 1},
                                                         "nnunet_ext_single_class": {"name": f"c{label}",
                                                                                     "value": label}}))
        mask = (_label_map(label) > 0).astype(np.uint8)
        _write_label(folder / "case_000.nii.gz", mask)
        np.savez_compressed(folder / "case_000.npz", probabilities=np.stack([1 - mask, mask]).astype(np.float16))
    # a fixed/moving pair with label maps for register (its own generator: the files above stay as they were)
    (root / "register").mkdir()
    pair = np.random.default_rng(10).uniform(0, 1, (2, 6, 8, 8)).astype(np.float32)
    _write_label(root / "register" / "fixed.nii.gz", pair[0])
    _write_label(root / "register" / "moving.nii.gz", pair[1])
    for name, image in (("fixed_seg", pair[0]), ("moving_seg", pair[1])):
        _write_label(root / "register" / f"{name}.nii.gz", (image > 0.5).astype(np.uint8))
    np.savez(root / "register" / "other.npz", image=pair[0], mask=pair[0] > 0.5)


@pytest.fixture(scope="module")
def world_template(tmp_path_factory) -> Path:
    pytest.importorskip("pydicom")
    root = tmp_path_factory.mktemp("bad_input") / "template"
    _build_world(root)
    return root


class WorkStarted(Exception):
    """Raised by the tripwires: a bad input got past validation into real work."""


def _tripwire(*args, **kwargs):
    raise WorkStarted("bad input was not refused before heavy work started")


@pytest.fixture
def world(world_template, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "w"
    shutil.copytree(world_template, root, symlinks=True)
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, str(root / variable.split("_", 1)[1]))
    monkeypatch.delenv("NNUNET_EXT_WORKSPACE", raising=False)
    monkeypatch.chdir(root)  # relative defaults (e.g. workspace/) land in the world, where they are seen

    from nnunetv2.experiment_planning import plan_and_preprocess_api
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_ext import demo

    monkeypatch.setattr(plan_and_preprocess_api, "extract_fingerprints", _tripwire)
    monkeypatch.setattr(nnUNetPredictor, "initialize_from_trained_model_folder", _tripwire)
    monkeypatch.setattr(demo, "run_demo", _tripwire)
    return root


def tree_state(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file ('dir' / 'link -> target' otherwise), hidden entries included."""
    state = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            state[relative] = f"link -> {path.readlink()}"
        elif path.is_dir():
            state[relative] = "dir"
        else:
            state[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=False, reason=case.xfail)] if case.xfail else []
        if case.verb == "benchmark" or (case.argv and case.argv[0] == "benchmark"):
            marks.append(pytest.mark.skipif("benchmark" not in COMMANDS, reason="benchmark verb not installed"))
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", _params())
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case: Case, world: Path, monkeypatch, capsys):
    if case.setup is not None:
        case.setup(world, monkeypatch)
    before = tree_state(world)
    capsys.readouterr()

    code = main([arg.replace(W, str(world)) for arg in case.argv])

    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].strip(), f"stderr must be one line, got:\n{err}"
    prefix = f"nnunet-ext {case.verb}" if case.verb else "nnunet-ext:"
    assert lines[0].startswith(prefix) and ": error: " in lines[0], lines[0]
    message = lines[0].split(": error: ", 1)[1]
    assert re.search(case.error.replace(W, str(world)), message), f"{case.error!r} not found in {message!r}"
    if case.absent is not None:
        assert not Path(case.absent.replace(W, str(world))).exists()
    assert tree_state(world) == before  # no partial output anywhere, every input byte-identical


def test_every_verb_has_rows():
    covered = {case.verb for case in CASES}
    assert set(COMMANDS) <= covered, sorted(set(COMMANDS) - covered)


@pytest.mark.parametrize("kind_name", sorted(KIND_MODULES))
def test_every_declared_option_has_its_rows(kind_name):
    ids = {case.id for case in CASES}
    assert f"synth-{kind_name}-unknown_option" in ids
    for option in get_kind(kind_name).option_specs:
        assert f"synth-{kind_name}-{option.name}-wrong_type" in ids
        assert isinstance(option.type, Flag) or f"synth-{kind_name}-{option.name}-out_of_range" in ids


def test_generated_bad_values_are_refused_by_their_specs():
    """The generator's values really are invalid (a valid one would make a synth row test nothing)."""
    from nnunet_ext.errors import UserInputError
    from nnunet_ext.synth.options import validate

    for kind_name in KIND_MODULES:
        for option in get_kind(kind_name).option_specs:
            for value in (_wrong_type(option), _out_of_range(option)):
                if value is not None:
                    with pytest.raises(UserInputError):
                        validate(kind_name, [option], {option.name: value})


def test_enough_cases():
    assert count_cases() >= 100
