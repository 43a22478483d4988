"""Which cases of an nnU-Net fold a BHSD trainer trains on: bleeding scans, negative scans, unlabeled scans.

A BHSD-style dataset mixes three kinds of training case (``datasets_conversion/bhsd.py`` and the ``head_ct_ich``
phantom write them):

- **bleeding** scans: a reference label with foreground;
- **negative** scans: a reference label that is all background (a head without hemorrhage, BHSD Sect. 3.2);
- **unlabeled** scans: listed in dataset.json ``unlabeled_cases``; their labelsTr file is an all-background
  placeholder (nnU-Net needs one), so they must never be read as negatives.

A case is a negative when nnU-Net's preprocessing found no voxel of any foreground class in it (the
``class_locations`` of its ``.pkl``), so no extra bookkeeping is needed and a user's own dataset works as is.
Negatives are added in a fixed pseudo-random order (seed 0 over the sorted ids of the fold), so the 200 negatives of
one run are a subset of the 400 of another: Table 2's rows add scans, they do not redraw them. Validation keeps
nnU-Net's fold minus the unlabeled cases: its negatives are where false positives are measured.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class FoldCases:
    train: list[str]            # bleeding + the chosen negatives
    val: list[str]              # nnU-Net's validation cases minus unlabeled ones
    bleeding: list[str]         # training cases with foreground (foreground-forced samples come from these)
    negatives: list[str]        # the chosen negatives
    available_negatives: int    # negatives in the fold's training split
    unlabeled: list[str]        # unlabeled cases of the whole dataset (never trained on with a label)


def unlabeled_cases(dataset_json: Mapping) -> set[str]:
    return {str(case) for case in dataset_json.get("unlabeled_cases", [])}


def has_foreground(preprocessed_folder: str | Path, identifier: str,
                   classes: Sequence[int] | None = None) -> bool:
    """Whether nnU-Net's preprocessing recorded a voxel of one of ``classes`` (default: any class) in the case."""
    with open(Path(preprocessed_folder) / f"{identifier}.pkl", "rb") as handle:
        locations = pickle.load(handle)["class_locations"]
    wanted = None if classes is None else set(int(c) for c in classes)
    return any(len(voxels) > 0 for key, voxels in locations.items()
               if isinstance(key, (int, np.integer)) and key > 0 and (wanted is None or int(key) in wanted))


def ordered_negatives(negatives: Sequence[str]) -> list[str]:
    """The order negatives are added in: a seeded permutation of the sorted ids (nested prefixes)."""
    ordered = sorted(negatives)
    return [ordered[i] for i in np.random.RandomState(0).permutation(len(ordered))]


def fold_cases(train_keys: Sequence[str], val_keys: Sequence[str], dataset_json: Mapping,
               preprocessed_folder: str | Path, num_negatives: int | None) -> FoldCases:
    """Split nnU-Net's fold into the cases a BHSD trainer uses (module docstring).

    ``num_negatives=None`` keeps every negative of the fold; asking for more than the fold has raises ValueError.
    """
    unlabeled = unlabeled_cases(dataset_json)
    labelled = [k for k in train_keys if k not in unlabeled]
    bleeding = [k for k in labelled if has_foreground(preprocessed_folder, k)]
    negatives = ordered_negatives([k for k in labelled if k not in set(bleeding)])
    if num_negatives is not None:
        if num_negatives < 0:
            raise ValueError(f"the number of negative scans must be >= 0, got {num_negatives}")
        if num_negatives > len(negatives):
            raise ValueError(f"{num_negatives} negative scans requested, but this fold's training split has "
                             f"{len(negatives)} (cases whose label is all background and that are not in "
                             f"unlabeled_cases)")
        chosen = negatives[:num_negatives]
    else:
        chosen = negatives
    if not bleeding:
        raise ValueError("this fold's training split has no case with foreground (every label is all background "
                         "or listed in unlabeled_cases)")
    chosen_set = set(chosen)
    train = [k for k in train_keys if k in set(bleeding) or k in chosen_set]
    return FoldCases(train=train, val=[k for k in val_keys if k not in unlabeled], bleeding=bleeding,
                     negatives=chosen, available_negatives=len(negatives), unlabeled=sorted(unlabeled))
