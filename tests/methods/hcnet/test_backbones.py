"""Tests for nnunet_ext.methods.hcnet.backbones: 3D UX-Net and the HIPM comparison backbones (small presets, CPU)."""
import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.residual import BasicBlockD
from monai.networks.nets import VNet
from torch import nn

from nnunet_ext.methods.hcnet.backbones import (
    BACKBONES,
    UXNET_PRESETS,
    LayerNorm3d,
    PaddedNet,
    UXBlock,
    UXNet3D,
    build_hipm_backbone,
    count_parameters,
    padded_forward,
    padded_size,
)

SIZES = [(16, 16, 16), (13, 20, 17)]
SIZE_IDS = ["16cubed", "odd"]


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def small_uxnet(in_channels=1, out_channels=3):
    torch.manual_seed(0)
    return UXNet3D(in_channels, out_channels, **UXNET_PRESETS["small"])


@pytest.mark.parametrize("in_channels", [1, 2])
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_uxnet_small_returns_finite_logits_at_the_input_size(in_channels, size):
    model = small_uxnet(in_channels, 4).eval()
    x = randn(2, in_channels, *size)
    with torch.no_grad():
        out = model(x)
        alone = model(x[1:])
    assert out.shape == (2, 4) + size
    assert torch.isfinite(out).all()
    assert out.std() > 0
    # instance norm only: every case is processed on its own, whatever else is in the batch
    torch.testing.assert_close(out[1:], alone, rtol=1e-4, atol=1e-5)


def test_paper_preset_has_the_published_parameter_count():
    with torch.device("meta"):
        model = build_hipm_backbone("uxnet", 1, 11, "paper")
    assert isinstance(model, UXNet3D)
    # the official README reports 53.0M (one decimal) for in=1 and 13-16 classes; the 1^3 head adds only 49
    # parameters per class, so at 11 classes the count must round to 53.0M as well
    assert 52.95e6 <= count_parameters(model) < 53.05e6
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_blocks_are_depthwise_7cubed_with_per_channel_scaling():
    with torch.device("meta"):
        model = UXNet3D(1, 11)
    blocks = [m for m in model.modules() if isinstance(m, UXBlock)]
    assert [b.dwconv.in_channels for b in blocks] == [48, 48, 96, 96, 192, 192, 384, 384]
    for block in blocks:
        c = block.dwconv.in_channels
        assert block.dwconv.out_channels == c and block.dwconv.groups == c
        assert block.dwconv.kernel_size == (7, 7, 7) and block.dwconv.padding == (3, 3, 3)
        # depthwise convolution scaling: both 1^3 convs act per channel (x4 expansion), not a dense MLP
        assert (block.pwconv1.in_channels, block.pwconv1.out_channels, block.pwconv1.groups) == (c, 4 * c, c)
        assert (block.pwconv2.in_channels, block.pwconv2.out_channels, block.pwconv2.groups) == (4 * c, c, c)
        assert block.pwconv1.kernel_size == block.pwconv2.kernel_size == (1, 1, 1)
        assert isinstance(block.norm, LayerNorm3d) and isinstance(block.act, nn.GELU)


def test_stem_downsampling_and_stage_resolutions():
    model = small_uxnet()
    stem = model.encoder.downsample[0][0]
    assert (stem.kernel_size, stem.stride, stem.padding) == ((7, 7, 7), (2, 2, 2), (3, 3, 3))
    assert isinstance(model.encoder.downsample[0][1], LayerNorm3d)
    for down in model.encoder.downsample[1:]:
        assert isinstance(down[0], LayerNorm3d)
        assert (down[1].kernel_size, down[1].stride) == ((2, 2, 2), (2, 2, 2))
    with torch.no_grad():
        stages = model.encoder(randn(2, 1, 32, 32, 32))
    widths = UXNET_PRESETS["small"]["widths"]
    assert [tuple(s.shape) for s in stages] == [(2, w) + (32 // 2 ** (i + 1),) * 3 for i, w in enumerate(widths)]


def test_blocks_start_close_to_the_identity():
    model = small_uxnet()
    block = model.encoder.stages[0][0]
    torch.testing.assert_close(block.gamma.detach(), torch.full((8,), 1e-6))
    x = randn(1, 8, 6, 6, 6)
    with torch.no_grad():
        y = block(x)
    assert 0 < (y - x).abs().max() < 1e-4


def test_layernorm3d_normalises_over_channels_and_keeps_the_dtype():
    norm = LayerNorm3d(5)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 6.0))
        norm.bias.copy_(torch.linspace(-1, 1, 5))
    x = randn(2, 5, 3, 4, 2) * 3 + 1
    expected = F.layer_norm(x.permute(0, 2, 3, 4, 1), (5,), norm.weight, norm.bias, 1e-6).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(norm(x), expected)
    assert norm(x.bfloat16()).dtype == torch.bfloat16


def test_padded_forward_replicates_the_end_and_crops_back():
    seen = []

    def module(t):
        seen.append(t)
        return t[:, :1] * 2

    x = randn(2, 3, 13, 20, 17)
    out = padded_forward(module, x, 16)
    assert seen[0].shape == (2, 3, 16, 32, 32)
    torch.testing.assert_close(seen[0][..., :13, :20, :17], x)
    # the padded slab repeats the last real slice of each axis
    torch.testing.assert_close(seen[0][:, :, 13:, :20, :17], x[:, :, 12:13].expand(-1, -1, 3, -1, -1))
    torch.testing.assert_close(seen[0][:, :, :13, 20:, :17], x[:, :, :, 19:20].expand(-1, -1, -1, 12, -1))
    torch.testing.assert_close(seen[0][..., 17:], seen[0][..., 16:17].expand(-1, -1, -1, -1, 15))
    assert out.shape == (2, 1, 13, 20, 17) and out.is_contiguous()
    torch.testing.assert_close(out, x[:, :1] * 2)
    # already a multiple: the module gets the input itself
    y = randn(1, 1, 16, 32, 16)
    padded_forward(module, y, 16)
    assert seen[-1] is y
    assert padded_size((13, 20, 17), 16, min_size=32) == (32, 32, 32)
    assert padded_size((33, 8), 8, min_size=16) == (40, 16)


