"""Contrastive networks (Zhang et al., Fig. 2b-d): SimSiam heads, the frozen/trainable encoder pair and the
non-local cross-attention of the feature fusion module (Fig. 2c)."""
import pytest
import torch

from nnunet_ext.methods.contrastive.network import (ContrastiveFusionUNet, ContrastivePretrainNet, CrossAttention,
                                                    encoder_state)
from nnunet_ext.training.plans_networks import initialize_residual_network, residual_encoder_from_plans, \
    unet_decoder_for
from tests.methods.resfusion.test_network import CONFIGURATION


def _encoder(seed=0):
    torch.manual_seed(seed)
    encoder = residual_encoder_from_plans(CONFIGURATION, 2)
    initialize_residual_network(encoder)
    return encoder


def _fusion(fuse=True, seed=0):
    encoder = _encoder(seed)
    decoder = unet_decoder_for(encoder, CONFIGURATION, 2, False)
    return ContrastiveFusionUNet(encoder, decoder, [1, 2], fuse)


def _x(seed=1):
    return torch.randn(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", [0, 1])
def test_attention_rows_sum_to_one_and_match_a_hand_softmax(seed):
    """Fig. 2c: softmax over the frozen encoder's positions of (W_q x)^T (W_k y); every row sums to 1."""
    torch.manual_seed(seed)
    block = CrossAttention(8, torch.nn.Conv3d)
    x, y = torch.randn(2, 8, 3, 4, 2), torch.randn(2, 8, 3, 4, 2)
    attention = block.attention(x, y)
    assert attention.shape == (2, 24, 24)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 24))
    q = block.query(x).flatten(2).transpose(1, 2)
    k = block.key(y).flatten(2)
    torch.testing.assert_close(attention, torch.softmax(q @ k, -1))
    torch.testing.assert_close(block(x, y), x)  # the output conv starts at zero: identity at initialisation
    torch.nn.init.normal_(block.out.weight)
    assert not torch.allclose(block(x, y), x)
    assert not torch.allclose(block(x, y), block(x, torch.randn_like(y)))  # keys/values come from y


def test_fusion_network_freezes_one_encoder_and_loads_both():
    network = _fusion()
    assert network.attention_levels == [1, 2]
    frozen = {n for n, p in network.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("frozen_encoder.") for n in frozen)
    assert set(map(id, network.trainable_parameters())) == {id(p) for p in network.parameters() if p.requires_grad}
    network.train()
    assert not network.frozen_encoder.training and network.encoder.training
    pretrained = ContrastivePretrainNet(_encoder(seed=7), [1, 2], 16, 4)
    network.load_encoder_state(encoder_state(pretrained.state_dict()))
    for part in (network.encoder, network.frozen_encoder):
        for key, value in pretrained.encoder.state_dict().items():
            assert torch.equal(part.state_dict()[key], value), key
    output = network(_x())
    assert output.shape == (2, 2, 8, 8, 8)
    output.sum().backward()
    assert all(p.grad is None for p in network.frozen_encoder.parameters())


def test_unfused_network_is_the_plain_residual_unet_on_post_and_sub():
    network = _fusion(fuse=False).eval()
    assert network.frozen_encoder is None and len(network.attention) == 0
    x = _x()
    y = x.clone()
    y[:, 0] = 0.0  # channel 0 (pre-contrast) is not read
    with torch.no_grad():
        torch.testing.assert_close(network(x), network(y))


def test_pretraining_network_embeds_in_training_and_refuses_to_segment():
    network = ContrastivePretrainNet(_encoder(), [1, 2], projection_dim=16, predictor_dim=4, owner="X")
    z, p = network(_x())
    assert z.shape == p.shape == (2, 16)
    network.eval()
    with pytest.raises(RuntimeError, match="X is a pretraining network.*does not segment"):
        network(_x())


@pytest.mark.parametrize("names,ok", [({"0": "pre", "1": "post1", "2": "SUB"}, True),
                                      ({"0": "pre", "1": "post1", "2": "post2"}, False),
                                      ({"0": "pre", "1": "SUB"}, False)])
def test_the_subtraction_channel_is_required_last(names, ok):
    from nnunet_ext.methods.contrastive.trainers import check_subtraction_channel, input_channels

    if ok:
        check_subtraction_channel("T", {"channel_names": names}, "D")
        assert input_channels(len(names)) == [1, 2]
    else:
        with pytest.raises(RuntimeError, match="T reads the post-contrast channel 1 and a last channel SUB; D has "
                                               "channels .*write it with --subtraction"):
            check_subtraction_channel("T", {"channel_names": names}, "D")
