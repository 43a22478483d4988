"""``nnunet-ext benchmark``: bad input is one line on stderr with exit status 2; run/report through the dispatcher."""
from __future__ import annotations

import re

import pytest

from nnunet_ext.cli import main

from .conftest import command_spec, write_spec


@pytest.fixture
def specs(tmp_path):
    return {"good": write_spec(tmp_path, command_spec(), "good.yaml"),
            "unknown_key": write_spec(tmp_path, command_spec(colour="red"), "unknown_key.yaml"),
            "no_trainer": write_spec(tmp_path, {"name": "x", "datasets": [{"synth": "breast_dce", "id": 5, "cases": 2}],
                                                "rows": [{"label": "a", "dataset": 5}]}, "no_trainer.yaml"),
            "bad_yaml": tmp_path / "bad.yaml"}


@pytest.mark.parametrize("argv, pattern", [
    (["benchmark"], r"^nnunet-ext benchmark: error: the following arguments are required: ACTION$"),
    (["benchmark", "fly"], r"^nnunet-ext benchmark: error: argument ACTION: invalid choice: 'fly'"),
    (["benchmark", "run"], r"^nnunet-ext benchmark run: error: the following arguments are required: SPEC$"),
    (["benchmark", "run", "{tmp}/missing.yaml"], r"^nnunet-ext benchmark: error: spec file not found: .*missing\.yaml$"),
    (["benchmark", "run", "{bad_yaml}"], r"^nnunet-ext benchmark: error: .*bad\.yaml: line \d+: not valid YAML"),
    (["benchmark", "run", "{unknown_key}"], r"^nnunet-ext benchmark: error: .*unknown_key\.yaml: colour: unknown key"),
    (["benchmark", "run", "{no_trainer}"], r"^nnunet-ext benchmark: error: .*no_trainer\.yaml: rows\[0\]\.trainer is "
                                           r"missing$"),
    (["benchmark", "run", "{good}", "--executor", "cloud"], r"argument --executor: invalid choice: 'cloud'"),
    (["benchmark", "run", "{good}", "--jobs", "0"], r"^nnunet-ext benchmark: error: --jobs must be >= 1, got 0$"),
    (["benchmark", "run", "{good}", "--jobs", "2", "--executor", "submitit-local"],
     r"--jobs applies to --executor local only"),
    (["benchmark", "run", "{good}", "-device", "tpu"], r"-device must be cpu, cuda or mps, got 'tpu'"),
    (["benchmark", "run", "{good}", "--cpus", "0"], r"--cpus must be positive, got 0"),
    (["benchmark", "report", "{tmp}/nowhere"], r"^nnunet-ext benchmark: error: benchmark workdir not found: "),
    (["benchmark", "report", "{tmp}"], r"is not a benchmark workdir \(no study\.json"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, specs, capsys, argv, pattern):
    specs["bad_yaml"].write_text("name: [oops\n")
    values = {"tmp": str(tmp_path), **{k: str(v) for k, v in specs.items()}}
    argv = [a.format(**values) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err
    assert not (tmp_path / "wd").exists()


def test_run_then_report_alone(tmp_path, capsys):
    spec = write_spec(tmp_path, command_spec(summary={"one": {"row": "one", "metric": "value"}}))
    assert main(["benchmark", "run", str(spec), "--workdir", str(tmp_path / "wd"), "--results",
                 str(tmp_path / "res"), "-device", "cpu", "--no_progress"]) == 0
    first = (tmp_path / "res" / "cmds.json").read_text()
    assert '"one": 1.0' in first
    (tmp_path / "res" / "cmds.json").unlink()
    assert main(["benchmark", "report", str(tmp_path / "wd")]) == 0
    assert "wrote the report of cmds (2/2 jobs finished)" in capsys.readouterr().out
    assert '"one": 1.0' in (tmp_path / "res" / "cmds.json").read_text()
    assert main(["benchmark", "report", str(tmp_path / "wd"), "--results", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "cmds.md").is_file()


def test_failed_job_gives_exit_1_and_a_report(tmp_path):
    data = command_spec()
    data["rows"][1]["command"] = "exit 5"
    spec = write_spec(tmp_path, data)
    assert main(["benchmark", "run", str(spec), "--workdir", str(tmp_path / "wd"), "--results",
                 str(tmp_path / "res"), "-device", "cpu", "--no_progress"]) == 1
    md = (tmp_path / "res" / "cmds.md").read_text()
    assert "1 of 2 jobs finished" in md and "command failed (exit 5)" in md
