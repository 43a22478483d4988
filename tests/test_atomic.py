"""nnunet_ext.atomic: outputs appear complete or not at all; nothing a user owns is removed or replaced."""
import os
from pathlib import Path

import pytest

from nnunet_ext import atomic
from nnunet_ext.atomic import (MARKER, atomic_output_dir, atomic_output_dirs, atomic_output_file, check_disjoint,
                               is_marked)
from nnunet_ext.errors import UserInputError


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_dir_appears_only_on_success_and_is_marked(tmp_path):
    final = tmp_path / "out"
    with atomic_output_dir(final, written_by="test") as tmp:
        (tmp / "a.txt").write_text("x")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "x"
    assert is_marked(final) and '"written_by": "test"' in (final / MARKER).read_text()
    assert _listing(tmp_path) == ["out"]


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("x")
            raise RuntimeError("boom")
    assert _listing(tmp_path) == []


def test_existing_dir_needs_overwrite(tmp_path):
    with atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "old").write_text("0")
    with pytest.raises(UserInputError, match="already exists"):
        with atomic_output_dir(tmp_path / "out"):
            pass
    with atomic_output_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new").write_text("1")
    assert _listing(tmp_path / "out") == [MARKER, "new"]
    assert _listing(tmp_path) == ["out"]  # the old folder was renamed aside, then removed


@pytest.mark.parametrize("kind", ["unmarked_dir", "file", "symlink"])
def test_foreign_output_is_never_replaced_even_with_overwrite(tmp_path, kind):
    target = tmp_path / "out"
    if kind == "unmarked_dir":
        target.mkdir()
        (target / "precious.nii.gz").write_text("user data")
    elif kind == "file":
        target.write_text("user data")
    else:
        (tmp_path / "real").mkdir()
        (tmp_path / "real" / MARKER).write_text("{}")
        target.symlink_to(tmp_path / "real")
    before = _listing(tmp_path)
    with pytest.raises(UserInputError, match="refusing to replace"):
        with atomic_output_dir(target, overwrite=True):
            pytest.fail("the block must not run")
    assert _listing(tmp_path) == before
    if kind == "unmarked_dir":
        assert (target / "precious.nii.gz").read_text() == "user data"


def test_crash_during_the_swap_keeps_the_old_output(tmp_path, monkeypatch):
    with atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "v").write_text("old")
    real_rename = os.rename

    def failing_rename(src, dst):
        if ".tmp-" in str(src):  # moving the new folder in fails after the old one was renamed aside
            raise OSError("disk gone")
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", failing_rename)
    with pytest.raises(OSError, match="disk gone"):
        with atomic_output_dir(tmp_path / "out", overwrite=True) as tmp:
            (tmp / "v").write_text("new")
    assert (tmp_path / "out" / "v").read_text() == "old"
    assert _listing(tmp_path) == ["out"]


def test_several_outputs_change_together(tmp_path, monkeypatch):
    with atomic_output_dirs([tmp_path / "a", tmp_path / "b"]) as tmps:
        for tmp in tmps:
            (tmp / "v").write_text("old")
    real_rename = os.rename

    def failing_second(src, dst):
        if Path(dst) == tmp_path / "b" and ".tmp-" in str(src):
            raise OSError("no space")
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", failing_second)
    with pytest.raises(OSError):
        with atomic_output_dirs([tmp_path / "a", tmp_path / "b"], overwrite=True) as tmps:
            for tmp in tmps:
                (tmp / "v").write_text("new")
    assert (tmp_path / "a" / "v").read_text() == "old" and (tmp_path / "b" / "v").read_text() == "old"
    assert _listing(tmp_path) == ["a", "b"]


def test_retired_folder_is_removed_only_after_success_and_only_if_marked(tmp_path):
    with atomic_output_dir(tmp_path / "Dataset007_Old") as tmp:
        (tmp / "x").write_text("1")
    with atomic_output_dir(tmp_path / "Dataset007_New", overwrite=True, retire=[tmp_path / "Dataset007_Old"]):
        pass
    assert _listing(tmp_path) == ["Dataset007_New"]
    (tmp_path / "Dataset008_Mine").mkdir()
    with pytest.raises(UserInputError, match="refusing to replace"):
        with atomic_output_dir(tmp_path / "Dataset008_New", overwrite=True, retire=[tmp_path / "Dataset008_Mine"]):
            pass
    assert (tmp_path / "Dataset008_Mine").is_dir() and not (tmp_path / "Dataset008_New").exists()


@pytest.mark.parametrize("output,message", [
    (".", "contains the input"), ("data", "same folder"), ("data/sub/out", "lies inside"), ("data/../data", "same")])
def test_output_overlapping_an_input_is_refused(tmp_path, monkeypatch, output, message):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserInputError, match=message):
        check_disjoint(output, ["data"])
    check_disjoint("elsewhere", ["data"])  # a sibling is fine


def test_file_keeps_suffix_and_cleans_up(tmp_path):
    with atomic_output_file(tmp_path / "x.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_text("ok")
    assert (tmp_path / "x.nii.gz").read_text() == "ok"
    with pytest.raises(ValueError):
        with atomic_output_file(tmp_path / "y.json") as tmp:
            tmp.write_text("partial")
            raise ValueError
    assert _listing(tmp_path) == ["x.nii.gz"]


def test_parents_created_for_a_failed_output_are_removed(tmp_path):
    (tmp_path / "existing").mkdir()
    with pytest.raises(RuntimeError):
        with atomic_output_dir(tmp_path / "existing" / "new" / "deeper" / "out"):
            raise RuntimeError("boom")
    assert _listing(tmp_path) == ["existing"] and _listing(tmp_path / "existing") == []
