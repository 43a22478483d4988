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


def test_channel_count_must_match_channel_names(tmp_path):
    """breast_dce names pre/post1/post2: a 3-post option is refused before anything is written."""
    from nnunet_ext.errors import UserInputError
    from nnunet_ext.synth.cli import synthesize

    with pytest.raises(UserInputError, match="4 image channels but the dataset names 3"):
        synthesize("breast_dce", 42, cases=1, test_cases=0, raw=str(tmp_path),
                   options={"n_post": 3, "shape": (16, 40, 40)})
    assert list(tmp_path.iterdir()) == []
