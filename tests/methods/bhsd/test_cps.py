"""Cross pseudo supervision (CPS, Chen et al. CVPR 2021, Sect. 3) against hand-computed references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nnunet_ext.methods.bhsd.cps import NetworkPair, cps_loss, sigmoid_rampup


def _reference_ce(logits: np.ndarray, target: np.ndarray) -> float:
    """Mean over voxels of -log softmax(logits)[target], in float64 numpy."""
    shifted = logits - logits.max(1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    picked = np.take_along_axis(log_softmax, target[:, None], 1)
    return float(-picked.mean())


@pytest.mark.parametrize("classes,spatial", [(2, (4, 5)), (6, (3, 4, 5))])
def test_cps_loss_is_cross_entropy_against_the_other_networks_argmax(classes, spatial):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, classes, *spatial, generator=g, dtype=torch.float64)
    b = torch.randn(2, classes, *spatial, generator=g, dtype=torch.float64)
    expected = (_reference_ce(a.numpy(), b.numpy().argmax(1)) + _reference_ce(b.numpy(), a.numpy().argmax(1)))
    assert cps_loss(a, b).item() == pytest.approx(expected, rel=1e-10)


def test_pseudo_labels_are_hard_and_carry_no_gradient_and_both_networks_get_one():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    cps_loss(a, b).backward()
    n = 16  # voxels
    # d CE(a, y) / d a = (softmax(a) - onehot(y)) / N with y = argmax b, and nothing flows through y
    for logits, other in ((a, b), (b, a)):
        onehot = torch.nn.functional.one_hot(other.detach().argmax(1), 3).permute(0, 3, 1, 2)
        expected = (torch.softmax(logits.detach(), 1) - onehot) / n
        assert torch.allclose(logits.grad, expected, atol=1e-12)
        assert logits.grad.abs().sum() > 0


def test_identical_networks_give_the_plain_self_training_loss():
    logits = torch.tensor([[[2.0, 0.0], [-1.0, 4.0]]])  # (1, 2 classes, 2 voxels): margins 3 and 4
    # argmax is the class with the larger logit, so each term is -log softmax of the winner = log(1 + e^-margin)
    winner = [math.log(1 + math.exp(-3.0)), math.log(1 + math.exp(-4.0))]
    assert cps_loss(logits, logits).item() == pytest.approx(2 * np.mean(winner), rel=1e-6)


@pytest.mark.parametrize("progress,rampup,expected", [
    (0.0, 0.4, math.exp(-5.0)), (0.2, 0.4, math.exp(-1.25)), (0.4, 0.4, 1.0), (0.9, 0.4, 1.0),
    (-1.0, 0.4, math.exp(-5.0)), (0.3, 0.0, 1.0)])
def test_sigmoid_rampup_matches_laine_and_aila(progress, rampup, expected):
    assert sigmoid_rampup(progress, rampup) == pytest.approx(expected)


def test_network_pair_predicts_with_network_a_and_returns_both_on_request():
    torch.manual_seed(0)
    a, b = torch.nn.Conv2d(1, 2, 1), torch.nn.Conv2d(1, 2, 1)
    pair = NetworkPair(a, b)
    x = torch.randn(1, 1, 3, 3)
    assert torch.equal(pair(x), a(x))
    out_a, out_b = pair(x, both=True)
    assert torch.equal(out_a, a(x)) and torch.equal(out_b, b(x)) and not torch.equal(out_a, out_b)
