"""Provenance of a measured figure: which code, command, machine, software and device produced it.

Every file in ``benchmarks/results/`` is written by a committed command and embeds :func:`collect` (the rules are in
DEVELOPERS.md and ``benchmarks/README.md``). Interpretation lives in a separate ``*.findings.md`` that no command
writes, so :func:`write_result` refuses that name.
"""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

REPOSITORY = Path(__file__).resolve().parents[1]


def git_output(repo: str | os.PathLike, *args: str) -> bytes | None:
    """Stdout of ``git -C repo ARGS``, or None when git is missing, times out or fails (e.g. not a checkout)."""
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(repo: str | os.PathLike = REPOSITORY) -> dict:
    """``{"commit": full sha or None, "dirty": bool or None}`` of the repository holding this package.

    ``dirty`` ignores untracked files (results being written are untracked until committed) but counts any change
    to tracked files. Outside a git checkout (a wheel install) both are None.
    """
    commit = git_output(repo, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git_output(repo, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.decode().strip(), "dirty": bool(status.strip()) if status is not None else None}


def committed_file(path: str | os.PathLike, repo: str | os.PathLike = REPOSITORY) -> dict:
    """Whether ``path`` is the file committed at the repository's HEAD: ``{"sha256", "committed", "why"}``.

    A results file must come from a committed command; a spec edited in place or copied outside the checkout would
    give figures no commit can reproduce. ``committed`` is None outside a git checkout (a wheel install).
    """
    import hashlib

    path, repo = Path(path).resolve(), Path(repo).resolve()
    content = path.read_bytes()
    state = {"sha256": hashlib.sha256(content).hexdigest(), "committed": False}
    if git_output(repo, "rev-parse", "--is-inside-work-tree") is None:
        return {**state, "committed": None, "why": "not a git checkout"}
    try:
        relative = path.relative_to(repo).as_posix()
    except ValueError:
        return {**state, "why": f"outside the repository {repo}"}
    head = git_output(repo, "show", f"HEAD:{relative}")
    if head is None:
        return {**state, "why": f"{relative} is not committed at HEAD"}
    if head != content:
        return {**state, "why": f"{relative} differs from the file committed at HEAD"}
    return {**state, "committed": True, "why": f"{relative} as committed at HEAD"}


def device_description(device: str | None = None) -> str:
    """``"cpu (N cores)"`` or ``"cuda: <GPU name>"`` for the device a run used (default: CUDA if present)."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu ({os.cpu_count()} cores)"


def software_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("nnunet-ext", "nnunetv2", "torch", "monai", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def collect(command: str | Sequence[str] | None = None, device: str | None = None,
            repo: str | os.PathLike = REPOSITORY) -> dict:
    """The provenance block: commit and dirty flag, exact command, UTC date, machine, versions, device.

    Args:
        command: the command that produced the figures; default this process's command line.
        device: the torch device the figures were measured on (``cpu``, ``cuda``, ``cuda:1``); default CUDA if
            available.
    """
    if command is None:
        command = [Path(sys.argv[0]).name, *sys.argv[1:]]
    if not isinstance(command, str):
        command = shlex.join(str(c) for c in command)
    return {
        **git_state(repo),
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count()},
        "versions": software_versions(),
        "device": device_description(device),
    }


def markdown_block(record: dict) -> str:
    """The provenance block as markdown list items (for the head of a results file)."""
    commit = record.get("commit") or "unknown (not a git checkout)"
    if record.get("dirty"):
        commit += " (working tree had uncommitted changes)"
    versions = ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items() if v)
    machine = record.get("machine", {})
    return "\n".join([
        f"- commit: `{commit}`",
        f"- command: `{record.get('command')}`",
        f"- date (UTC): {record.get('date')}",
        f"- machine: {machine.get('platform')}, {machine.get('cpu_count')} CPU cores",
        f"- device: {record.get('device')}",
        f"- versions: {versions}",
    ])


def write_result(path: str | os.PathLike, text: str) -> Path:
    """Write a results file atomically; ``*.findings.md`` are hand-written interpretation and never overwritten."""
    from nnunet_ext.atomic import atomic_output_file

    path = Path(path)
    if path.name.endswith(".findings.md"):
        raise ValueError(f"{path} is a findings file: written by people, never by a command")
    with atomic_output_file(path) as tmp:
        tmp.write_text(text)
    return path
