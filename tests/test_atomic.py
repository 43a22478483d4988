import pytest

from nnunet_ext.atomic import atomic_output_dir, atomic_output_file
from nnunet_ext.errors import UserInputError


def test_dir_appears_only_on_success(tmp_path):
    final = tmp_path / "out"
    with atomic_output_dir(final) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_nothing(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(final) as tmp:
            (tmp / "a.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_dir_needs_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(UserInputError, match="already exists"):
        with atomic_output_dir(tmp_path / "out"):
            pass
    with atomic_output_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new").write_text("1")
    assert (tmp_path / "out" / "new").exists()


def test_file_keeps_suffix_and_cleans_up(tmp_path):
    with atomic_output_file(tmp_path / "x.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_text("ok")
    assert (tmp_path / "x.nii.gz").read_text() == "ok"
    with pytest.raises(ValueError):
        with atomic_output_file(tmp_path / "y.json") as tmp:
            tmp.write_text("partial")
            raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii.gz"]
