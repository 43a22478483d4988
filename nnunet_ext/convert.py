"""``nnunet-ext convert NAME ...``: run one of the dataset converters of ``datasets_conversion/``.

Every public module of :mod:`nnunet_ext.datasets_conversion` (the repository's ``datasets_conversion/`` folder) with
``configure_parser(parser)`` and ``run(args)`` is a converter; its name is the module name. ``nnunet-ext convert``
(or ``-h``) lists them with the first line of each module's docstring, read from the source file without importing
the module, so listing does not import pydicom or SimpleITK. ``nnunet-ext convert NAME ARGS`` imports that converter
only and parses ARGS with its own options (``nnunet-ext convert NAME -h``).
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

from nnunet_ext.errors import UserInputError

PACKAGE = "nnunet_ext.datasets_conversion"


def available_converters() -> dict[str, str]:
    """``{name: one-line description}`` of the converters, sorted by name (modules starting with ``_`` are
    helpers)."""
    package = importlib.import_module(PACKAGE)
    converters = {}
    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module.name.startswith("_") or module.ispkg:
            continue
        spec = importlib.util.find_spec(f"{PACKAGE}.{module.name}")
        source = Path(spec.origin).read_text() if spec and spec.origin else ""
        docstring = ast.get_docstring(ast.parse(source)) or ""
        converters[module.name] = docstring.strip().splitlines()[0] if docstring.strip() else ""
    return converters


def _listing() -> str:
    converters = available_converters()
    width = max(map(len, converters), default=0)
    lines = ["converters (nnunet-ext convert NAME -h for the options of one):"]
    lines += [f"  {name:<{width}}  {description}" for name, description in converters.items()]
    return "\n".join(lines)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _listing()
    p.add_argument("name", nargs="?", default=None, help="converter to run (listed below)")
    p.add_argument("converter_args", nargs=argparse.REMAINDER, metavar="...",
                   help="the converter's own options, e.g. -i SOURCE -d ID --pre_only_id ID2")
    # the converter's parser reports errors the way the dispatcher's parser does (one line, exit 2)
    p.set_defaults(parser_class=type(p))


def converter_parser(name: str, parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser
                     ) -> tuple[object, argparse.ArgumentParser]:
    """Import converter ``name`` and build its parser (prog ``nnunet-ext convert NAME``)."""
    converters = available_converters()
    if name not in converters:
        raise UserInputError(f"unknown converter '{name}' (choose from {', '.join(converters) or 'none'})")
    module = importlib.import_module(f"{PACKAGE}.{name}")
    parser = parser_class(prog=f"nnunet-ext convert {name}", description=converters[name])
    module.configure_parser(parser)
    return module, parser


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        print(_listing())
        return 0
    module, parser = converter_parser(args.name, args.parser_class)
    return int(module.run(parser.parse_args(args.converter_args)) or 0)
