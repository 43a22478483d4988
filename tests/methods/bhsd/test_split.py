"""Bleeding / negative / unlabeled cases of a fold (BHSD Sect. 3.2, Table 2) on fake preprocessed folders."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from nnunet_ext.methods.bhsd.split import fold_cases, has_foreground, ordered_negatives


def _write_case(folder, identifier, classes):
    """A preprocessed case's .pkl as nnU-Net writes it: class_locations per label (empty when absent)."""
    locations = {label: (np.array([[0, 1, 2, 3]]) if label in classes else np.zeros((0, 4), int))
                 for label in (1, 2, 3, 4, 5)}
    with open(folder / f"{identifier}.pkl", "wb") as handle:
        pickle.dump({"class_locations": locations}, handle)


@pytest.fixture
def folder(tmp_path):
    for i in range(4):
        _write_case(tmp_path, f"bleed{i}", {1 + i})
    for i in range(6):
        _write_case(tmp_path, f"neg{i}", set())
    for i in range(2):
        _write_case(tmp_path, f"pool{i}", set())  # placeholders: all background, but unlabeled
    return tmp_path


DATASET_JSON = {"unlabeled_cases": ["pool0", "pool1"]}
TRAIN = ["bleed0", "bleed1", "bleed2", "neg0", "neg1", "neg2", "neg3", "neg4", "pool0", "pool1"]
VAL = ["bleed3", "neg5", "pool1"]


def test_has_foreground_reads_class_locations(folder):
    assert has_foreground(folder, "bleed2") and not has_foreground(folder, "neg0")
    assert has_foreground(folder, "bleed2", classes=[3]) and not has_foreground(folder, "bleed2", classes=[1, 5])


@pytest.mark.parametrize("count,expected", [(0, 0), (2, 2), (5, 5), (None, 5)])
def test_training_split_is_bleeding_plus_requested_negatives(folder, count, expected):
    cases = fold_cases(TRAIN, VAL, DATASET_JSON, folder, count)
    assert cases.bleeding == ["bleed0", "bleed1", "bleed2"]
    assert len(cases.negatives) == expected and cases.available_negatives == 5
    assert set(cases.train) == {"bleed0", "bleed1", "bleed2", *cases.negatives}
    assert not {"pool0", "pool1"} & set(cases.train)  # unlabeled placeholders are never negatives
    assert cases.val == ["bleed3", "neg5"] and cases.unlabeled == ["pool0", "pool1"]


def test_more_negatives_add_scans_and_never_redraw_them(folder):
    chosen = [fold_cases(TRAIN, VAL, DATASET_JSON, folder, n).negatives for n in range(6)]
    for smaller, larger in zip(chosen, chosen[1:]):
        assert larger[:len(smaller)] == smaller
    assert ordered_negatives(["b", "a", "c"]) == ordered_negatives(["c", "b", "a"])  # order of input irrelevant


@pytest.mark.parametrize("count,message", [(6, "6 negative scans requested, but this fold's training split has 5"),
                                           (-1, "must be >= 0")])
def test_bad_counts_name_what_is_available(folder, count, message):
    with pytest.raises(ValueError, match=message):
        fold_cases(TRAIN, VAL, DATASET_JSON, folder, count)


def test_a_fold_without_bleeding_is_refused(folder):
    with pytest.raises(ValueError, match="no case with foreground"):
        fold_cases(["neg0", "pool0"], VAL, DATASET_JSON, folder, None)
