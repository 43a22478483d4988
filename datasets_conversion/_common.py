"""What every converter shares, whatever the modality: dataset-name check, nnU-Net raw root, the dataset folder of
a run (id clash rule), the CLI wrapper."""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

from nnunet_ext.errors import UserInputError
from nnunet_ext.synth.cli import raw_root_from  # noqa: F401  (re-exported for the converters)

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_dataset_name(name: str) -> str:
    if not _NAME_PATTERN.match(name or ""):
        raise UserInputError(f"dataset name '{name}' must start with a letter or digit and contain only letters, "
                             f"digits, '_', '-' or '.'")
    return name


def raw_dataset_target(raw: str | os.PathLike | None, dataset_id: int, name: str,
                       overwrite: bool) -> tuple[Path, list[Path]]:
    """``(folder, retire)``: the dataset folder to write under the nnU-Net raw root, and the folder of another name
    that holds the same dataset id (replaced only with ``overwrite``; ``atomic_output_dir`` then also checks that
    nnunet-ext wrote it)."""
    from nnunet_ext.synth.base import dataset_folder_name, existing_dataset_with_id

    name = check_dataset_name(name)
    raw_root = Path(raw_root_from(raw))
    folder = raw_root / dataset_folder_name(dataset_id, name)
    clash = existing_dataset_with_id(raw_root, dataset_id)
    if clash is not None and not overwrite:
        raise UserInputError(f"dataset id {dataset_id} already exists at {clash} (pass --overwrite to replace it)")
    return folder, [clash] if clash is not None and clash != folder else []


def cli_main(prog: str, description: str, configure_parser: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run, and turn a UserInputError into one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    configure_parser(parser)
    args = parser.parse_args(argv)
    try:
        return int(run(args) or 0)
    except UserInputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
