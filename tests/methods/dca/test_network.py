"""Tests for nnunet_ext.methods.dca.network: the TM-DCA registration network, 2D and 3D (small preset, tiny inputs)."""
import numpy as np
import pytest
import torch
from torch import nn

from nnunet_ext.methods.dca.network import (
    PRESETS,
    TMDCA,
    DualCrossAttentionBlock,
    Registration,
    TMDCAConfig,
    count_parameters,
    default_window,
    get_config,
    padded_input_size,
)
from nnunet_ext.methods.dca.transform import integrate_velocity, warp
from nnunet_ext.metrics.registration import jacobian_determinant

ODD_SIZES = {2: (13, 19), 3: (9, 11, 13)}  # padded to 32 per axis inside (one 2-voxel window at the deepest stage)
PAIR_SIZES = {2: (32, 32), 3: (32, 32, 32)}


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def build(size, **kwargs):
    torch.manual_seed(0)
    return TMDCA(size, "small", **kwargs)


def blob(size):
    """A smooth Gaussian blob in the middle of the image, (1, 1, *size)."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in size], indexing="ij"))
    centre = torch.tensor([(n - 1) / 2 for n in size]).view(-1, *[1] * len(size))
    return torch.exp(-((grid - centre) ** 2).sum(0) / (2 * (size[0] / 6) ** 2))[None, None]


# ------------------------------------------------------------------ geometry and presets
def test_window_and_padding_rules():
    assert default_window((160, 192, 224)) == (5, 6, 7)  # the authors' (H // 32, W // 32, D // 32)
    assert default_window((20, 100)) == (2, 3)  # floor of 2
    # a multiple of 4 * 2^(stages - 1) = 16, and at least one window at the deepest stage
    assert padded_input_size((160, 192, 224), (5, 6, 7), 3) == (160, 192, 224)
    assert padded_input_size((13, 19), (2, 2), 3) == (32, 32)
    assert padded_input_size((112, 40), (3, 2), 3) == (112, 48)


def test_presets_by_name_and_overrides():
    assert get_config("paper") == TMDCAConfig() == PRESETS["paper"]
    small = get_config("small", embed_dim=24)
    assert (small.embed_dim, small.depths, small.num_heads) == (24, (1, 1, 1), (2, 2, 2))
    with pytest.raises(ValueError, match="unknown TM-DCA preset"):
        get_config("huge")
    with pytest.raises(ValueError, match="do not divide"):
        get_config("small", num_heads=(3, 2, 2))


def test_paper_preset_builds_3d():
    with torch.device("meta"):  # no memory, no compute: the paper model has ~283 M parameters
        model = TMDCA((160, 192, 224), "paper")
    assert model.window == (5, 6, 7)
    assert model.stage_sizes == ((40, 48, 56), (20, 24, 28), (10, 12, 14))
    stages = model.encoder.stages
    assert [len(blocks) for blocks in stages] == [4, 4, 5]
    assert [b.moving_attention.num_heads for b in stages[0]] == [8] * 4
    assert [b.moving_attention.shift for b in stages[2]] == [(0, 0, 0), (2, 3, 3)] * 2 + [(0, 0, 0)]
    assert stages[0][0].moving_attention.offset_net[0].kernel_size == (7, 7, 7)
    assert stages[2][0].fixed_attention.offset_net[0].kernel_size == (3, 3, 3)
    offset = sum(count_parameters(m.offset_net) for m in model.modules() if hasattr(m, "offset_net"))
    # the dense offset networks of the authors' released code (2C -> C -> C/2, 7^3 / 5^3 / 3^3) dominate
    assert count_parameters(model) == 283_470_675
    assert offset == 255_007_344


def test_streams_share_patch_embedding_and_merging():
    model = build(PAIR_SIZES[3])
    assert len(model.encoder.merges) == 2  # one merging per stage transition, applied to both streams
    names = [name for name, _ in model.encoder.named_children()]
    assert names.count("patch_embedding") == 1
    block = model.encoder.stages[0][0]
    assert block.moving_attention is not block.fixed_attention
    assert block.moving_mlp is not block.fixed_mlp


@pytest.mark.parametrize("ndim", [2, 3])
def test_block_pads_to_the_window_and_crops_back(ndim):
    torch.manual_seed(0)
    window = (2, 4) if ndim == 2 else (2, 2, 4)
    block = DualCrossAttentionBlock(8, 2, window, shift=tuple(w // 2 for w in window))
    spatial = (5, 7) if ndim == 2 else (3, 5, 7)
    moving, fixed = randn(2, *spatial, 8, seed=1), randn(2, *spatial, 8, seed=2)
    new_moving, new_fixed = block(moving, fixed)
    assert new_moving.shape == new_fixed.shape == moving.shape
    assert torch.isfinite(new_moving).all() and not torch.allclose(new_moving, moving)


# ------------------------------------------------------------------ forward
@pytest.mark.parametrize("ndim", [2, 3])
def test_odd_sizes_give_a_field_of_the_input_size_near_zero_at_init(ndim):
    size = ODD_SIZES[ndim]
    model = build(size).eval()
    moving, fixed = randn(2, 1, *size, seed=1), randn(2, 1, *size, seed=2)
    labels = (randn(2, 1, *size, seed=3) > 0).long() + (randn(2, 1, *size, seed=4) > 0.5).long()
    with torch.no_grad():
        out = model.register(moving, fixed, labels)
        one_hot = model.register(moving, fixed, labels, num_classes=3)
    assert isinstance(out, Registration)
    assert out.displacement.shape == (2, ndim) + size
    assert out.displacement.abs().max() < 1e-2  # head weights ~ N(0, 1e-5): initial warp ~ identity
    assert out.warped.shape == moving.shape
    assert torch.allclose(out.warped, moving, atol=1e-2)
    assert torch.equal(out.warped_labels, labels) and torch.equal(one_hot.warped_labels, labels)
    assert out.warped_labels.dtype == labels.dtype


@pytest.mark.parametrize("ndim", [2, 3])
def test_gradient_reaches_both_encoders_and_the_offset_networks(ndim):
    size = PAIR_SIZES[ndim]
    model = build(size, depths=(2, 1, 1)).train()  # two blocks in stage 0: the shifted one is checked too
    moving, fixed = randn(1, 1, *size, seed=1), randn(1, 1, *size, seed=2)
    loss = ((model.register(moving, fixed).warped - fixed) ** 2).mean()
    loss.backward()
    no_gradient = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_gradient == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    names = [name for name, _ in model.named_parameters()]
    for part in ("moving_attention.offset_net.0", "fixed_attention.offset_net.0", "moving_mlp", "fixed_mlp",
                 "moving_out_norms", "fixed_out_norms", "patch_embedding", "merges", "stages.0.1."):
        assert any(part in name for name in names), part


@pytest.mark.parametrize("ndim", [2, 3])
def test_diffeomorphic_field_has_a_positive_jacobian(ndim):
    size = ODD_SIZES[ndim]
    model = build(size, diffeomorphic=True).eval()
    moving, fixed = randn(1, 1, *size, seed=1), randn(1, 1, *size, seed=2)
    head = model.decoder.head.weight
    with torch.no_grad():  # a random velocity of up to 3 voxels, rough enough to fold when used as a displacement
        nn.init.normal_(head, 0.0, 0.1, generator=torch.Generator().manual_seed(5))
        head *= 3.0 / model.predict_field(moving, fixed).abs().max()
        velocity = model.predict_field(moving, fixed)
        displacement = model(moving, fixed)
    assert torch.equal(displacement, integrate_velocity(velocity, 7))
    assert velocity.abs().max() == pytest.approx(3.0, rel=1e-4)
    assert jacobian_determinant(velocity[0].double().numpy()).min() < 0  # the raw field folds ...
    assert np.all(jacobian_determinant(displacement[0].double().numpy()) > 0)  # ... its exponential does not


@pytest.mark.parametrize("ndim", [2, 3])
def test_adam_steps_reduce_the_loss_on_a_one_voxel_translation(ndim):
    size = PAIR_SIZES[ndim]
    model = build(size).train()
    moving = blob(size)
    fixed = torch.roll(moving, 1, dims=2)  # fixed(x) = moving(x - e_0): the answer is u = (-1, 0[, 0])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        displacement = model(moving, fixed)
        loss = ((warp(moving, displacement) - fixed) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    inside = moving[0, 0] > 0.2
    assert displacement[0, 0][inside].mean() < -0.1  # moving towards the known translation


def test_input_checks():
    model = build(ODD_SIZES[2])
    with pytest.raises(ValueError, match="one shape"):
        model(randn(1, 1, 13, 19), randn(1, 1, 13, 20))
    with pytest.raises(ValueError, match="spatial axes"):
        model(randn(1, 1, 4, 13, 19), randn(1, 1, 4, 13, 19))
    with pytest.raises(ValueError, match="2 or 3"):
        TMDCA((16,))
