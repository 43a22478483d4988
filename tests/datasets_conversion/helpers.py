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


def assert_subtraction_channel(dce: Path, pre_only: Path, plain_pre_only: Path, n_post: int) -> None:
    """What ``--subtraction`` writes: the DCE dataset's channel names end in ``SUB``, and every case's SUB file is
    post1 - pre in float32, exactly, as read back, on the pre-contrast geometry; the pre-contrast-only dataset is the
    one a conversion without ``--subtraction`` (``plain_pre_only``) writes."""
    import numpy as np

    sub_channel = n_post + 1
    assert dataset_json(dce)["channel_names"] == {"0": "pre", **{str(k): f"post{k}" for k in range(1, sub_channel)},
                                                  str(sub_channel): "SUB"}
    pre_files = sorted(dce.glob("images*/*_0000.nii.gz"))
    assert pre_files
    for pre_file in pre_files:
        case = pre_file.name[:-len("_0000.nii.gz")]
        (pre, pre_image), (post1, _) = read(pre_file), read(pre_file.with_name(f"{case}_0001.nii.gz"))
        sub, sub_image = read(pre_file.with_name(f"{case}_{sub_channel:04d}.nii.gz"))
        assert sub.dtype == np.float32 and not pre_file.with_name(f"{case}_{sub_channel + 1:04d}.nii.gz").exists()
        np.testing.assert_array_equal(sub, post1.astype(np.float32) - pre.astype(np.float32))
        assert (sub_image.GetSpacing(), sub_image.GetOrigin(), sub_image.GetDirection()) == (
            pre_image.GetSpacing(), pre_image.GetOrigin(), pre_image.GetDirection())
    assert dataset_json(pre_only) == dataset_json(plain_pre_only)
    written = sorted(p.relative_to(pre_only) for p in pre_only.rglob("*.nii.gz"))
    assert written == sorted(p.relative_to(plain_pre_only) for p in plain_pre_only.rglob("*.nii.gz"))
    for relative in written:
        np.testing.assert_array_equal(read(pre_only / relative)[0], read(plain_pre_only / relative)[0])
