"""Atlas bank, centred fitting and label fusion of :mod:`nnunet_ext.methods.dca.atlas`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_ext.methods.dca.atlas import (AtlasBank, AtlasSegmenter, build_registration_network, fit_to_shape)


class ZeroField(nn.Module):
    """A registration network that predicts the identity (zero displacement)."""

    def __init__(self, ndim: int = 3, in_channels: int = 1):
        super().__init__()
        self.ndim, self.in_channels = ndim, in_channels
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, moving, fixed):
        return self.scale * torch.zeros((moving.shape[0], self.ndim, *moving.shape[2:]))


@pytest.mark.parametrize("have,want", [((5, 6, 7), (8, 8, 8)), ((9, 7, 6), (6, 7, 9)), ((4, 5), (7, 4))])
def test_fit_to_shape_pads_like_nnunet_and_crops_centred(have, want):
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    x = torch.arange(int(np.prod(have)), dtype=torch.float32).reshape(1, 1, *have) + 1
    fitted = fit_to_shape(x, want)
    assert tuple(fitted.shape[2:]) == want
    # nnU-Net's predictor pads (torch tensors) with pad_nd_image: our padding must put the image where it puts it
    padded = pad_nd_image(x, [max(h, w) for h, w in zip(have, want)], "constant", {"value": 0}).numpy()
    starts = [(p - w) // 2 for p, w in zip(padded.shape[2:], want)]
    expected = padded[(slice(None), slice(None)) + tuple(slice(s, s + w) for s, w in zip(starts, want))]
    np.testing.assert_array_equal(fitted.numpy(), expected)


def test_empty_bank_takes_the_stored_shape_when_a_checkpoint_loads():
    source = AtlasSegmenter(ZeroField(), num_classes=3)
    images = torch.randn(2, 1, 4, 5, 6)
    labels = torch.randint(0, 3, (2, 1, 4, 5, 6))
    source.atlases.fill(images, labels)
    fresh = AtlasSegmenter(ZeroField(), num_classes=3)
    assert len(fresh.atlases) == 0
    fresh.load_state_dict(source.state_dict())  # strict
    assert len(fresh.atlases) == 2 and fresh.atlases.labels.dtype == torch.int16
    torch.testing.assert_close(fresh.atlases.images, images)
    assert torch.equal(fresh.atlases.labels.long(), labels)


def test_bank_refuses_mismatched_atlases():
    bank = AtlasBank(ndim=3, in_channels=2)
    with pytest.raises(ValueError, match="do not fit the bank"):
        bank.fill(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="do not match images"):
        bank.fill(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 1, 4, 4, 5))


def test_empty_bank_predicts_no_preference():
    model = AtlasSegmenter(ZeroField(), num_classes=4)
    out = model(torch.randn(2, 1, 6, 6, 6))
    assert out.shape == (2, 4, 6, 6, 6) and not out.any()


def test_two_argument_call_is_the_registration():
    model = AtlasSegmenter(ZeroField(), num_classes=2)
    moving, fixed = torch.randn(1, 1, 4, 4, 4), torch.randn(1, 1, 4, 4, 4)
    assert model(moving, fixed).shape == (1, 3, 4, 4, 4)


def _label_maps(shape=(6, 8, 8)):
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 3, (1, 1, *shape), generator=generator) for _ in range(3)]


def test_vote_returns_the_mean_one_hot_and_the_majority_label():
    maps = _label_maps()
    model = AtlasSegmenter(ZeroField(), num_classes=3, fusion="vote", atlas_batch=2)
    model.atlases.fill(torch.randn(3, 1, 6, 8, 8), torch.cat(maps))
    probabilities = model(torch.randn(1, 1, 6, 8, 8)).softmax(1)
    expected = torch.stack([nn.functional.one_hot(m[0, 0], 3).movedim(-1, 0).float() for m in maps]).mean(0)
    torch.testing.assert_close(probabilities[0], expected, atol=1e-5, rtol=0)


def test_vote_fits_atlases_to_the_input_size_centred():
    labels = torch.zeros(1, 1, 6, 6, 6, dtype=torch.long)
    labels[0, 0, 2:4, 2:4, 2:4] = 1
    model = AtlasSegmenter(ZeroField(), num_classes=2)
    model.atlases.fill(torch.zeros(1, 1, 6, 6, 6), labels)
    prediction = model(torch.zeros(1, 1, 10, 8, 6)).argmax(1)[0]
    assert prediction.sum() == 8 and prediction[4:6, 3:5, 2:4].all()


def test_similarity_fusion_prefers_the_atlas_that_looks_like_the_image():
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(1, 1, 12, 12, 12, generator=generator)
    unrelated = torch.randn(1, 1, 12, 12, 12, generator=generator)
    labels = torch.stack([torch.ones(1, 12, 12, 12), torch.full((1, 12, 12, 12), 2)]).long()
    for fusion, expected in (("vote", None), ("similarity", 1)):
        model = AtlasSegmenter(ZeroField(), num_classes=3, fusion=fusion)
        model.atlases.fill(torch.cat([image, unrelated]), labels)
        probabilities = model(image).softmax(1)[0]
        if expected is None:  # one vote each: a tie
            torch.testing.assert_close(probabilities[1], probabilities[2])
        else:
            assert (probabilities[expected] > 0.9).float().mean() > 0.95


def test_unknown_fusion_and_network_are_refused():
    with pytest.raises(ValueError, match="unknown fusion"):
        AtlasSegmenter(ZeroField(), 2, fusion="staple")
    with pytest.raises(ValueError, match="unknown registration network"):
        build_registration_network("demons", (8, 8, 8), "small")


@pytest.mark.parametrize("ndim", [2, 3])
def test_tmdca_segmenter_runs_end_to_end(ndim):
    shape = (16, 16, 16)[:ndim]
    torch.manual_seed(0)
    network = build_registration_network("tmdca", shape, "small", in_channels=2)
    model = AtlasSegmenter(network, num_classes=3).eval()
    model.atlases.fill(torch.randn(2, 2, *shape), torch.randint(0, 3, (2, 1, *shape)))
    with torch.no_grad():
        out = model(torch.randn(1, 2, *shape))
    assert out.shape == (1, 3, *shape) and torch.isfinite(out).all()
