"""Residual fusion encoder (Yan et al., Sect. 2, Fig. 2b/2c): W = 0 gives the single-branch network, the added
parameters are only the 1x1x1 convolutions, and the fused levels follow main_k = E_k(main_{k-1}) + W_k(aux_k)."""
from types import SimpleNamespace

import pytest
import torch

from nnunet_ext.methods.resfusion.network import FUSIONS, FusionWeight, build_residual_fusion_unet

ARCH = {
    "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
    "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}
CONFIGURATION = SimpleNamespace(network_arch_init_kwargs=ARCH,
                                network_arch_init_kwargs_req_import=["conv_op", "norm_op", "dropout_op", "nonlin"],
                                pool_op_kernel_sizes=ARCH["strides"])


def _network(fusion: str, shared: bool = True, seed: int = 0, deep_supervision: bool = False):
    torch.manual_seed(seed)
    return build_residual_fusion_unet(CONFIGURATION, 2, deep_supervision, fusion, shared).eval()


def _input(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shared", [True, False])
def test_zero_weight_gives_the_single_branch_network(shared):
    """Fig. 2c with W_k = 0: main_k = E_k(main_{k-1}), i.e. the post-only ResUNet with the same weights."""
    fused, single = _network("proj", shared), _network("single", seed=5)
    with torch.no_grad():
        for weight in fused.fusion_weights:
            weight.conv.weight.zero_()
            weight.conv.bias.zero_()
    result = single.load_state_dict(fused.state_dict(), strict=False)
    assert result.missing_keys == []
    assert all(k.startswith(("fusion_weights.", "aux_encoder.")) for k in result.unexpected_keys)
    x = _input()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), single(x))
        x_other_pre = x.clone()
        x_other_pre[:, 0] = torch.randn_like(x[:, 0])
        torch.testing.assert_close(fused(x_other_pre), fused(x))  # the pre-contrast image no longer matters


def test_added_parameters_are_only_the_1x1x1_convolutions():
    """The proj module adds C_k^2 + C_k parameters per level (Sect. 2.2: "a minimal number of parameters")."""
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    widths = ARCH["features_per_stage"]
    assert count(_network("proj")) - count(_network("single")) == sum(c * c + c for c in widths)
    assert count(_network("none")) == count(_network("single"))
    assert count(_network("gate")) - count(_network("single")) == sum(2 * c * c + c for c in widths)


@pytest.mark.parametrize("fusion", ["proj", "gate", "none"])
def test_levels_follow_the_residual_fusion_recursion(fusion):
    """main_k = E_k(main_{k-1}) + W_k(aux_k), aux_k = E_k(aux_{k-1}) with the shared E_k, recomputed by hand."""
    network = _network(fusion)
    x = _input()
    encoder = network.encoder
    with torch.no_grad():
        main, aux = encoder.stem(x[:, 1:2]), encoder.stem(x[:, 0:1])
        expected = []
        for level, weight in zip(encoder.stages, network.fusion_weights):
            aux = level(aux)
            main = level(main)
            if fusion == "proj":
                main = main + weight.conv(aux)
            elif fusion == "gate":
                main = main + torch.tanh(weight.conv(torch.cat([main, aux], 1))) * aux
            else:
                main = main + aux
            expected.append(main)
        for got, want in zip(network.encode(x), expected):
            torch.testing.assert_close(got, want)


def test_unshared_aux_branch_has_its_own_weights_and_post_only_ignores_pre():
    unshared = _network("proj", shared=False)
    assert unshared.aux_encoder is not None
    assert not torch.equal(unshared.aux_encoder.stem.convs[0].conv.weight, unshared.encoder.stem.convs[0].conv.weight)
    single = _network("single")
    x = _input()
    y = x.clone()
    y[:, 0] += 5.0
    y[:, 2] -= 3.0
    with torch.no_grad():
        torch.testing.assert_close(single(x), single(y))
        assert not torch.allclose(_network("proj")(x), _network("proj")(y))


def test_deep_supervision_outputs_and_bad_fusion():
    outputs = _network("proj", deep_supervision=True)(_input())
    assert [tuple(o.shape[2:]) for o in outputs] == [(8, 8, 8), (4, 4, 4)]
    with pytest.raises(ValueError, match="fusion"):
        FusionWeight("sum", 4, torch.nn.Conv3d)
    assert FUSIONS == ("proj", "gate", "none", "single")
