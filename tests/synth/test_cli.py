"""The synth command: one-line errors, nothing written on refusal, determinism across runs."""
import json

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
    """breast_dce names pre/post1/post2: n_post=3 is refused before any case is generated."""
    from nnunet_ext.errors import UserInputError
    from nnunet_ext.synth.cli import synthesize

    with pytest.raises(UserInputError, match="breast_dce: option n_post=3 is invalid: expected an integer equal to 2"):
        synthesize("breast_dce", 42, cases=1, test_cases=0, raw=str(tmp_path),
                   options={"n_post": 3, "shape": (16, 40, 40)})
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
