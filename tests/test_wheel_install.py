"""A non-editable install works: build the wheel, install it into a fresh environment that reuses the project's
installed dependencies (no network), and use it from outside the repository.

The fresh environment sees the project venv's site-packages through a ``.pth`` line (so torch, nnunetv2, ... are
shared) but not the editable install's import hook (``.pth`` files in a directory added that way are not executed),
so ``nnunet_ext`` can only come from the wheel; the test asserts that.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env=None, timeout=600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # build from a copy of the tracked tree, so the build leaves nothing in the repository (build/, egg-info)
    src = out / "src"
    _run(["git", "clone", "-q", "--no-local", REPO, src], cwd=out)
    for name in _run(["git", "ls-files", "-m", "-o", "--exclude-standard"], cwd=REPO).split():
        target = src / name
        if (REPO / name).is_file():  # uncommitted work is part of what is tested
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((REPO / name).read_bytes())
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, src],
         cwd=out)
    (built,) = out.glob("nnunet_ext-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    python = venv / "bin" / "python"
    fresh_site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           cwd=root).strip())
    shared = sysconfig.get_paths()["purelib"]  # the project venv's dependencies
    (fresh_site / "project_dependencies.pth").write_text(shared + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], cwd=root)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("nnUNet_", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return {"python": python, "bin": venv / "bin", "cwd": elsewhere, "env": env, "site": fresh_site}


def test_wheel_carries_plugin_folders_inside_the_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("nnunet_ext/trainers/demo_trainers.py", "nnunet_ext/trainers/dkm_trainers.py",
                     "nnunet_ext/planners/cpu_planners.py", "nnunet_ext/datasets_conversion/dce_nifti_folder.py",
                     "nnunet_ext/methods/dkm/trainers.py"):
        assert required in names, required
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"nnunet_ext"}, f"generic top-level packages in the wheel: {top_level - {'nnunet_ext'}}"


def test_installed_package_comes_from_the_wheel(fresh_env):
    where = _run([fresh_env["python"], "-c", "import nnunet_ext; print(nnunet_ext.__file__)"], fresh_env["cwd"],
                 fresh_env["env"]).strip()
    assert Path(where).is_relative_to(fresh_env["site"]) and not Path(where).is_relative_to(REPO)


def test_env_and_trainer_and_planner_lookup_from_outside_the_repository(fresh_env):
    exports = _run([fresh_env["bin"] / "nnunet-ext", "env", "--workspace", fresh_env["cwd"] / "ws"],
                   fresh_env["cwd"], fresh_env["env"])
    variables = dict(line[len("export "):].split("=", 1) for line in exports.splitlines())
    trainers = Path(variables["nnUNet_extTrainer"])
    assert trainers.is_relative_to(fresh_env["site"]) and (trainers / "demo_trainers.py").is_file()
    lookup = (
        "import os, nnunetv2\n"
        "from nnunetv2.utilities.find_class_by_name import recursive_find_python_class\n"
        "from nnunet_ext.planning.cli import find_planner_class\n"
        "folder = os.environ['nnUNet_extTrainer']\n"
        "cls = recursive_find_python_class(folder, 'DKMTrainer_small', None, base_folder=folder,\n"
        "                                  cleanup_imports_from_base_folder=True)\n"
        "print(cls.__module__, find_planner_class('CPUPlanner').__module__)\n")
    out = _run([fresh_env["python"], "-c", lookup], fresh_env["cwd"], {**fresh_env["env"], **variables})
    assert out.split() == ["nnunet_ext.methods.dkm.trainers", "nnunet_ext.planning.planners"]


def test_nnunet_commands_with_our_trainer_and_planner(fresh_env):
    """synth -> plan_and_preprocess -pl CPUPlanner -> nnUNetv2_train -tr TinyTrainer, all from the wheel."""
    exports = _run([fresh_env["bin"] / "nnunet-ext", "env", "--workspace", fresh_env["cwd"] / "ws2", "--cpu"],
                   fresh_env["cwd"], fresh_env["env"])
    env = {**fresh_env["env"], **dict(line[len("export "):].split("=", 1) for line in exports.splitlines())}
    nnunet_ext = fresh_env["bin"] / "nnunet-ext"
    _run([nnunet_ext, "synth", "breast_dce", "-d", "901", "--cases", "5", "--test_cases", "1", "--shape", "8", "32",
          "32"], fresh_env["cwd"], env)
    _run([nnunet_ext, "plan_and_preprocess", "-d", "901", "-pl", "CPUPlanner", "-c", "2d"], fresh_env["cwd"], env)
    # nnUNetv2_train's entry point, run by the fresh interpreter (its console script lives in the project venv)
    train = "import sys; from nnunetv2.run.run_training import run_training_entry; sys.exit(run_training_entry())"
    # the checkpoint is what is checked; nnU-Net's final validation (spawned export workers, ~15 s) is skipped
    _run([fresh_env["python"], "-c", train, "901", "2d", "0", "-tr", "TinyTrainer", "-p", "nnUNetPlansCPU",
          "-device", "cpu"], fresh_env["cwd"], {**env, "nnUNet_ext_skip_final_validation": "1"})
    results = Path(env["nnUNet_results"])
    (checkpoint,) = results.glob("Dataset901_*/TinyTrainer__nnUNetPlansCPU__2d/fold_0/checkpoint_final.pth")
    import torch

    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["trainer_name"] == "TinyTrainer"
