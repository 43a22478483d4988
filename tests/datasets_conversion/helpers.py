"""Checks shared by the converter tests: reading outputs, and the refusal contract (one line, no output, source
untouched)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from nnunet_ext.errors import UserInputError
from tests.conftest import tree_hash


def read(path: Path):
    """``(array, image)`` of a written file (SimpleITK)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def dataset_json(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def assert_refused(convert: Callable[[Path], object], source: Path, raw: Path, dataset_folder: str,
                   message: str) -> None:
    """``convert(raw)`` raises a one-line UserInputError matching ``message``, writes nothing under ``raw`` and leaves
    ``source`` (if it exists) byte for byte unchanged."""
    before = tree_hash(source) if source.exists() else None
    with pytest.raises(UserInputError, match=message) as info:
        convert(raw)
    assert "\n" not in str(info.value)
    assert not (raw / dataset_folder).exists()
    assert not raw.exists() or not any(raw.iterdir())
    if before is not None:
        assert tree_hash(source) == before
