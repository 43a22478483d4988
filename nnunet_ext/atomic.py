"""Safe outputs: write to a temporary path, move into place only when complete, never destroy what a user owns.

Rules every nnunet-ext command follows (tested per verb in ``tests/test_atomic.py`` and the bad-input suite):

1. An output is built in a temporary sibling (same filesystem) and renamed into place when complete, so a crash or a
   validation error leaves no half-written output behind.
2. An existing output folder is replaced only when the user asked for it (``overwrite=True``, i.e. ``--overwrite``)
   *and* the folder carries the marker file :data:`MARKER`, which nnunet-ext writes into every folder it creates.
   A folder without the marker (a user's data, a real nnU-Net root) is never removed or replaced.
3. Replacement renames the old folder aside, moves the new one in, and only then removes the old one; if the move
   fails the old folder is put back. A crash at any point leaves the old or the new output, never neither.
4. An output that equals, contains or lies inside one of the command's inputs is refused before anything is written.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from nnunet_ext.errors import UserInputError

#: File that marks a folder as written by nnunet-ext (and therefore replaceable with ``--overwrite``).
MARKER = ".nnunet_ext_output"


def _absolute(path: str | os.PathLike) -> Path:
    """Absolute path with symlinks resolved where they exist (``-o .`` and ``-o ./x/..`` compare correctly)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def is_marked(folder: str | os.PathLike) -> bool:
    """True if ``folder`` was written by nnunet-ext (it holds :data:`MARKER`)."""
    return (Path(folder) / MARKER).is_file()


def marker_written_by(folder: str | os.PathLike) -> str | None:
    """The command recorded in ``folder``'s marker (e.g. ``"nnunet-ext demo"``), or None if unmarked/unreadable."""
    try:
        return json.loads((Path(folder) / MARKER).read_text()).get("written_by")
    except (OSError, ValueError, AttributeError):
        return None


def write_marker(folder: str | os.PathLike, written_by: str) -> None:
    """Mark ``folder`` as nnunet-ext output (called on the temporary folder before it is moved into place)."""
    record = {"written_by": written_by,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    (Path(folder) / MARKER).write_text(json.dumps(record) + "\n")


def check_disjoint(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                   role: str = "output") -> None:
    """Refuse an output that equals, contains or lies inside one of ``inputs`` (UserInputError naming both)."""
    out = _absolute(output)
    for item in inputs:
        if item is None:
            continue
        inp = _absolute(item)
        if out == inp:
            raise UserInputError(f"{role} {output} is the same folder as the input {item}")
        if inp.is_relative_to(out):
            raise UserInputError(f"{role} {output} contains the input {item}; choose an output outside the inputs")
        if out.is_relative_to(inp):
            raise UserInputError(f"{role} {output} lies inside the input {item}; choose an output outside the inputs")


def check_replaceable(folder: str | os.PathLike, overwrite: bool, what: str = "output") -> None:
    """Raise unless ``folder`` may be replaced: it is absent, or ``overwrite`` is set and it carries the marker."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if not overwrite:
        raise UserInputError(f"{what} {folder} already exists (pass --overwrite to replace it)")
    if not folder.is_dir() or folder.is_symlink() or not is_marked(folder):
        raise UserInputError(f"refusing to replace {folder}: it was not written by nnunet-ext (no {MARKER} in it); "
                             f"move it away or choose another {what}")


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir()
    return list(reversed(missing))


def _aside_name(folder: Path) -> Path:
    return Path(tempfile.mktemp(prefix=f".{folder.name}.old-", dir=folder.parent))


def _retire(folder: Path) -> None:
    """Remove a replaced folder: rename it aside first so its name is free at once, then delete it."""
    if folder.exists():
        aside = _aside_name(folder)
        os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)


def _move_into_place(tmp: Path, final: Path) -> Path | None:
    """Rename ``tmp`` onto ``final``; an existing ``final`` is renamed aside first and returned (caller deletes it)."""
    aside = None
    if final.exists():
        aside = _aside_name(final)
        os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except BaseException:
        if aside is not None:
            os.rename(aside, final)
        raise
    return aside


@contextlib.contextmanager
def atomic_output_dirs(finals: Sequence[str | os.PathLike], overwrite: bool = False,
                       inputs: Iterable[str | os.PathLike | None] = (), written_by: str = "nnunet-ext",
                       retire: Sequence[str | os.PathLike] = ()) -> Iterator[list[Path]]:
    """Yield one fresh temporary folder per entry of ``finals``; when the block exits without error, all of them
    replace their final paths together (each old folder is renamed aside, the new one moved in, then the old ones
    deleted; a failed move puts back what was already moved).

    Args:
        finals: output folders.
        overwrite: the user passed ``--overwrite``; existing outputs must also carry :data:`MARKER`.
        inputs: the command's input paths; outputs equal to, containing or inside them are refused.
        written_by: recorded in the marker (e.g. ``"nnunet-ext synth"``).
        retire: other folders that the new outputs supersede (e.g. a dataset with the same id under another name);
            they obey the same rules and are removed only after every output is in place.
    """
    finals = [Path(f) for f in finals]
    if len({_absolute(f) for f in finals}) != len(finals):
        raise UserInputError(f"outputs must be distinct folders, got {', '.join(map(str, finals))}")
    inputs = [i for i in inputs if i is not None]
    for final in finals:
        check_disjoint(final, inputs)
        check_replaceable(final, overwrite)
    retire = [Path(r) for r in retire if _absolute(r) not in {_absolute(f) for f in finals}]
    for old in retire:
        check_replaceable(old, overwrite, what="dataset")
    tmps: list[Path] = []
    created_parents: list[Path] = []  # folders made for the outputs; removed again if the outputs fail
    try:
        for final in finals:
            created_parents += _make_parents(final.parent)
            tmps.append(Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent)))
        yield tmps
        for tmp in tmps:
            write_marker(tmp, written_by)
    except BaseException:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(created_parents):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        raise
    moved: list[tuple[Path, Path | None]] = []
    try:
        for tmp, final in zip(tmps, finals):
            moved.append((final, _move_into_place(tmp, final)))
    except BaseException:
        for final, aside in reversed(moved):  # undo: the outputs change all together or not at all
            _retire(final)
            if aside is not None:
                os.rename(aside, final)
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, aside in moved:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    for old in retire:
        _retire(old)


@contextlib.contextmanager
def atomic_output_dir(final: str | os.PathLike, overwrite: bool = False,
                      inputs: Iterable[str | os.PathLike | None] = (), written_by: str = "nnunet-ext",
                      retire: Sequence[str | os.PathLike] = ()) -> Iterator[Path]:
    """One-folder form of :func:`atomic_output_dirs`."""
    with atomic_output_dirs([final], overwrite, inputs, written_by, retire) as (tmp,):
        yield tmp


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
