"""Tests of nnunet_ext.methods.ffpn.speed: each model is built as the benchmark times it and the figures are sane."""
from __future__ import annotations

import pytest

from nnunet_ext.methods.ffpn.speed import measure

PLANS = {"configurations": {"2d": {"architecture": {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {"n_stages": 4, "features_per_stage": [4, 8, 16, 16], "conv_op": "torch.nn.modules.conv.Conv2d",
                    "kernel_sizes": [[3, 3]] * 4, "strides": [[1, 1], [2, 2], [2, 2], [2, 2]],
                    "n_conv_per_stage": [1] * 4, "n_conv_per_stage_decoder": [1] * 3, "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                    "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}


@pytest.mark.parametrize("model, size, expected_input", [
    ("unet", 36, 40),                 # padded to the U-Net's divisibility (2 ** 3), as nnU-Net pads
    ("unet_default_width", 32, 32),   # nnU-Net's default widths: more parameters than the plans' U-Net
    ("ffpn", 64, 64),
])
def test_measure_builds_the_model_and_reports_speed_and_memory(model, size, expected_input):
    result = measure(model, PLANS, size, "cpu", warmup=0, repeats=1)
    assert result["input"] == [expected_input, expected_input]
    assert result["images_per_s"] > 0 and result["peak_mem_mb"] >= 0
    if model == "unet_default_width":
        assert result["parameters"] > measure("unet", PLANS, size, "cpu", 0, 1)["parameters"]
