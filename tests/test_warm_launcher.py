"""The tests' warm launcher (``tests/warm_launcher.py``): a command forked from it behaves as the same command run as
a plain subprocess (exit status, output, argv, directory, environment, atexit, spawned workers); a command whose
environment differs where imports may read it gets a launcher started with that environment; a refused command
runs as a plain subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_ext.env import environment
from tests.conftest import _WARM, WarmLauncher, run_command
from tests.warm_launcher import env_mismatch

SCRIPT = '''#!{python}
import atexit, multiprocessing, os, sys

def square(x):
    return x * x

if __name__ == "__main__":
    atexit.register(lambda: print("atexit ran"))
    print("argv", sys.argv[1:], "cwd", os.getcwd(), "var", os.environ.get("WARM_TEST_VAR"), "stdin", sys.stdin.read())
    print("to stderr", file=sys.stderr)
    if sys.argv[1] == "spawn":
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            print("squares", pool.map(square, [2, 3]))
    if sys.argv[1] == "raise":
        raise ValueError("broken input")
    sys.exit({{"ok": 0, "spawn": 0, "raise": 0, "code": 3, "message": "stopped: bad option"}}[sys.argv[1]])
'''


@pytest.fixture(scope="module")
def command_env():
    # what the tests' commands carry (tiny_schedule_env): the environment plus nnunet-ext's, here with a marker
    return {**os.environ, **environment(Path(os.devnull), keep_existing=False), "nnUNet_ext_epochs": "1"}


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "tool"
    path.write_text(SCRIPT.format(python=sys.executable))
    path.chmod(0o755)
    return path


def _cold(script, args, env, cwd):
    return subprocess.run([sys.executable, str(script), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


def _warm(script, args, env, cwd, tmp_path):
    scratch = tmp_path / f"scratch_{args[0]}"
    scratch.mkdir()
    return _WARM.run([str(script), *args], env, cwd, scratch)


@pytest.mark.parametrize("args", [["ok", "x y"], ["code"], ["message"], ["spawn"]])
def test_warm_command_matches_the_cold_one(script, command_env, tmp_path, args):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {**command_env, "nnUNet_results": str(tmp_path / "results")}  # read at run time: allowed to differ
    warm, cold = _warm(script, args, env, cwd, tmp_path), _cold(script, args, env, cwd)
    assert warm is not None, _WARM.last_refusal
    assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    assert str(cwd) in warm.stdout and "atexit ran" in warm.stdout


def test_uncaught_exception_exits_1_with_its_traceback(script, command_env, tmp_path):
    warm, cold = _warm(script, ["raise"], command_env, tmp_path, tmp_path), _cold(script, ["raise"], command_env,
                                                                                    tmp_path)
    assert warm.returncode == cold.returncode == 1
    assert warm.stderr.splitlines()[-1] == cold.stderr.splitlines()[-1] == "ValueError: broken input"
    assert warm.stderr.startswith("to stderr\nTraceback (most recent call last):")


def test_variables_set_by_the_preloaded_imports_reach_the_command(script, command_env, tmp_path):
    # MONAI sets CUBLAS_WORKSPACE_CONFIG at import when unset; a cold command gets it the same way
    probe = tmp_path / "probe"
    probe.write_text(f"#!{sys.executable}\nimport os\nprint(os.environ.get('CUBLAS_WORKSPACE_CONFIG'))\n")
    env = {k: v for k, v in command_env.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    (tmp_path / "scratch").mkdir()
    assert _WARM.run([str(probe)], env, tmp_path, tmp_path / "scratch").stdout.strip() == ":4096:8"


@pytest.mark.parametrize("changes, expected", [
    ({"nnUNet_raw": "/elsewhere", "nnUNet_ext_iters": "2", "PYTEST_CURRENT_TEST": "t"}, None),
    ({"nnUNet_def_n_proc": "7"}, "nnUNet_def_n_proc"),   # nnunetv2.configuration reads it at import
    ({"OMP_NUM_THREADS": "3"}, "OMP_NUM_THREADS"),
])
def test_env_mismatch_names_only_variables_read_at_import(changes, expected):
    base = {"PATH": "/bin", "nnUNet_def_n_proc": "2"}
    assert env_mismatch({**base, **changes}, base) == expected


def test_other_import_time_variables_get_a_launcher_of_their_own(script, command_env, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _WARM.run([str(script), "ok"], command_env, tmp_path, tmp_path / "a")
    starts = _WARM.starts
    env = {**command_env, "WARM_TEST_VAR": "import-time?"}  # unknown to the launcher: may be read at import
    proc = _WARM.run([str(script), "ok"], env, tmp_path, tmp_path / "b")
    assert proc is not None and "var import-time?" in proc.stdout
    assert _WARM.starts == starts + 1


def test_a_refused_command_runs_cold(script, command_env, tmp_path, monkeypatch):
    monkeypatch.setattr(WarmLauncher, "runs_warm", staticmethod(lambda cmd: True))
    monkeypatch.setattr(_WARM, "run", lambda *args: None)  # what a refusal (a thread in the launcher) returns
    proc = run_command([script, "code"], command_env, tmp_path, ok=False)
    assert proc.returncode == 3 and not proc.warm and f"cwd {tmp_path}" in proc.stdout


def test_only_console_scripts_of_this_environment_run_warm(script):
    bin_dir = Path(sys.executable).parent
    assert WarmLauncher.runs_warm([bin_dir / "nnUNetv2_train", "-h"])
    assert not WarmLauncher.runs_warm([script])                # a script elsewhere
    assert not WarmLauncher.runs_warm([sys.executable, "-c", "pass"])  # the interpreter itself
