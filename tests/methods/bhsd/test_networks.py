"""MONAI UNETR / Swin UNETR padded to nnU-Net's patch (BHSD Table 1 baselines), tiny widths."""
from __future__ import annotations

import pytest
import torch

from nnunet_ext.methods.bhsd.networks import PaddedToMultiple, build_swin_unetr, build_unetr, padded_size


@pytest.mark.parametrize("size,multiple,expected", [((16, 48, 48), 16, (16, 48, 48)), ((12, 40, 41), 16, (16, 48, 48)),
                                                    ((16, 48, 48), 32, (32, 64, 64))])
def test_padded_size(size, multiple, expected):
    assert padded_size(size, multiple) == expected


def test_padding_is_cropped_back_exactly():
    network = PaddedToMultiple(torch.nn.Identity(), (8, 8))
    x = torch.randn(1, 1, 5, 7)
    assert torch.equal(network(x), x)
    with pytest.raises(RuntimeError, match="does not fit"):
        network(torch.randn(1, 1, 9, 8))


@pytest.mark.parametrize("build,kwargs", [
    (build_unetr, {"feature_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_heads": 2}),
    (build_swin_unetr, {"feature_size": 12, "depths": (1, 1, 1, 1)})])
def test_networks_map_an_nnunet_patch_to_logits_of_the_same_size(build, kwargs):
    torch.manual_seed(0)
    network = build(1, 6, (12, 40, 20), **kwargs)  # Swin: padded to 32 x 64 x 32, bottleneck 1 x 2 x 1
    x = torch.randn(2, 1, 12, 40, 20, requires_grad=True)
    out = network(x)
    assert out.shape == (2, 6, 12, 40, 20)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
