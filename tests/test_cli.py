import pytest

from nnunet_ext.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_is_one_line_error(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown command 'frobnicate'" in err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_module_has_the_interface(name):
    import importlib

    module = importlib.import_module(COMMANDS[name][0])
    assert callable(module.configure_parser) and callable(module.run)
