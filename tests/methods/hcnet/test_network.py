"""KIS-Net (Sect. 2.3, Fig. 1c-d): KIFB shapes, the frozen HIPM, the plans-built ResUNet backbone."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nnunet_ext.methods.hcnet.network import HCNetSegmentationNet, KineticFusionBlock, residual_unet_from_plans


def _configuration(n_stages: int = 3, features=(8, 16, 32)):
    kwargs = {"n_stages": n_stages, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv3d",
              "kernel_sizes": [[3, 3, 3]] * n_stages, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
              "n_conv_per_stage": [2] * n_stages, "n_conv_per_stage_decoder": [2] * (n_stages - 1),
              "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
              "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
              "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    return SimpleNamespace(network_arch_init_kwargs=kwargs,
                           network_arch_init_kwargs_req_import=["conv_op", "norm_op", "dropout_op", "nonlin"])


def _net(k: int = 4, hard: bool = False):
    torch.manual_seed(0)
    backbone, channels = residual_unet_from_plans(_configuration(), 1, 2, features_only=True)
    hipm = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.Conv3d(4, k + 1, 1))
    return HCNetSegmentationNet(backbone, channels, hipm, k + 1, 2, embed_channels=8, hard_prior=hard)


@pytest.mark.parametrize("shape", [(16, 16, 16), (8, 12, 20)])
def test_kifb_and_network_shapes(shape):
    kifb = KineticFusionBlock(feature_channels=8, prior_channels=11, n_classes=2, embed_channels=16)
    assert kifb(torch.randn(2, 8, *shape), torch.rand(2, 11, *shape)).shape == (2, 2, *shape)
    assert _net()(torch.randn(2, 1, *shape)).shape == (2, 2, *shape)


def test_backbone_follows_the_plans_and_features_only_drops_the_head():
    full, out = residual_unet_from_plans(_configuration(), 1, 3)
    features, channels = residual_unet_from_plans(_configuration(), 1, 3, features_only=True)
    x = torch.randn(1, 1, 16, 16, 16)
    assert out == 3 and full(x).shape == (1, 3, 16, 16, 16)
    assert channels == 8 and features(x).shape == (1, 8, 16, 16, 16)
    capped, _ = residual_unet_from_plans(_configuration(), 1, 2, features=(4, 6), features_only=True)
    assert capped.encoder.output_channels == [4, 6, 6]


def test_hipm_stays_frozen_and_in_eval_mode():
    net = _net()
    before = {k: v.clone() for k, v in net.hipm.state_dict().items()}
    optimizer = torch.optim.SGD(net.trainable_parameters(), lr=0.1)
    net.train()
    assert not net.hipm.training and net.kifb.training
    for _ in range(2):
        optimizer.zero_grad()
        net(torch.randn(2, 1, 16, 16, 16)).sum().backward()
        optimizer.step()
    assert all(p.grad is None for p in net.hipm.parameters())
    for key, value in net.hipm.state_dict().items():  # weights and BatchNorm running statistics
        assert torch.equal(value, before[key]), key
    hipm_ids = {id(p) for p in net.hipm.parameters()}
    trainable = net.trainable_parameters()
    assert not hipm_ids & {id(p) for p in trainable}
    assert len(trainable) == sum(1 for n, _ in net.named_parameters() if not n.startswith("hipm."))


def test_hard_prior_is_one_hot_argmax_of_the_soft_prior():
    soft, hard = _net(hard=False), _net(hard=True)
    hard.load_state_dict(soft.state_dict())
    x = torch.randn(1, 1, 8, 8, 8)
    p_soft, p_hard = soft.prior(x), hard.prior(x)
    torch.testing.assert_close(p_soft.sum(1), torch.ones(1, 8, 8, 8))
    assert torch.equal(p_hard.argmax(1), p_soft.argmax(1)) and set(p_hard.unique().tolist()) == {0.0, 1.0}


def test_prior_changes_the_output():
    net = _net().eval()
    x = torch.randn(1, 1, 8, 8, 8)
    baseline = net(x)
    with torch.no_grad():
        net.hipm[-1].bias += 5.0 * torch.arange(5.0)  # a different heterogeneity map
    assert not torch.allclose(net(x), baseline)
