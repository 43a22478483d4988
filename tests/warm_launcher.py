"""Run console scripts of this environment (``nnUNetv2_train``, ``nnUNetv2_predict``, ``nnunet-ext`` ...) in processes
forked from a launcher that has already imported torch, nnU-Net and nnunet-ext.

Why: on the 2-core test machine every nnU-Net command spends ~9-11 s importing (torch 3 s, torch._dynamo 2 s,
seaborn 1 s, nnU-Net's trainer stack) before it does anything, and the suite runs ~100 of them.

What stays the same as typing the command: the child is a new process, with the command's own argv, environment
(``os.environ`` replaced), working directory, stdin (/dev/null) and stdout/stderr files; it runs the console script
file itself as ``__main__`` (``runpy.run_path``), so argparse, ``sys.exit``, uncaught exceptions (traceback, exit 1),
atexit handlers and spawned multiprocessing workers behave as under ``python <script>``.

What differs, and how it is kept safe: modules are imported once, under the launcher's environment. The client
(``tests/conftest.WarmLauncher``) sends a launcher only commands whose environment equals the one it started it
with, except in the variables nnU-Net and nnunet-ext read when they run rather than at import (:func:`env_mismatch`,
:data:`READ_AT_RUN_TIME`); for any other it starts a launcher with that command's environment. Variables the
imports themselves set (MONAI sets ``CUBLAS_WORKSPACE_CONFIG``) reach the child where the command lacks them, as a
cold start would set them.
The launcher only imports, it never computes, so no OpenMP pool exists when it forks (forking after parallel work can
deadlock the child); the idle BLAS threads NumPy/SciPy start at import re-initialise in the child (OpenBLAS's fork
handlers), as in every ``multiprocessing`` fork. It refuses to fork while a Python thread runs; a refused command
runs as a plain subprocess.

Protocol (one command at a time): the parent writes one JSON line ``{"argv", "env", "cwd", "stdout", "stderr"}`` to
the launcher's stdin; the launcher answers one JSON line ``{"returncode": int}`` on its stdout (or
``{"refused": reason}``). ``"ready"`` is written once after the imports.
"""
from __future__ import annotations

import json
import os
import re
import runpy
import sys
import threading

# variables read when a command runs (nnunetv2.paths resolves its folders lazily since 2.8; nnU-Net reads the
# others inside functions; nnunet-ext reads its nnUNet_ext_* settings in trainer/CLI code, never at import), and
# pytest's per-test PYTEST_CURRENT_TEST, which nothing reads. nnUNet_def_n_proc is NOT among them:
# nnunetv2.configuration reads it at import.
READ_AT_RUN_TIME = re.compile(r"^(nnUNet_raw|nnUNet_preprocessed|nnUNet_results|nnUNet_extTrainer|nnUNet_compile"
                              r"|nnUNet_n_proc_DA|nnUNet_ext_\w+|PYTEST_CURRENT_TEST)$")
PRELOAD = ("torch", "torch._dynamo", "nnunetv2.run.run_training", "nnunetv2.inference.predict_from_raw_data",
           "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints", "nnunetv2.ensembling.ensemble",
           "nnunet_ext.cli")
PRELOAD_PACKAGES = ("nnunet_ext.trainers", "nnunet_ext.planners")


def env_mismatch(command_env: dict, launcher_env: dict) -> str | None:
    """The first variable that differs between the two environments and may be read at import time, or None."""
    for key in sorted(set(command_env) | set(launcher_env)):
        if command_env.get(key) != launcher_env.get(key) and not READ_AT_RUN_TIME.match(key):
            return key
    return None


def _preload() -> None:
    import importlib
    import pkgutil

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the command imports it again and reports its own error
            pass
    for package in PRELOAD_PACKAGES:
        try:
            root = importlib.import_module(package)
            for info in pkgutil.iter_modules(root.__path__, f"{package}."):
                importlib.import_module(info.name)
        except Exception:  # noqa: BLE001
            pass


def _become(request: dict, set_by_imports: dict) -> None:
    """In the forked child: take on the command's environment, directory, argv and standard streams.

    Variables the preloaded modules set at import (MONAI sets ``CUBLAS_WORKSPACE_CONFIG`` if unset) are added where
    the command's environment lacks them, as those imports would have done in a cold start."""
    os.environ.clear()
    os.environ.update({**set_by_imports, **request["env"]})
    os.chdir(request["cwd"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT)):
        target = os.open(path, flags, 0o644)
        os.dup2(target, fd)
        os.close(target)
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as ``python <script>`` sets it


def _exit_code_of(stop: SystemExit) -> int:
    """The exit status the interpreter gives ``sys.exit(code)``: None 0, an int itself, anything else printed, 1."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code & 0xFF
    print(stop.code, file=sys.stderr)
    return 1


def _finish(exit_code: int) -> None:
    """The interpreter's shutdown up to its module teardown: join non-daemon threads, run atexit handlers (which
    also stop multiprocessing children and run weakref finalizers), collect garbage, flush the standard streams.
    Tearing down the preloaded module graph (torch) would cost seconds per command and changes nothing on disk."""
    import atexit
    import gc

    threading._shutdown()
    atexit._run_exitfuncs()
    gc.collect()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(exit_code)


def _serve(control_in, control_out, environment_before_imports: dict) -> dict:
    """Fork one child per request and report its exit code; returns (in the child only) the child's request."""
    set_by_imports = {k: v for k, v in os.environ.items() if environment_before_imports.get(k) != v}
    control_out.write("ready\n")
    control_out.flush()
    for line in control_in:
        request = json.loads(line)
        threads = threading.active_count()
        if threads != 1:
            control_out.write(json.dumps({"refused": f"{threads} threads running"}) + "\n")
            control_out.flush()
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            control_in.close()
            control_out.close()
            _become(request, set_by_imports)
            return request
        _, status = os.waitpid(pid, 0)
        control_out.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        control_out.flush()
    sys.exit(0)


if __name__ == "__main__":
    # the control channel gets its own descriptors, so nothing a command prints can corrupt it
    _control_in = os.fdopen(os.dup(0), "r")
    _control_out = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    _environment_before_imports = dict(os.environ)
    _preload()
    _request = _serve(_control_in, _control_out, _environment_before_imports)
    _exit_code = 0
    try:
        runpy.run_path(_request["argv"][0], run_name="__main__")
    except SystemExit as stop:
        _exit_code = _exit_code_of(stop)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        import traceback
        traceback.print_exc()
        _exit_code = 1
    _finish(_exit_code)
