"""Grouped cross-validation splits: cases of one group (repeat images of one examination, slices of one patient)
never land on both sides of a fold.

nnU-Net splits the training cases with a seeded 5-fold ``KFold`` unless ``splits_final.json`` exists in the
preprocessed dataset folder. A raw ``dataset.json`` with ``case_groups`` (``{case id: group}``, written by our
converters) makes the planners write that file from scikit-learn's ``GroupKFold`` (deterministic; folds balanced in
size), so ``nnUNetv2_train`` folds 0-4 are grouped with no further step.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

NUM_FOLDS = 5


def grouped_splits(case_groups: dict[str, str], num_folds: int = NUM_FOLDS) -> list[dict[str, list[str]]]:
    """nnU-Net's split format ``[{"train": [...], "val": [...]}, ...]``; cases sorted; groups never split."""
    from sklearn.model_selection import GroupKFold

    cases = sorted(case_groups)
    groups = [str(case_groups[c]) for c in cases]
    if len(set(groups)) < num_folds:
        raise ValueError(f"{len(set(groups))} case groups cannot fill {num_folds} folds")
    splits = []
    for train, val in GroupKFold(n_splits=num_folds).split(cases, groups=groups):
        splits.append({"train": [cases[i] for i in train], "val": [cases[i] for i in val]})
    return splits


def write_grouped_splits(dataset_name: str, dataset_json: dict) -> Path | None:
    """Write ``splits_final.json`` for a dataset whose dataset.json names ``case_groups``; returns its path (None
    when there are no groups or a splits file exists: like nnU-Net, an existing split, perhaps the user's own, is
    kept)."""
    groups = dataset_json.get("case_groups")
    if not groups:
        return None
    path = Path(os.environ["nnUNet_preprocessed"]) / dataset_name / "splits_final.json"
    if path.exists():
        print(f"keeping the existing {path} (grouped splits are written only where none exists)")
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(grouped_splits(groups), indent=2) + "\n")
    temporary.replace(path)
    return path
