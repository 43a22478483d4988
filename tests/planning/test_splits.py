"""Tests of nnunet_ext.planning.splits: grouped 5-fold splits written from dataset.json's case_groups."""
from __future__ import annotations

import json

import pytest

from nnunet_ext.planning.splits import grouped_splits, write_grouped_splits

# 12 groups of 1-3 cases (repeat images of one examination)
GROUPS = {f"hc18_{g:03d}{suffix}": f"{g:03d}" for g in range(12) for suffix in ("", "_2", "_3")[: 1 + g % 3]}


def test_every_case_is_validated_once_and_groups_never_straddle_a_fold():
    splits = grouped_splits(GROUPS)
    assert len(splits) == 5
    validated = [case for split in splits for case in split["val"]]
    assert sorted(validated) == sorted(GROUPS)
    for split in splits:
        assert set(split["train"]) | set(split["val"]) == set(GROUPS)
        train_groups = {GROUPS[c] for c in split["train"]}
        assert not train_groups & {GROUPS[c] for c in split["val"]}
    assert grouped_splits(GROUPS) == splits  # deterministic


def test_too_few_groups_is_an_error():
    with pytest.raises(ValueError, match="3 case groups cannot fill 5 folds"):
        grouped_splits({"a": "1", "b": "2", "c": "3"})


def test_written_only_with_groups_and_never_over_an_existing_split(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    assert write_grouped_splits("Dataset420_X", {"labels": {}}) is None
    path = write_grouped_splits("Dataset420_X", {"case_groups": GROUPS})
    assert json.loads(path.read_text()) == grouped_splits(GROUPS)
    path.write_text("[]")  # the user's own split
    assert write_grouped_splits("Dataset420_X", {"case_groups": GROUPS}) is None
    assert path.read_text() == "[]"
