"""``nnunet-ext`` command line: a thin dispatcher over API modules (nnU-Net's ``*_entrypoints`` pattern).

Each sub-command lives in its own module exposing ``configure_parser(parser)`` and ``run(args) -> int``; only the
module of the requested sub-command is imported, so ``nnunet-ext env`` does not pay for importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from nnunet_ext.errors import UserInputError

# name -> (module, one-line help)
COMMANDS = {
    "env": ("nnunet_ext.env", "print shell export lines so plain nnUNetv2_* commands find nnunet-ext"),
    "synth": ("nnunet_ext.synth.cli", "write a deterministic synthetic nnU-Net raw dataset (phantom)"),
    "plan_and_preprocess": ("nnunet_ext.planning.cli",
                            "nnUNetv2_plan_and_preprocess that also accepts planners from nnunet-ext's planners/"),
    "evaluate": ("nnunet_ext.metrics.evaluate", "Dice/IoU/PPV/SEN/HD95/ASD of a prediction folder vs references"),
    "demo": ("nnunet_ext.demo", "end-to-end CPU demo: synth -> plan -> train -> predict -> evaluate -> report"),
    "dkm": ("nnunet_ext.methods.dkm.cli", "DKM tools (synthesize-post: post-contrast synthesis from pre-contrast)"),
}


def _usage() -> str:
    lines = ["usage: nnunet-ext COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<20} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "run 'nnunet-ext COMMAND -h' for the options of a command"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"nnunet-ext: error: unknown command '{name}' (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"nnunet-ext {name}", description=COMMANDS[name][1])
    module.configure_parser(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except UserInputError as exc:
        print(f"nnunet-ext {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