def test_uxnet_pads_small_inputs_to_two_bottleneck_voxels():
    model = small_uxnet().eval()
    # one voxel per axis at 1/16 resolution: instance norm has nothing to normalise over
    with pytest.raises(ValueError, match="spatial element"), torch.no_grad():
        model.forward_features(randn(1, 1, 16, 16, 16))
    seen = []
    inner = model.forward_features

    def spy(t):
        seen.append(tuple(t.shape[2:]))
        return inner(t)

    model.forward_features = spy
    with torch.no_grad():
        out = model(randn(1, 1, 16, 16, 16))
    assert seen == [(32, 32, 32)] and out.shape == (1, 3, 16, 16, 16)


def test_uxnet_runs_under_bfloat16_autocast():
    model = small_uxnet().eval()
    x = randn(1, 1, 13, 20, 17)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.bfloat16 and out.shape == reference.shape
    assert torch.isfinite(out).all()
    assert (out.float() - reference).abs().mean() < 0.1 * reference.abs().mean()


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_every_backbone_returns_logits_at_the_input_size(name, size):
    torch.manual_seed(0)
    model = build_hipm_backbone(name, 1, 5, "small").eval()
    with torch.no_grad():
        out = model(randn(2, 1, *size))
    assert out.shape == (2, 5) + size
    assert torch.isfinite(out).all() and out.std() > 0


@pytest.mark.parametrize("name", BACKBONES)
def test_gradients_reach_the_first_layer(name):
    torch.manual_seed(0)
    model = build_hipm_backbone(name, 2, 3, "small").train()
    x = randn(2, 2, 13, 20, 17)
    target = torch.randint(0, 3, (2, 13, 20, 17), generator=torch.Generator().manual_seed(1))
    F.cross_entropy(model(x), target).backward()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv3d))
    assert first.in_channels == 2
    assert torch.isfinite(first.weight.grad).all() and first.weight.grad.abs().sum() > 0
    if name == "uxnet":
        # the full-resolution skip block on the raw input is trained too
        skip_conv = next(m for m in model.skips[0].modules() if isinstance(m, nn.Conv3d))
        assert skip_conv.weight.grad.abs().sum() > 0


def test_resunet_presets():
    for preset, widths, blocks in [("paper", (32, 64, 128, 256), [1, 2, 2, 2]), ("small", (8, 16, 32, 64), [1] * 4)]:
        with torch.device("meta"):
            model = build_hipm_backbone("resunet", 1, 11, preset)
        assert isinstance(model, PaddedNet) and (model.divisor, model.min_size) == (8, 16)
        encoder = model.net.encoder
        assert tuple(encoder.output_channels) == widths
        assert [s[0] for s in encoder.strides] == [1, 2, 2, 2]
        assert [sum(isinstance(b, BasicBlockD) for b in s.modules()) for s in encoder.stages] == blocks
        assert any(isinstance(m, nn.InstanceNorm3d) and m.affine for m in model.modules())
        assert not model.net.decoder.deep_supervision


def test_vnet_accepts_any_number_of_input_channels():
    with torch.device("meta"):
        plain = build_hipm_backbone("vnet", 2, 4, "small")
        adapted = build_hipm_backbone("vnet", 3, 4, "paper")
        out = adapted(torch.empty(1, 3, 13, 20, 17))
    assert isinstance(plain.net, VNet) and (plain.divisor, plain.min_size) == (16, 32)
    # MONAI's VNet itself refuses 3 channels (16 % 3 != 0): a 1^3 conv maps them to 16 first
    with pytest.raises(ValueError):
        VNet(spatial_dims=3, in_channels=3, out_channels=4)
    assert isinstance(adapted.net[1], VNet) and adapted.net[0].out_channels == 16
    assert out.shape == (1, 4, 13, 20, 17)


def test_parameter_counts_of_the_presets():
    counts = {}
    for name in BACKBONES:
        for preset in ("paper", "small"):
            with torch.device("meta"):
                counts[name, preset] = count_parameters(build_hipm_backbone(name, 1, 11, preset))
    assert counts["uxnet", "small"] < 2e6 < counts["uxnet", "paper"]
    assert counts["resunet", "small"] < 0.5e6 < 5e6 < counts["resunet", "paper"]
    # MONAI's VNet has fixed widths: one size for both presets
    assert counts["vnet", "small"] == counts["vnet", "paper"]


@pytest.mark.parametrize("name, preset, choice", [("unet", "paper", "uxnet"), ("uxnet", "tiny", "small")])
def test_unknown_name_or_preset_lists_the_choices(name, preset, choice):
    with pytest.raises(ValueError, match=choice):
        build_hipm_backbone(name, 1, 2, preset)


@pytest.mark.parametrize("kwargs", [dict(divisor=8), dict(depths=(2, 2, 2)), dict(kernel_size=6)])
def test_uxnet_rejects_inconsistent_settings(kwargs):
    with pytest.raises(ValueError), torch.device("meta"):
        UXNet3D(1, 2, **kwargs)
