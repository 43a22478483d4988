"""Tests for nnunet_ext.methods.dca.convnet: the ConvNet registration network with TM-DCA's decoder (small preset)."""
import pytest
import torch

from nnunet_ext.methods.dca.convnet import ConvNetRegistration, build_network
from nnunet_ext.methods.dca.network import TMDCA, FieldDecoder, count_parameters, get_config
from nnunet_ext.methods.dca.transform import integrate_velocity

SIZES = {2: (32, 32), 3: (32, 32, 32)}
ODD_SIZES = {2: (13, 19), 3: (9, 11, 13)}


def build(size, **kwargs):
    torch.manual_seed(0)
    return ConvNetRegistration(size, "small", **kwargs)


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ndim", [2, 3])
def test_stage_outputs_have_the_channels_and_strides_tmdca_feeds_the_decoder(ndim):
    size = SIZES[ndim]
    model = build(size)
    stages = model.encoder(randn(2, 2, *size))
    dims = get_config("small").stage_dims
    assert [tuple(s.shape) for s in stages] == [(2, dims[i]) + tuple(n // (4 * 2 ** i) for n in size)
                                                for i in range(3)]
    # the TM-DCA encoder's outputs (sums of both streams) for the same input size
    tmdca = TMDCA(size, "small")
    reference = tmdca.encoder(randn(2, 1, *size), randn(2, 1, *size, seed=1))
    assert [tuple(s.shape) for s in stages] == [tuple((m + f).shape) for m, f in reference]
    assert type(model.decoder) is FieldDecoder


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("sizes", [SIZES, ODD_SIZES], ids=["multiple", "odd"])
def test_forward_shapes_and_a_near_zero_initial_field(ndim, sizes):
    size = sizes[ndim]
    model = build(size)
    moving, fixed = randn(2, 1, *size), randn(2, 1, *size, seed=1)
    with torch.no_grad():
        field = model(moving, fixed)
        registration = model.register(moving, fixed, torch.randint(0, 3, (2, 1, *size)))
    assert field.shape == (2, ndim) + size
    assert field.abs().max() < 0.01  # head weights N(0, 1e-5), zero bias (TransMorph's RegistrationHead)
    assert registration.warped.shape == moving.shape and registration.warped_labels.shape == (2, 1) + size
    with pytest.raises(ValueError, match="must have one shape"):
        model(moving, fixed[..., :-1])


def test_diffeomorphic_integrates_the_decoders_velocity():
    size = ODD_SIZES[3]
    model = build(size, diffeomorphic=True, integration_steps=5)
    moving, fixed = randn(1, 1, *size), randn(1, 1, *size, seed=1)
    with torch.no_grad():
        model.decoder.head.weight.normal_(0.0, 1e-2)  # a field large enough to tell integration from identity
        velocity = model.predict_field(moving, fixed)
        displacement = model(moving, fixed)
    torch.testing.assert_close(displacement, integrate_velocity(velocity, 5))
    assert not torch.allclose(displacement, velocity)


def _conv_parameters(ndim, c_in, c_out):
    return 3 ** ndim * c_in * c_out + c_out


@pytest.mark.parametrize("ndim", [2, 3])
def test_parameter_count_of_the_small_preset(ndim):
    # encoder: (2 -> 8, stride 2), (8 -> 8), then per stage (stride 2, conv) with 16, 32, 64 channels
    channels = [2, 8, 16, 32, 64]
    encoder = sum(_conv_parameters(ndim, a, b) + _conv_parameters(ndim, b, b) for a, b in zip(channels, channels[1:]))
    decoder = count_parameters(FieldDecoder(ndim, 2, (16, 32, 64), 8))
    model = build(SIZES[ndim])
    assert count_parameters(model.encoder) == encoder
    assert count_parameters(model) == encoder + decoder
    assert count_parameters(model) == {2: 124_082, 3: 371_979}[ndim]
    assert count_parameters(model) < count_parameters(TMDCA(SIZES[ndim], "small")) / 2


def test_gradients_reach_every_parameter():
    size = ODD_SIZES[3]
    model = build(size)
    moving, fixed = randn(1, 1, *size), randn(1, 1, *size, seed=1)
    field = model(moving, fixed)
    (field ** 2).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_build_network_picks_the_class_and_presets_match_tmdca():
    assert type(build_network("convnet", (16, 16), "paper")) is ConvNetRegistration
    assert type(build_network("tmdca", (16, 16), "small", drop_path_rate=0.0)) is TMDCA
    # transformer-only overrides are accepted and ignored, so one call builds either network
    assert build_network("convnet", (16, 16), "small", drop_path_rate=0.0).config.stage_dims == (16, 32, 64)
    with pytest.raises(ValueError, match="unknown registration network"):
        build_network("unet", (16, 16))
    with pytest.raises(ValueError, match="unknown TM-DCA preset"):
        ConvNetRegistration((16, 16), "huge")
