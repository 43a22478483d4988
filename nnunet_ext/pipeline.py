"""Run nnU-Net's real command-line tools as subprocesses (what a user types), with a progress bar over epochs.

Used by the demo, the benchmarks and the integration tests, so all of them exercise ``nnUNetv2_train`` /
``nnUNetv2_predict`` exactly as a researcher would.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

from nnunet_ext.errors import UserInputError

_EPOCH = re.compile(r"Epoch (\d+)\s*$")


def nnunet_command(name: str) -> str:
    """Absolute path of an nnU-Net console script next to this interpreter (works without an activated venv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def run_logged(cmd: Sequence[str], env: Mapping[str, str], log_file: str | os.PathLike,
               total_epochs: int | None = None, desc: str | None = None) -> None:
    """Run ``cmd`` with output to ``log_file``; show a tqdm bar over nnU-Net's ``Epoch N`` lines if ``total_epochs``.

    A non-zero exit raises ``RuntimeError`` naming the command and the log's last lines.
    """
    from tqdm import tqdm

    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=total_epochs, desc=desc, unit="epoch", leave=True,
               disable=total_epochs is None or not sys.stderr.isatty() and os.environ.get("CI") == "true")
    with open(log_file, "w") as log:
        proc = subprocess.Popen(list(cmd), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            m = _EPOCH.search(line)
            if m and total_epochs:
                bar.n = int(m.group(1)) + 1
                bar.refresh()
        code = proc.wait()
    bar.close()
    if code != 0:
        tail = "".join(Path(log_file).read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"command failed (exit {code}): {' '.join(cmd)}\nlog: {log_file}\n{tail}")


def default_device() -> str:
    """``cuda`` when a CUDA device is visible, else ``cpu`` (the value pipelines pass to nnU-Net's ``-device``)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> str:
    """Validate a ``-device`` value the way ``nnUNetv2_train`` accepts it (cpu, cuda, mps), with a one-line error
    for an unknown name or a CUDA/MPS device this machine does not have."""
    import torch

    if device not in ("cpu", "cuda", "mps"):
        raise UserInputError(f"-device must be cpu, cuda or mps, got '{device}'")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("-device cuda: no CUDA device is available on this machine (use -device cpu)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserInputError("-device mps: no MPS device is available on this machine (use -device cpu)")
    return device


def train(dataset_id: int, configuration: str, fold: int | str, trainer: str, plans: str,
          env: Mapping[str, str], log_file: str | os.PathLike, total_epochs: int | None = None,
          extra: Sequence[str] = (), device: str = "cpu") -> None:
    cmd = [nnunet_command("nnUNetv2_train"), str(dataset_id), configuration, str(fold), "-tr", trainer, "-p", plans,
           "-device", device, *extra]
    run_logged(cmd, env, log_file, total_epochs, desc=f"train {trainer} fold {fold}")


def predict(input_folder: str | os.PathLike, output_folder: str | os.PathLike, dataset_id: int | str,
            configuration: str, folds: Sequence[int | str], trainer: str, plans: str,
            env: Mapping[str, str], log_file: str | os.PathLike, extra: Sequence[str] = (),
            device: str = "cpu") -> None:
    if not Path(input_folder).is_dir():
        raise UserInputError(f"prediction input folder does not exist: {input_folder}")
    cmd = [nnunet_command("nnUNetv2_predict"), "-i", str(input_folder), "-o", str(output_folder),
           "-d", str(dataset_id), "-c", configuration, "-f", *[str(f) for f in folds], "-tr", trainer, "-p", plans,
           "-device", device, "--disable_tta", *prediction_workers(device), *extra]
    run_logged(cmd, env, log_file)


def prediction_workers(device: str) -> list[str]:
    """``nnUNetv2_predict``'s worker options: on CPU ``-npp 0 -nps 0``, nnU-Net's sequential mode. Each spawned
    preprocessing or export worker re-imports torch and nnU-Net (~10 s on a 2-core machine), more than predicting a
    small test set costs, and on CPU there is no accelerator for the workers to keep busy. On CUDA/MPS one worker
    each overlaps preprocessing and export with inference. Both modes run the same predictor and export code."""
    return ["-npp", "0", "-nps", "0"] if device == "cpu" else ["-npp", "1", "-nps", "1"]
