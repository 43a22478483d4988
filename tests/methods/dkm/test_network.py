"""Tests for nnunet_ext.methods.dkm.network: DM noise predictor + kinetic code, kinetic/up blocks, DKM segmentation net."""
import pytest
import torch

pytest.importorskip("monai")

from nnunet_ext.methods.dkm.network import (  # noqa: E402
    DiffusionUNet,
    DKMSegmentationNet,
    KineticBlock,
    UpBlock,
)

torch.set_num_threads(1)

DM_WIDTHS = (8, 16, 16, 16)
SM_WIDTHS = (8, 8, 16, 16)


def tiny_dm(spatial_dims: int = 3, seed: int = 0) -> DiffusionUNet:
    torch.manual_seed(seed)
    return DiffusionUNet(spatial_dims=spatial_dims, widths=DM_WIDTHS, num_res_blocks=1)


def randn(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ DiffusionUNet
@pytest.mark.parametrize("spatial_shape", [(16, 16, 16), (15, 16, 17), (16, 16), (13, 10)])
def test_diffusion_unet_output_and_feature_shapes(spatial_shape):
    dm = tiny_dm(len(spatial_shape))
    x = randn(2, 1, *spatial_shape)
    t = torch.tensor([3, 700])
    eps, features = dm.forward_features(x, t)
    assert eps.shape == x.shape
    assert dm(x, t).shape == x.shape
    assert dm.feature_channels == DM_WIDTHS
    assert len(features) == len(DM_WIDTHS)
    for stage, (feature, channels) in enumerate(zip(features, DM_WIDTHS)):
        factor = 2 ** stage  # f_i at 1/2^(i-1): ceil division for sizes that needed padding
        expected = (2, channels, *(-(-size // factor) for size in spatial_shape))
        assert tuple(feature.shape) == expected


def test_diffusion_unet_first_feature_is_last_decoder_activation():
    """f_1 is the full-resolution decoder output: MONAI's output head applied to it gives eps."""
    dm = tiny_dm()
    # The output conv is zero-initialised (DDPM); randomise it so that the check is not trivially 0 == 0.
    torch.nn.init.normal_(dm.unet.out[2].conv.weight)
    x = randn(1, 1, 16, 16, 16)
    eps, features = dm.forward_features(x, torch.tensor([10]))
    torch.testing.assert_close(dm.unet.out(features[0]), eps)
    torch.testing.assert_close(dm(x, torch.tensor([10])), eps)
    assert not dm.unet.up_blocks[0].upsampler._forward_pre_hooks  # temporary hooks are removed


def test_diffusion_unet_int_timestep_and_padding_crop_consistency():
    dm = tiny_dm(2)
    x = randn(2, 1, 16, 16)
    torch.testing.assert_close(dm(x, 5), dm(x, torch.tensor([5, 5])))
    # A size-divisible input is not padded: the wrapper equals MONAI's network.
    torch.testing.assert_close(dm(x, 5), dm.unet(x, torch.tensor([5, 5])))
    assert dm(x[..., :15, :13], 5).shape == (2, 1, 15, 13)


def test_diffusion_unet_norm_groups_divide_widths():
    dm = DiffusionUNet(spatial_dims=2, widths=(12, 24, 24, 24), num_res_blocks=1)
    assert dm.unet.conv_in.conv.out_channels == 12
    assert dm(randn(1, 1, 8, 8), 0).shape == (1, 1, 8, 8)


def test_diffusion_unet_with_attention():
    dm = DiffusionUNet(spatial_dims=2, widths=DM_WIDTHS, num_res_blocks=1,
                       attention_levels=(False, False, False, True))
    _, features = dm.forward_features(randn(1, 1, 16, 16), 1)
    assert features[-1].shape == (1, 16, 2, 2)


# ------------------------------------------------------------------ blocks
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("code_channels, code_size", [(None, None), (16, 8), (16, 4)])
def test_kinetic_block_shapes(spatial_dims, code_channels, code_size):
    block = KineticBlock(in_channels=4, out_channels=12, code_channels=code_channels, spatial_dims=spatial_dims)
    f_sm = randn(2, 4, *([8] * spatial_dims))
    # A code at another resolution than f_sm is resized to it.
    f_dm = randn(2, code_channels, *([code_size] * spatial_dims)) if code_channels else None
    skip, pooled = block(f_sm, f_dm)
    assert skip.shape == (2, 12, *([8] * spatial_dims))
    assert pooled.shape == (2, 12, *([4] * spatial_dims))
    assert (block.fusion is None) == (code_channels is None)
    if code_channels:
        assert block.fusion[0].out_channels == 6  # W maps the code to out_channels // 2
        assert block.convs[0][0].in_channels == 4 + 6  # Eq. 5 concatenation


def test_kinetic_block_requires_matching_code():
    with pytest.raises(ValueError, match="f_dm"):
        KineticBlock(2, 4, code_channels=3, spatial_dims=3)(randn(1, 2, 4, 4, 4))
    with pytest.raises(ValueError, match="no fusion layer"):
        KineticBlock(2, 4, None, spatial_dims=3)(randn(1, 2, 4, 4, 4), randn(1, 3, 4, 4, 4))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_up_block_shape(spatial_dims):
    block = UpBlock(in_channels=16, skip_channels=8, out_channels=8, spatial_dims=spatial_dims)
    out = block(randn(2, 16, *([4] * spatial_dims)), randn(2, 8, *([8] * spatial_dims)))
    assert out.shape == (2, 8, *([8] * spatial_dims))


# ------------------------------------------------------------------ DKMSegmentationNet
@pytest.mark.parametrize("code_stages", [(), (4,), (3, 4), (1, 2, 3, 4)])
def test_segmentation_net_output_shape(code_stages):
    net = DKMSegmentationNet(in_channels=2, num_classes=3, widths=SM_WIDTHS, dm=tiny_dm(),
                             code_stages=code_stages)
    assert net.code_stages == code_stages
    assert (net.dm is None) == (not code_stages)
    for stage, block in enumerate(net.encoder, start=1):
        assert (block.fusion is not None) == (stage in code_stages)
    assert net(randn(2, 2, 16, 16, 16)).shape == (2, 3, 16, 16, 16)


@pytest.mark.parametrize("spatial_shape", [(15, 16, 17), (20, 12)])
def test_segmentation_net_pads_and_crops(spatial_shape):
    dims = len(spatial_shape)
    net = DKMSegmentationNet(1, 2, widths=SM_WIDTHS, dm=tiny_dm(dims), spatial_dims=dims)
    assert net.code_stages == (3, 4)
    assert net(randn(1, 1, *spatial_shape)).shape == (1, 2, *spatial_shape)


def test_dm_is_frozen_and_stays_in_eval_mode():
    net = DKMSegmentationNet(1, 2, widths=SM_WIDTHS, dm=tiny_dm(), code_stages=(3, 4))
    net.train()
    assert net.training and not net.dm.training
    assert all(not p.requires_grad for p in net.dm.parameters())
    net(randn(2, 1, 16, 16, 16)).sum().backward()
    assert all(p.grad is None for p in net.dm.parameters())
    assert net.encoder[2].fusion[0].weight.grad is not None  # the fusion layer W does learn
    # Every trainable parameter learns, except the deep-supervision heads while deep supervision is off.
    idle_heads = {id(p) for head in net.decoder.seg_heads[:-1] for p in head.parameters()}
    assert all(p.grad is not None for p in net.trainable_parameters() if id(p) not in idle_heads)
    dm_ids = {id(p) for p in net.dm.parameters()}
    assert not dm_ids & {id(p) for p in net.trainable_parameters()}


def test_kinetic_code_is_deterministic():
    net = DKMSegmentationNet(1, 2, widths=SM_WIDTHS, dm=tiny_dm(), code_stages=(1, 2, 3, 4)).eval()
    x = randn(2, 1, 16, 16, 16)
    torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)
    # The code of an image does not depend on its position in the batch (fixed noise shared over the batch).
    swapped = net.kinetic_code(x.flip(0))
    for f, g in zip(net.kinetic_code(x), swapped):
        torch.testing.assert_close(f[0], g[1], rtol=1e-5, atol=1e-5)
    # A different seed gives different noise, hence a different code.
    other = DKMSegmentationNet(1, 2, widths=SM_WIDTHS, dm=net.dm, code_stages=(1, 2, 3, 4), feature_noise_seed=1)
    assert not torch.allclose(other.kinetic_code(x)[-1], net.kinetic_code(x)[-1])


def test_state_dict_carries_dm_and_load_dm_state():
    dm = tiny_dm(seed=0)
    net = DKMSegmentationNet(1, 2, widths=SM_WIDTHS, dm=dm, code_stages=(3, 4))
    state = net.state_dict()
    dm_keys = [k for k in state if k.startswith("dm.")]
    assert len(dm_keys) == len(dm.state_dict()) > 0
    assert not any("schedule" in k for k in state)  # the schedule is fixed by its constructor
    x = randn(1, 1, 16, 16, 16)
    reference = net.kinetic_code(x)

    fresh = DKMSegmentationNet(1, 2, widths=SM_WIDTHS, dm=tiny_dm(seed=1), code_stages=(3, 4))
    assert not torch.allclose(fresh.kinetic_code(x)[-1], reference[-1])
    fresh.load_dm_state(dm.state_dict())
    for f, g in zip(fresh.kinetic_code(x), reference):
        torch.testing.assert_close(f, g)
    # The full segmentation-net state dict (DM part) and a DDP-style prefixed DM state dict also load.
    again = DKMSegmentationNet(1, 2, widths=SM_WIDTHS, dm=tiny_dm(seed=2), code_stages=(3, 4))
    again.load_dm_state(state)
    torch.testing.assert_close(again.kinetic_code(x)[-1], reference[-1])
    again = DKMSegmentationNet(1, 2, widths=SM_WIDTHS, dm=tiny_dm(seed=2), code_stages=(3, 4))
    again.load_dm_state({f"module.{k}": v for k, v in dm.state_dict().items()})
    torch.testing.assert_close(again.kinetic_code(x)[-1], reference[-1])


def test_deep_supervision_outputs():
    net = DKMSegmentationNet(1, 3, widths=SM_WIDTHS, dm=None, spatial_dims=2)
    net.decoder.deep_supervision = True  # what nnU-Net's trainer sets
    outputs = net(randn(2, 1, 16, 20))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 16, 20), (2, 3, 8, 10), (2, 3, 4, 5), (2, 3, 2, 3)]
    net.decoder.deep_supervision = False
    assert net(randn(2, 1, 16, 20)).shape == (2, 3, 16, 20)


def test_invalid_configurations():
    with pytest.raises(ValueError, match="needs a diffusion module"):
        DKMSegmentationNet(1, 2, widths=SM_WIDTHS, dm=None, code_stages=(3,))
    with pytest.raises(ValueError, match="2D"):
        DKMSegmentationNet(1, 2, widths=SM_WIDTHS, dm=tiny_dm(2), spatial_dims=3)
    with pytest.raises(ValueError, match="code_stages"):
        DKMSegmentationNet(1, 2, widths=SM_WIDTHS, dm=tiny_dm(), code_stages=(5,))
