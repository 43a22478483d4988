import argparse
import importlib

import pytest

from nnunet_ext import cli
from nnunet_ext.cli import COMMANDS, main
from nnunet_ext.errors import UserInputError


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), captured.err
    return lines[0]


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_no_command_is_one_line_error(capsys):
    assert main([]) == 2
    assert _one_line(capsys).startswith("nnunet-ext: error: no command given (choose from env, synth")


def test_unknown_command_is_one_line_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in _one_line(capsys)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_module_has_the_interface(name):
    module = importlib.import_module(COMMANDS[name][0])
    assert callable(module.configure_parser) and callable(module.run)


@pytest.mark.parametrize("argv, line", [
    (["synth", "breast_dce", "-d", "x"], "nnunet-ext synth: error: argument -d: invalid int value: 'x'"),
    (["evaluate", "-pred", "p"], "nnunet-ext evaluate: error: the following arguments are required: -ref"),
    (["env", "--frobnicate"], "nnunet-ext env: error: unrecognized arguments: --frobnicate"),
    (["dkm", "synthesize-post", "-i", "a"],
     "nnunet-ext dkm synthesize-post: error: the following arguments are required: -o, -d"),
    (["dkm", "teleport"], "nnunet-ext dkm: error: argument action: invalid choice: 'teleport' "
                          "(choose from 'synthesize-post')"),
    (["convert", "dce_nifti_folder", "-i", "a"],
     "nnunet-ext convert dce_nifti_folder: error: the following arguments are required: -d, --pre_only_id"),
])
def test_argparse_errors_are_one_line_with_the_verb(capsys, argv, line):
    assert main(argv) == 2
    assert _one_line(capsys) == line
    assert capsys.readouterr().out == ""


def test_help_of_a_verb_still_exits_zero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "-h"])
    assert info.value.code == 0 and "-ref" in capsys.readouterr().out


def _fake_command(monkeypatch, run):
    fake = argparse.Namespace(configure_parser=lambda parser: None, run=run)
    monkeypatch.setitem(COMMANDS, "fake", ("fake_module", "test"))
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: fake)


def test_user_input_errors_are_joined_onto_one_line(monkeypatch, capsys):
    def run(args):
        raise UserInputError("first part\nsecond part")

    _fake_command(monkeypatch, run)
    assert main(["fake"]) == 2
    assert _one_line(capsys) == "nnunet-ext fake: error: first part second part"


def test_unexpected_exceptions_keep_their_traceback(monkeypatch):
    def run(args):
        raise ZeroDivisionError("a bug, not bad input")

    _fake_command(monkeypatch, run)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        main(["fake"])
