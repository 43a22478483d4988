"""``nnunet-ext env``: shell ``export`` lines that make plain ``nnUNetv2_*`` commands find nnunet-ext.

Usage: ``eval "$(nnunet-ext env)"``. Paths default to a workspace folder (``--workspace``, else
``$NNUNET_EXT_WORKSPACE``, else ``./workspace``); already-set ``nnUNet_raw``/``_preprocessed``/``_results`` win unless
``--workspace`` is given explicitly.

CPU settings are exported only when no CUDA device is present (or with ``--cpu``); on a GPU machine nnU-Net's own
defaults stay in force. They are the measured fast ones on a small CPU machine (shared/NNUNET_PLUGIN_NOTES.md):
- ``nnUNet_n_proc_DA=1``: one augmentation worker; 0 would crash planning (``torch.set_num_threads(0)``). nnunet-ext
  trainers switch to in-process augmentation themselves when ``nnUNet_ext_deterministic=1``.
- ``nnUNet_def_n_proc``: the number of cores, at most nnU-Net's default 8; sizes export/metric pools (nnU-Net's 8 on
  a 2-core machine made a fold 2x slower).
- ``nnUNet_compile=0``: torch.compile on CPU made the predictor 2x slower.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
from pathlib import Path
from typing import Iterator, Mapping, Optional

from nnunet_ext.errors import UserInputError

FAST_CPU_SETTINGS = {"nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": str(max(1, min(os.cpu_count() or 1, 8))),
                     "nnUNet_compile": "0"}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _plugin_folder(package: str) -> Path:
    """Folder of a plugin package (``nnunet_ext.trainers`` / ``.planners``): the repository's top-level folder in an
    editable install, ``site-packages/nnunet_ext/<name>`` in a wheel install."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]).resolve()
    # a source checkout on PYTHONPATH without installation: the folder sits at the repository root
    in_checkout = Path(__file__).resolve().parents[1] / package.rsplit(".", 1)[-1]
    if in_checkout.is_dir():
        return in_checkout
    raise RuntimeError(f"{package} is not installed: reinstall nnunet-ext (pip install .)")


def trainers_folder() -> Path:
    """The folder ``nnUNet_extTrainer`` points at: thin modules that import our trainer classes."""
    return _plugin_folder("nnunet_ext.trainers")


def planners_folder() -> Path:
    return _plugin_folder("nnunet_ext.planners")


def environment(workspace: str | os.PathLike | None = None, keep_existing: bool = True,
                cpu: bool | None = None) -> dict[str, str]:
    """The variables ``nnunet-ext env`` exports, as a dict (also used by tests and the demo).

    Args:
        cpu: add :data:`FAST_CPU_SETTINGS`; default: when no CUDA device is available.
    """
    ws = Path(workspace or os.environ.get("NNUNET_EXT_WORKSPACE") or "workspace").resolve()
    env = {}
    for var, sub in (("nnUNet_raw", "nnUNet_raw"), ("nnUNet_preprocessed", "nnUNet_preprocessed"),
                     ("nnUNet_results", "nnUNet_results")):
        env[var] = os.environ[var] if keep_existing and os.environ.get(var) else str(ws / sub)
    existing = os.environ.get("nnUNet_extTrainer", "") if keep_existing else ""
    ours = str(trainers_folder())
    parts = [p for p in existing.split(os.pathsep) if p and p != ours]
    env["nnUNet_extTrainer"] = os.pathsep.join([ours] + parts)
    if cpu if cpu is not None else not cuda_available():
        for var, value in FAST_CPU_SETTINGS.items():
            env[var] = os.environ[var] if keep_existing and os.environ.get(var) else value
    return env


@contextlib.contextmanager
def environ_set(values: Mapping[str, Optional[str]]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block (``None`` unsets a variable); afterwards every named variable is
    as it was, also when the block raises. In-process nnU-Net and ITK calls read their settings from ``os.environ``,
    and a caller's process (a test, a notebook) must not keep ours."""
    previous = {name: os.environ.get(name) for name in values}
    try:
        _assign(values)
        yield
    finally:
        _assign(previous)


def _assign(values: Mapping[str, Optional[str]]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", default=None,
                   help="folder holding nnUNet_raw/, nnUNet_preprocessed/, nnUNet_results/ (overrides those "
                        "variables if set); default $NNUNET_EXT_WORKSPACE or ./workspace")
    p.add_argument("--cpu", action="store_true",
                   help="export the CPU settings even if a CUDA device is present (default: only without one)")


def run(args: argparse.Namespace) -> int:
    env = environment(args.workspace, keep_existing=args.workspace is None, cpu=True if args.cpu else None)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        try:
            Path(env[var]).mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # e.g. --workspace names a file
            raise UserInputError(f"cannot create {var} folder {env[var]}: {exc.strerror}") from None
    for var, value in env.items():
        print(f"export {var}={shlex.quote(value)}")
    return 0
