import contextlib
import os
import subprocess
import sys

import pytest

from nnunet_ext import env as env_module
from nnunet_ext.env import FAST_CPU_SETTINGS, environ_set, environment, trainers_folder


@pytest.mark.parametrize("fails", [False, True], ids=["returns", "raises"])
def test_environ_set_restores_every_named_variable(monkeypatch, fails):
    monkeypatch.setenv("NNX_KEPT", "before")
    monkeypatch.setenv("NNX_UNSET", "before")
    monkeypatch.delenv("NNX_NEW", raising=False)
    untouched = {k: v for k, v in os.environ.items() if not k.startswith("NNX_")}
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
        with environ_set({"NNX_KEPT": "inside", "NNX_UNSET": None, "NNX_NEW": "inside"}):
            assert (os.environ["NNX_KEPT"], os.environ.get("NNX_UNSET"), os.environ["NNX_NEW"]) == (
                "inside", None, "inside")
            if fails:
                raise RuntimeError("block failed")
    assert (os.environ["NNX_KEPT"], os.environ["NNX_UNSET"], os.environ.get("NNX_NEW")) == ("before", "before", None)
    assert {k: v for k, v in os.environ.items() if not k.startswith("NNX_")} == untouched


def test_environment_points_at_trainers_and_workspace(tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    env = environment(tmp_path, keep_existing=False, cpu=True)
    assert env["nnUNet_raw"] == str(tmp_path.resolve() / "nnUNet_raw")
    assert env["nnUNet_results"] == str(tmp_path.resolve() / "nnUNet_results")
    assert env["nnUNet_extTrainer"].split(os.pathsep)[0] == str(trainers_folder())
    for k, v in FAST_CPU_SETTINGS.items():
        assert env[k] == v


@pytest.mark.parametrize("cuda,cpu_flag,throttled", [
    (False, None, True), (True, None, False), (True, True, True), (False, False, False)])
def test_cpu_settings_only_without_cuda_or_when_asked(tmp_path, monkeypatch, cuda, cpu_flag, throttled):
    monkeypatch.setattr(env_module, "cuda_available", lambda: cuda)
    for var in FAST_CPU_SETTINGS:
        monkeypatch.delenv(var, raising=False)
    env = environment(tmp_path, keep_existing=False, cpu=cpu_flag)
    assert all((var in env) == throttled for var in FAST_CPU_SETTINGS)
    assert FAST_CPU_SETTINGS["nnUNet_def_n_proc"] == str(min(os.cpu_count(), 8))


def test_existing_paths_win_unless_workspace_given(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", "/data/raw")
    monkeypatch.setenv("nnUNet_extTrainer", "/other/trainers")
    env = environment(None, keep_existing=True)
    assert env["nnUNet_raw"] == "/data/raw"
    assert env["nnUNet_extTrainer"].split(os.pathsep) == [str(trainers_folder()), "/other/trainers"]
    assert environment(tmp_path, keep_existing=False)["nnUNet_raw"].startswith(str(tmp_path.resolve()))


def test_env_command_prints_evaluable_exports(tmp_path):
    out = subprocess.run([sys.executable, "-m", "nnunet_ext.cli", "env", "--workspace", str(tmp_path), "--cpu"],
                         capture_output=True, text=True, check=True).stdout
    script = out + "\necho \"$nnUNet_results|$nnUNet_extTrainer|$nnUNet_compile\"\n"
    echoed = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    results, ext, compile_ = echoed.split("|")
    assert results == str(tmp_path.resolve() / "nnUNet_results") and os.path.isdir(results)
    assert ext == str(trainers_folder()) and compile_ == "0"


def test_trainer_classes_are_found_by_nnunet_and_picklable(nnunet_env):
    import pickle

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    cls = recursive_find_trainer_class_by_name("TinyTrainer")
    assert cls.__module__ == "nnunet_ext.training.demo"
    assert pickle.loads(pickle.dumps(cls)) is cls
