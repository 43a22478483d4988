"""Provenance records: whether a file (a benchmark spec) is the one committed at HEAD."""
from __future__ import annotations

import subprocess

import pytest

from nnunet_ext.provenance import committed_file


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "specs").mkdir(parents=True)
    (repo / "specs" / "study.yaml").write_text("name: study\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "spec")
    return repo


@pytest.mark.parametrize("change, committed, why", [
    (None, True, "specs/study.yaml as committed at HEAD"),
    ("edit", False, "specs/study.yaml differs from the file committed at HEAD"),
    ("untracked", False, "specs/new.yaml is not committed at HEAD"),
    ("outside", False, "outside the repository"),
])
def test_committed_file_tells_committed_from_edited_untracked_and_outside(repo, tmp_path, change, committed, why):
    path = repo / "specs" / "study.yaml"
    if change == "edit":
        path.write_text("name: study\nseeds: [0]\n")
    elif change == "untracked":
        path = repo / "specs" / "new.yaml"
        path.write_text("name: new\n")
    elif change == "outside":
        path = tmp_path / "copy.yaml"
        path.write_text("name: study\n")
    state = committed_file(path, repo)
    assert state["committed"] is committed and why in state["why"]
    assert len(state["sha256"]) == 64


def test_committed_file_outside_a_checkout_is_unknown(tmp_path):
    (tmp_path / "spec.yaml").write_text("name: x\n")
    state = committed_file(tmp_path / "spec.yaml", tmp_path)
    assert state["committed"] is None and state["why"] == "not a git checkout"
