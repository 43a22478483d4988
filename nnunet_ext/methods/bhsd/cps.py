"""Cross pseudo supervision (CPS; Chen, Yuan, Zeng, Wang, CVPR 2021), the best semi-supervised row of BHSD Table 4.

Two networks of the same architecture, initialised differently, see the same images. Each one's hard prediction
(argmax, no gradient) is the cross-entropy target of the other (CPS Sect. 3, "cross pseudo supervision loss")::

    L_cps = CE(p_a, argmax p_b) + CE(p_b, argmax p_a)        (mean over voxels of labeled and unlabeled images)
    L     = L_sup(a) + L_sup(b) + lambda(t) * L_cps

``L_sup`` is nnU-Net's Dice + cross-entropy on labeled images (deep supervision included). The CPS term uses each
network's full-resolution output only. ``lambda(t)`` ramps up with the sigmoid schedule of Laine & Aila (ICLR 2017),
``lambda_max * exp(-5 (1 - t / T)^2)`` for ``t < T``, as semi-supervised segmentation code commonly does: early
pseudo labels are noise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def cps_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """``CE(a, argmax b) + CE(b, argmax a)`` for logits of shape (batch, classes, *spatial)."""
    pseudo_a = logits_a.detach().argmax(1)
    pseudo_b = logits_b.detach().argmax(1)
    return F.cross_entropy(logits_a, pseudo_b) + F.cross_entropy(logits_b, pseudo_a)


def sigmoid_rampup(progress: float, rampup: float) -> float:
    """``exp(-5 (1 - progress / rampup)^2)`` clipped to [0, 1]; 1 from ``progress >= rampup`` on."""
    if rampup <= 0:
        return 1.0
    phase = 1.0 - min(max(progress, 0.0), rampup) / rampup
    return float(math.exp(-5.0 * phase * phase))


class NetworkPair(nn.Module):
    """The two CPS networks in one module (one checkpoint). ``forward(x)`` is network ``a``'s: nnU-Net's predictor
    and validation use network ``a`` (CPS uses one of its two networks at test time). ``forward(x, both=True)``
    returns both outputs through one call, so a DistributedDataParallel wrapper sees (and syncs) both networks."""

    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, x: torch.Tensor, both: bool = False):
        if both:
            return self.a(x), self.b(x)
        return self.a(x)
