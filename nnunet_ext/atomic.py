"""Write outputs to a temporary path and move them into place only when complete.

A crash or a validation error therefore never leaves a half-written dataset, report or file behind.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from nnunet_ext.errors import UserInputError


@contextlib.contextmanager
def atomic_output_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``final`` when the block exits without error.

    The temporary directory lives next to ``final`` so the last step is a same-filesystem rename.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise UserInputError(f"output {final} already exists (pass --overwrite to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_output_file(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path (same folder and suffix as ``final``) that is renamed onto ``final`` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # keep the full suffix (e.g. .nii.gz): image writers pick the format from it
    suffix = "".join(final.suffixes)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
