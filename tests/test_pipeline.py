"""nnunet_ext.pipeline: the nnUNetv2_predict command line it builds (the commands themselves run in the integration
tests)."""
from __future__ import annotations

import pytest

from nnunet_ext import pipeline
from nnunet_ext.errors import UserInputError


@pytest.mark.parametrize("device,workers", [("cpu", ["-npp", "0", "-nps", "0"]),
                                            ("cuda", ["-npp", "1", "-nps", "1"]),
                                            ("mps", ["-npp", "1", "-nps", "1"])])
def test_predict_is_sequential_on_cpu_only(tmp_path, monkeypatch, device, workers):
    seen = []
    monkeypatch.setattr(pipeline, "run_logged", lambda cmd, env, log_file: seen.append(cmd))
    pipeline.predict(tmp_path, tmp_path / "out", 7, "3d_fullres", [0, 1], "TinyTrainer", "nnUNetPlans", {},
                     tmp_path / "log", extra=["--save_probabilities"], device=device)
    (cmd,) = seen
    start = cmd.index("-npp")
    assert cmd[start:start + 4] == workers and cmd[-1] == "--save_probabilities"
    assert cmd[cmd.index("-f") + 1:cmd.index("-tr")] == ["0", "1"] and cmd[cmd.index("-device") + 1] == device


def test_predict_refuses_a_missing_input_folder(tmp_path):
    with pytest.raises(UserInputError, match="prediction input folder does not exist"):
        pipeline.predict(tmp_path / "nope", tmp_path / "out", 7, "3d_fullres", [0], "TinyTrainer", "nnUNetPlans", {},
                         tmp_path / "log")
