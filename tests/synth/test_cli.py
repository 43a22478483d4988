"""The synth command: one-line errors, nothing written on refusal, determinism across runs."""
import json
import re

import numpy as np
import pytest

from nnunet_ext.cli import main
from nnunet_ext.imageio import read_image

TINY = ["--shape", "16", "40", "40"]


def _one_line_error(capsys, code):
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_unknown_kind(tmp_path, capsys):
    err = _one_line_error(capsys, main(["synth", "lungs", "-d", "7", "--raw", str(tmp_path)]))
    assert "unknown synth kind 'lungs'" in err
    assert list(tmp_path.iterdir()) == []


def test_zero_cases(tmp_path, capsys):
    err = _one_line_error(capsys, main(["synth", "breast_dce", "-d", "7", "--cases", "0", "--raw", str(tmp_path)]))
    assert "--cases must be >= 1" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_output_root(monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    err = _one_line_error(capsys, main(["synth", "breast_dce", "-d", "7"]))
    assert "nnUNet_raw" in err


def test_existing_id_refused_unless_overwrite(tmp_path, capsys):
    args = ["synth", "breast_dce", "-d", "7", "--cases", "1", "--test_cases", "0", "--raw", str(tmp_path), *TINY]
    assert main(args) == 0
    capsys.readouterr()
    before = sorted(p.name for p in (tmp_path / "Dataset007_BreastDCE" / "imagesTr").iterdir())
    err = _one_line_error(capsys, main(args[:-4] + ["--name", "Other", *TINY]))
    assert "dataset id 7 already exists" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset007_BreastDCE"]
    assert main(args + ["--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "Dataset007_BreastDCE" / "imagesTr").iterdir()) == before


def test_same_seed_same_files_and_pre_only_copy(tmp_path):
    for root in ("a", "b"):
        assert main(["synth", "breast_dce", "-d", "8", "--cases", "2", "--test_cases", "1", "--seed", "3",
                     "--raw", str(tmp_path / root), "--pre_only_id", "9", "--labeled_cases", "1", *TINY]) == 0
    a, _ = read_image(tmp_path / "a" / "Dataset008_BreastDCE" / "imagesTr" / "case_0001_0002.nii.gz")
    b, _ = read_image(tmp_path / "b" / "Dataset008_BreastDCE" / "imagesTr" / "case_0001_0002.nii.gz")
    np.testing.assert_array_equal(a, b)
    pre_only = tmp_path / "a" / "Dataset009_BreastDCEPreOnly"
    meta = json.loads((pre_only / "dataset.json").read_text())
    assert meta["paired_dce_dataset"] == "Dataset008_BreastDCE" and meta["numTraining"] == 1
    assert sorted(p.name for p in (pre_only / "imagesTr").iterdir()) == ["case_0000_0000.nii.gz"]
    pre, _ = read_image(tmp_path / "a" / "Dataset008_BreastDCE" / "imagesTr" / "case_0000_0000.nii.gz")
    copy, _ = read_image(pre_only / "imagesTr" / "case_0000_0000.nii.gz")
    np.testing.assert_array_equal(pre, copy)


@pytest.mark.parametrize("bad", [["--pre_only_id", "8"], ["--labeled_cases", "5"]])
def test_bad_pre_only_options(tmp_path, capsys, bad):
    code = main(["synth", "breast_dce", "-d", "8", "--cases", "2", "--raw", str(tmp_path), *TINY,
                 *(["--pre_only_id", "9"] if bad[0] == "--labeled_cases" else []), *bad])
    _one_line_error(capsys, code)
    assert list(tmp_path.iterdir()) == []


KINDS = ["breast_dce", "head_ct_ich", "ultrasound_2d", "mammo_2d", "brain_pairs"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_writes_a_dataset_nnunet_accepts(kind, tmp_path, verify_with_nnunet):
    from nnunet_ext.synth.cli import get_kind, synthesize

    (folder,) = synthesize(kind, 40, cases=2, test_cases=1, raw=str(tmp_path))
    verify_with_nnunet(folder)
    dataset = json.loads(folder.joinpath("dataset.json").read_text())
    registered = get_kind(kind)
    assert dataset["channel_names"] == registered.channel_names and dataset["labels"] == registered.labels
    assert len(list((folder / "imagesTs").iterdir())) == len(registered.channel_names)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_refuses_zero_cases_and_existing_ids(kind, tmp_path):
    from nnunet_ext.errors import UserInputError
    from nnunet_ext.synth.cli import synthesize

    with pytest.raises(UserInputError, match="--cases"):
        synthesize(kind, 41, cases=0, raw=str(tmp_path))
    synthesize(kind, 41, cases=1, test_cases=0, raw=str(tmp_path))
    with pytest.raises(UserInputError, match="already exists"):
        synthesize(kind, 41, cases=1, test_cases=0, raw=str(tmp_path))


def test_phase_count_is_refused_by_the_option_spec(tmp_path):
    """breast_dce takes 1-8 post-contrast phases: n_post=9 is refused before any case is generated."""
    from nnunet_ext.errors import UserInputError
    from nnunet_ext.synth.cli import synthesize

    with pytest.raises(UserInputError, match=r"breast_dce: option n_post=9 is invalid: expected an integer .*8"):
        synthesize("breast_dce", 42, cases=1, test_cases=0, raw=str(tmp_path),
                   options={"n_post": 9, "shape": (16, 40, 40)})
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_cases_whose_channels_differ_from_the_channel_names(tmp_path):
    from nnunet_ext.errors import UserInputError
    from nnunet_ext.synth.base import PhantomCase, write_raw_dataset

    image = np.zeros((4, 8, 8), np.float32)
    case = PhantomCase(images=[image, image], label=image.astype(np.uint8), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(UserInputError, match="2 image channels but the dataset names 3"):
        write_raw_dataset(tmp_path, 43, "X", {"0": "pre", "1": "post1", "2": "post2"}, {"background": 0},
                          [("case_0000", case)], [])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
def test_list_options_prints_every_declared_option(kind, capsys):
    from nnunet_ext.synth.cli import get_kind

    assert main(["synth", kind, "--list_options"]) == 0
    out = capsys.readouterr().out
    names = [spec.name for spec in get_kind(kind).option_specs]
    assert "shape" in names
    for name in names:
        assert f"\n  {name} (default " in out


@pytest.mark.parametrize("argv, message", [
    (["--option", "snr"], "--option expects KEY=VALUE, got 'snr'"),
    (["--option", "snr=30", "--option", "snr=40"], "--option snr is given twice"),
    (["--option", "shape=[16,40,40]"], "shape is given twice"),
])
def test_option_syntax_errors(tmp_path, capsys, argv, message):
    err = _one_line_error(capsys, main(["synth", "breast_dce", "-d", "7", "--raw", str(tmp_path), *TINY, *argv]))
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_dataset_id_is_required_unless_listing(tmp_path, capsys):
    err = _one_line_error(capsys, main(["synth", "breast_dce", "--raw", str(tmp_path)]))
    assert err == "nnunet-ext synth: error: -d DATASET_ID is required"


def test_options_are_recorded_normalised_in_dataset_json(tmp_path):
    from nnunet_ext.synth.cli import synthesize

    (folder,) = synthesize("brain_pairs", 44, cases=1, test_cases=0, raw=str(tmp_path),
                           options={"shape": [12, 16, 12], "displacement_mm": 2})
    record = json.loads((folder / "dataset.json").read_text())["synth"]["options"]
    assert record == {"shape": [12, 16, 12], "displacement_mm": 2.0}


# --- the DKM pair: DCE dataset (every case, labels withheld beyond k) + pre-contrast-only copy (first k, labelled) ----
PAIR_SHAPE = (16, 40, 40)
DCE_ID, PRE_ID, LABELED = 8, 9, 1


@pytest.fixture(scope="module")
def dce_pair(tmp_path_factory):
    from nnunet_ext.synth.cli import synthesize

    raw = tmp_path_factory.mktemp("pair")
    dce, pre = synthesize("breast_dce", DCE_ID, cases=3, test_cases=1, seed=0, raw=str(raw), pre_only_id=PRE_ID,
                          labeled_cases=LABELED, options={"shape": PAIR_SHAPE})
    return raw, dce, pre


def _phantom(index, split=0):
    from nnunet_ext.synth import breast_dce
    from nnunet_ext.synth.base import case_rng

    return breast_dce.make_case(case_rng(0, split, index), PAIR_SHAPE)


def test_pair_appears_together(dce_pair):
    raw, dce, pre = dce_pair
    assert sorted(p.name for p in raw.iterdir()) == [dce.name, pre.name]  # no temporary folders left behind
    assert (dce.name, pre.name) == ("Dataset008_BreastDCE", "Dataset009_BreastDCEPreOnly")


def test_pair_is_written_all_or_nothing(tmp_path, monkeypatch):
    """A failure while writing the pre-only copy leaves no DCE dataset either."""
    from nnunet_ext.synth import base
    from nnunet_ext.synth.cli import synthesize

    write = base._write_dataset_files

    def fail_on_pre_only(folder, spec):
        if spec.dataset_id == PRE_ID:
            raise OSError("disk full")
        write(folder, spec)

    monkeypatch.setattr(base, "_write_dataset_files", fail_on_pre_only)
    with pytest.raises(OSError, match="disk full"):
        synthesize("breast_dce", DCE_ID, cases=2, test_cases=0, raw=str(tmp_path), pre_only_id=PRE_ID,
                   labeled_cases=1, options={"shape": PAIR_SHAPE})
    assert list(tmp_path.iterdir()) == []


def test_unlabeled_cases_get_all_background_placeholders(dce_pair):
    _, dce, _ = dce_pair
    meta = json.loads((dce / "dataset.json").read_text())
    assert meta["unlabeled_cases"] == ["case_0001", "case_0002"]
    for index, case in ((1, "case_0001"), (2, "case_0002")):
        phantom = _phantom(index)
        assert phantom.label.any()  # the phantom has a tumour: the placeholder really withholds it
        placeholder, _ = read_image(dce / "labelsTr" / f"{case}.nii.gz")
        assert placeholder.shape == PAIR_SHAPE and not placeholder.any()
        for channel in range(3):  # the DM still trains on every phase of the unlabelled case
            image, _ = read_image(dce / "imagesTr" / f"{case}_{channel:04d}.nii.gz")
            np.testing.assert_array_equal(image, phantom.images[channel])
    label, _ = read_image(dce / "labelsTr" / "case_0000.nii.gz")
    np.testing.assert_array_equal(label, _phantom(0).label)


def test_pre_only_copy_keeps_its_labels(dce_pair):
    _, dce, pre = dce_pair
    assert sorted(p.name for p in (pre / "labelsTr").iterdir()) == ["case_0000.nii.gz"]
    label, _ = read_image(pre / "labelsTr" / "case_0000.nii.gz")
    assert label.any()
    np.testing.assert_array_equal(label, _phantom(0).label)
    test_copy, _ = read_image(pre / "labelsTs" / "test_0000.nii.gz")
    test_original, _ = read_image(dce / "labelsTs" / "test_0000.nii.gz")
    np.testing.assert_array_equal(test_copy, test_original)
    np.testing.assert_array_equal(test_copy, _phantom(0, split=1).label)


def test_pair_dataset_json_keys(dce_pair):
    _, dce, pre = dce_pair
    dce_meta = json.loads((dce / "dataset.json").read_text())
    pre_meta = json.loads((pre / "dataset.json").read_text())
    assert dce_meta["channel_names"] == {"0": "pre", "1": "post1", "2": "post2"}
    assert dce_meta["numTraining"] == 3 and dce_meta["pre_only_dataset"] == pre.name
    assert dce_meta["synth"]["kind"] == "breast_dce" and dce_meta["synth"]["cases"] == 3
    assert pre_meta["channel_names"] == {"0": "pre"} and pre_meta["numTraining"] == LABELED
    assert pre_meta["paired_dce_dataset"] == dce.name  # where DKMTrainer looks for the diffusion module
    assert pre_meta["synth"]["labeled_cases"] == LABELED and pre_meta["synth"]["channels"] == [0]
    assert "unlabeled_cases" not in pre_meta
    assert dce_meta["labels"] == pre_meta["labels"] == {"background": 0, "tumor": 1}


# --- --subtraction / --subregions: shorthands for --option NAME=true ------------------------------------------------
def test_option_flags_are_shorthands_for_the_options(tmp_path):
    flags = ["synth", "breast_dce", "-d", "7", "--cases", "1", "--test_cases", "0", *TINY]
    assert main([*flags, "--raw", str(tmp_path / "a"), "--subtraction", "--subregions"]) == 0
    assert main([*flags, "--raw", str(tmp_path / "b"), "--option", "subtraction=true", "--option",
                 "subregions=true"]) == 0
    a, b = (json.loads((tmp_path / root / "Dataset007_BreastDCE" / "dataset.json").read_text()) for root in "ab")
    assert a == b
    assert a["channel_names"]["3"] == "SUB" and a["regions_class_order"] == [1, 2]
    assert a["synth"]["options"] == {"shape": [16, 40, 40], "subtraction": True, "subregions": True}
    image_a, _ = read_image(tmp_path / "a" / "Dataset007_BreastDCE" / "imagesTr" / "case_0000_0003.nii.gz")
    image_b, _ = read_image(tmp_path / "b" / "Dataset007_BreastDCE" / "imagesTr" / "case_0000_0003.nii.gz")
    np.testing.assert_array_equal(image_a, image_b)


@pytest.mark.parametrize("argv, message", [
    (["head_ct_ich", "--subtraction"], r"synth: error: head_ct_ich: unknown option subtraction \(options: "),
    (["mammo_2d", "--subregions"], r"synth: error: mammo_2d: unknown option subregions \(options: "),
    (["breast_dce", *TINY, "--subtraction", "--option", "subtraction=false"],
     r"subtraction is given twice \(--subtraction and --option subtraction=\.\.\.\); use one"),
])
def test_option_flags_are_refused_where_the_kind_lacks_the_option(tmp_path, capsys, argv, message):
    err = _one_line_error(capsys, main(["synth", argv[0], "-d", "7", "--raw", str(tmp_path), *argv[1:]]))
    assert re.search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_region_labels_without_a_class_order(tmp_path):
    from nnunet_ext.errors import UserInputError
    from nnunet_ext.synth.base import PhantomCase, write_raw_dataset

    image = np.zeros((4, 8, 8), np.float32)
    case = PhantomCase(images=[image], label=image.astype(np.uint8), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(UserInputError, match=r"region labels \(lesion\) need a regions_class_order"):
        write_raw_dataset(tmp_path, 43, "X", {"0": "pre"}, {"background": 0, "lesion": [1, 2]},
                          [("case_0000", case)], [])
    assert list(tmp_path.iterdir()) == []
