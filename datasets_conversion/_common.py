"""What every converter shares, whatever the modality: dataset-name check, nnU-Net raw root, the CLI wrapper."""
from __future__ import annotations

import argparse
import re
import sys
from typing import Callable, Sequence

from nnunet_ext.errors import UserInputError
from nnunet_ext.synth.cli import raw_root_from  # noqa: F401  (re-exported for the converters)

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_dataset_name(name: str) -> str:
    if not _NAME_PATTERN.match(name or ""):
        raise UserInputError(f"dataset name '{name}' must start with a letter or digit and contain only letters, "
                             f"digits, '_', '-' or '.'")
    return name


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
