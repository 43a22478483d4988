"""Tests for nnunet_ext.methods.dca.attention: windows, position bias, mask, (deformable) windowed cross-attention."""
import math

import pytest
import torch

from nnunet_ext.methods.dca.attention import (
    MASK_VALUE,
    DeformableWindowCrossAttention,
    RelativePositionBias,
    WindowCrossAttention,
    relative_position_index,
    resample_per_head,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

DIM, HEADS = 8, 2
# (spatial, window, shift) per dimensionality: small, anisotropic, shift < window
CASES = {
    2: ((8, 12), (4, 6), (2, 3)),
    3: ((4, 6, 8), (2, 3, 4), (1, 1, 2)),
}


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def pair(ndim, batch=2):
    spatial = CASES[ndim][0]
    return randn(batch, *spatial, DIM, seed=1), randn(batch, *spatial, DIM, seed=2)


def set_constant_offsets(module, offsets_per_head):
    """Make the offset network output the given constant offsets (voxels), ``offsets_per_head[h][d]``."""
    last = module.offset_net[-1]
    spatial = CASES[module.ndim][0]
    with torch.no_grad():
        last.weight.zero_()
        for h, offset in enumerate(offsets_per_head):
            for d, value in enumerate(offset):
                last.bias[h * module.ndim + d] = math.atanh(value / (module.offset_scale * spatial[d]))


# ------------------------------------------------------------------ windows
@pytest.mark.parametrize("ndim", [2, 3])
def test_window_partition_round_trip_and_layout(ndim):
    spatial, window, _ = CASES[ndim]
    x = randn(3, *spatial, 5)
    windows = window_partition(x, window)
    n_windows = math.prod(n // w for n, w in zip(spatial, window))
    assert windows.shape == (3 * n_windows,) + window + (5,)
    # first window of the second map is the map's leading corner block
    corner = x[(1,) + tuple(slice(0, w) for w in window)]
    assert torch.equal(windows[n_windows], corner)
    assert torch.equal(window_reverse(windows, window, spatial), x)


@pytest.mark.parametrize("ndim", [2, 3])
def test_window_partition_rejects_non_multiples(ndim):
    spatial, window, _ = CASES[ndim]
    bad = tuple(n + 1 for n in spatial)
    with pytest.raises(ValueError, match="multiple"):
        window_partition(randn(1, *bad, 2), window)
    with pytest.raises(ValueError, match="multiple"):
        window_reverse(randn(4, *window, 2), window, bad)
    with pytest.raises(ValueError, match="axes"):
        window_partition(randn(1, *spatial, 2), window[:1] * (ndim + 1))


# ------------------------------------------------------------------ relative position bias
@pytest.mark.parametrize("window", [(2, 3), (2, 3, 4)])
def test_relative_position_index_depends_only_on_offsets(window):
    index = relative_position_index(window)
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")).flatten(1).T
    n = coords.shape[0]
    assert index.shape == (n, n)
    assert index.min() == 0 and index.max() == math.prod(2 * w - 1 for w in window) - 1
    offsets = {}
    for i in range(n):
        for j in range(n):
            key = tuple((coords[i] - coords[j]).tolist())
            assert offsets.setdefault(key, int(index[i, j])) == int(index[i, j])
    assert len(set(offsets.values())) == len(offsets)  # distinct offsets, distinct rows
    bias = RelativePositionBias(window, num_heads=3)()
    assert bias.shape == (3, n, n)
    assert torch.equal(bias[:, 0, 0], bias[:, n - 1, n - 1])  # same (zero) offset, same bias


@pytest.mark.parametrize("ndim", [2, 3])
def test_shifted_window_mask(ndim):
    spatial, window, shift = CASES[ndim]
    mask = shifted_window_mask(spatial, window, shift)
    n_windows = math.prod(n // w for n, w in zip(spatial, window))
    assert mask.shape == (n_windows, math.prod(window), math.prod(window))
    assert torch.all(mask[0] == 0)  # the first window holds no wrapped tokens
    assert torch.all(mask[-1].diagonal() == 0) and (mask[-1] == MASK_VALUE).any()
    assert torch.all(shifted_window_mask(spatial, window, (0,) * ndim) == 0)


# ------------------------------------------------------------------ (deformable) windowed cross-attention
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("shifted", [False, True])
def test_zero_offsets_equal_window_cross_attention(ndim, shifted):
    spatial, window, shift = CASES[ndim]
    shift = shift if shifted else None
    torch.manual_seed(0)
    deformable = DeformableWindowCrossAttention(DIM, HEADS, window, shift, offset_kernel_size=3)
    plain = WindowCrossAttention(DIM, HEADS, window, shift)
    missing, unexpected = plain.load_state_dict(deformable.state_dict(), strict=False)
    assert not missing and all(key.startswith("offset_net.") for key in unexpected)
    set_constant_offsets(deformable, [(0.0,) * ndim] * HEADS)
    base, reference = pair(ndim)
    assert torch.equal(deformable.predict_offsets(base, reference), torch.zeros(2, HEADS, ndim, *spatial))
    out = deformable(base, reference)
    assert out.shape == base.shape
    torch.testing.assert_close(out, plain(base, reference), rtol=0, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_initial_offsets_are_nearly_zero(ndim):
    _, window, _ = CASES[ndim]
    module = DeformableWindowCrossAttention(DIM, HEADS, window)
    offsets = module.predict_offsets(*pair(ndim))
    assert offsets.abs().max() < 1e-2


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("axis", [0, -1])
def test_integer_offset_rolls_the_reference(ndim, axis):
    """Head 0 moved by +1 voxel along ``axis`` samples the reference rolled by -1 (torch.roll); head 1 stays put."""
    spatial, window, _ = CASES[ndim]
    axis = axis % ndim
    module = DeformableWindowCrossAttention(DIM, HEADS, window)
    step = [0.0] * ndim
    step[axis] = 1.0
    set_constant_offsets(module, [step, [0.0] * ndim])
    base, reference = pair(ndim)
    offsets = module.predict_offsets(base, reference)
    torch.testing.assert_close(offsets[:, 0, axis], torch.ones_like(offsets[:, 0, axis]))
    sampled = module.sample_reference(base, reference)
    head = DIM // HEADS
    interior = (slice(None),) * (1 + axis) + (slice(0, spatial[axis] - 1),)
    rolled = torch.roll(reference[..., :head], -1, dims=1 + axis)
    torch.testing.assert_close(sampled[..., :head][interior], rolled[interior], rtol=0, atol=1e-5)
    last = (slice(None),) * (1 + axis) + (spatial[axis] - 1,)
    assert sampled[..., :head][last].abs().max() < 1e-5  # zero padding outside the map
    torch.testing.assert_close(sampled[..., head:], reference[..., head:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_integer_offset_attention_equals_plain_attention_on_rolled_reference(ndim):
    """All heads +1 along the last axis: away from the last window the output is plain attention on roll(ref)."""
    spatial, window, _ = CASES[ndim]
    torch.manual_seed(0)
    deformable = DeformableWindowCrossAttention(DIM, HEADS, window)
    plain = WindowCrossAttention(DIM, HEADS, window)
    plain.load_state_dict(deformable.state_dict(), strict=False)
    step = [0.0] * (ndim - 1) + [1.0]
    set_constant_offsets(deformable, [step] * HEADS)
    base, reference = pair(ndim)
    expected = plain(base, torch.roll(reference, -1, dims=ndim))
    keep = (Ellipsis, slice(0, spatial[-1] - window[-1]), slice(None))
    torch.testing.assert_close(deformable(base, reference)[keep], expected[keep], rtol=0, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("shifted", [False, True])
def test_gradient_reaches_offset_network(ndim, shifted):
    spatial, window, shift = CASES[ndim]
    module = DeformableWindowCrossAttention(DIM, HEADS, window, shift if shifted else None)
    with torch.no_grad():
        module.offset_net[-1].weight.normal_(0.0, 0.5)
        module.offset_net[-1].bias.uniform_(-0.3, 0.3)
    base, reference = pair(ndim)
    reference.requires_grad_(True)
    out = module(base, reference)
    (out * randn(*out.shape, seed=3)).sum().backward()
    for layer in (module.offset_net[0], module.offset_net[3], module.offset_net[-1]):
        grad = layer.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 0
    assert module.offset_net[-1].bias.grad.abs().max() > 0


def test_resample_per_head_checks_shapes():
    features = randn(1, 4, 6, 8)
    with pytest.raises(ValueError, match="do not fit"):
        resample_per_head(features, torch.zeros(1, 3, 2, 4, 6))  # 3 heads do not divide 8 channels


def test_constructor_and_input_checks():
    with pytest.raises(ValueError, match="divide"):
        WindowCrossAttention(10, 3, (2, 2))
    with pytest.raises(ValueError, match="shift"):
        WindowCrossAttention(8, 2, (2, 2), shift=(2, 0))
    with pytest.raises(ValueError, match="odd"):
        DeformableWindowCrossAttention(8, 2, (2, 2), offset_kernel_size=4)
    module = WindowCrossAttention(8, 2, (2, 2))
    with pytest.raises(ValueError, match="multiple"):
        module(randn(1, 3, 4, 8), randn(1, 3, 4, 8))
    with pytest.raises(ValueError, match="one shape"):
        module(randn(1, 4, 4, 8), randn(1, 2, 4, 8))


@pytest.mark.parametrize("ndim", [2, 3])
def test_window_cross_attention_matches_a_per_window_loop(ndim):
    """Independent reference: slice every window out of the maps and run Eq. 1 on it with the module's layers."""
    spatial, window, _ = CASES[ndim]
    module = WindowCrossAttention(DIM, HEADS, window)
    base, reference = pair(ndim)
    out = module(base, reference)
    head = DIM // HEADS
    bias = module.position_bias()
    starts = torch.stack(torch.meshgrid(*[torch.arange(0, n, w) for n, w in zip(spatial, window)], indexing="ij"))
    for start in starts.flatten(1).T.tolist():
        block = (slice(None),) + tuple(slice(s, s + w) for s, w in zip(start, window))
        q = module.query(reference[block].flatten(1, -2)).unflatten(-1, (HEADS, head)).transpose(1, 2)
        k, v = module.key_value(base[block].flatten(1, -2)).unflatten(-1, (2, HEADS, head)).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-2, -1) / head ** 0.5 + bias, dim=-1)
        expected = module.proj((weights @ v).transpose(1, 2).flatten(2))
        torch.testing.assert_close(out[block].flatten(1, -2), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_shifted_windows_do_not_attend_across_the_wrap(ndim):
    """With a shift, the corner voxel 0 wraps into the last window; tokens of that window from the other region
    (the far corner) must not see a change of the base at voxel 0, while voxel 0 itself does."""
    spatial, window, shift = CASES[ndim]
    module = WindowCrossAttention(DIM, HEADS, window, shift)
    base, reference = pair(ndim)
    changed = base.clone()
    changed[(slice(None),) + (0,) * ndim] += 10.0
    before, after = module(base, reference), module(changed, reference)
    far = (slice(None),) + tuple(n - 1 for n in spatial)
    torch.testing.assert_close(after[far], before[far], rtol=0, atol=1e-6)
    corner = (slice(None),) + (0,) * ndim
    assert (after[corner] - before[corner]).abs().max() > 1e-3
    unshifted = WindowCrossAttention(DIM, HEADS, window)
    unshifted.load_state_dict(module.state_dict())
    # sanity: the far corner is in the same rolled window as voxel 0 only because of the shift
    torch.testing.assert_close(unshifted(changed, reference)[far], unshifted(base, reference)[far], rtol=0, atol=0)
