"""``nnunet-ext`` command line: a thin dispatcher over API modules (nnU-Net's ``*_entrypoints`` pattern).

Each sub-command lives in its own module exposing ``configure_parser(parser)`` and ``run(args) -> int``; only the
module of the requested sub-command is imported, so ``nnunet-ext env`` does not pay for importing torch.

Bad input of any kind (a :class:`~nnunet_ext.errors.UserInputError` or an argparse complaint, from the verb's parser
or a nested one) ends as ONE line ``nnunet-ext VERB: error: MESSAGE`` on stderr and exit code 2. Any other exception
is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

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
    "ffpn": ("nnunet_ext.methods.ffpn.cli",
             "FFPN tools (predict-hc18: HC18 PNG folder -> masks + head circumferences)"),
    "bhsd": ("nnunet_ext.methods.bhsd.cli", "BHSD tools (merge: one-class model predictions -> multi-class maps)"),
    "register": ("nnunet_ext.methods.dca.cli", "TM-DCA pairwise registration by instance optimisation"),
    "mammo-sam": ("nnunet_ext.methods.mammo_sam.cli",
                  "Mammo-SAM tools (export-encoder: trained model -> SAM-format encoder checkpoint)"),
    "hcnet": ("nnunet_ext.methods.hcnet.cli",
              "HCNet tools (cluster: DCE dataset -> TIC heterogeneity-map dataset for HCNetHIPMTrainer)"),
    "postprocess": ("nnunet_ext.methods.contrastive.postprocess",
                    "post-processing (breast-mask: keep predicted lesions inside breast masks)"),
    "benchmark": ("nnunet_ext.benchmark.cli", "run a YAML benchmark spec (resumable jobs, local or SLURM) / report"),
    "convert": ("nnunet_ext.convert", "convert a public dataset into nnU-Net raw datasets (list: nnunet-ext convert)"),
}


class ArgumentUsageError(Exception):
    """An argparse complaint, raised instead of printing usage and exiting, so the dispatcher prints one line."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class OneLineArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose errors raise :class:`ArgumentUsageError`; sub-parsers made by ``add_subparsers`` inherit
    the class, so nested commands (``nnunet-ext dkm synthesize-post``) behave the same."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentUsageError(self.prog, message)


def run_module_cli(prog: str, doc: str, configure_parser, run, argv: list[str] | None = None) -> int:
    """``main`` of a ``python -m`` tool (benchmark commands): its parser and ``run``, bad arguments and bad input as
    one ``PROG: error: ...`` line with exit code 2."""
    parser = OneLineArgumentParser(prog=prog, description=doc.splitlines()[0])
    configure_parser(parser)
    try:
        return run(parser.parse_args(argv))
    except ArgumentUsageError as exc:
        message = str(exc)
    except UserInputError as exc:
        message = str(exc)
    print(f"{prog}: error: {_one_line(message)}", file=sys.stderr)
    return 2


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "invalid input"


def _usage() -> str:
    lines = ["usage: nnunet-ext COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<20} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "run 'nnunet-ext COMMAND -h' for the options of a command"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if not argv:
        print(f"nnunet-ext: error: no command given (choose from {', '.join(COMMANDS)}; see nnunet-ext -h)",
              file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"nnunet-ext: error: unknown command '{name}' (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    parser = OneLineArgumentParser(prog=f"nnunet-ext {name}", description=COMMANDS[name][1])
    module.configure_parser(parser)
    try:
        args = parser.parse_args(rest)
        return int(module.run(args) or 0)
    except ArgumentUsageError as exc:
        print(f"{exc.prog}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except UserInputError as exc:
        print(f"nnunet-ext {name}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
