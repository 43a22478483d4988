"""Pieces of :mod:`nnunet_ext.methods.dca.trainers` that need no nnU-Net dataset (the trainer itself is run by the
conformance suite and the integration test)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_ext.methods.dca.trainers import pair_terms, select_atlases

KEYS = [f"case_{i:04d}" for i in range(10)]


def test_all_training_cases_by_default():
    assert select_atlases(list(reversed(KEYS)), None, 0) == KEYS
    assert select_atlases(KEYS, " ", 0) == KEYS


def test_a_number_picks_a_seeded_subset_in_case_order():
    first = select_atlases(KEYS, "3", seed=0)
    assert len(first) == 3 and first == sorted(first) and set(first) <= set(KEYS)
    assert first == select_atlases(KEYS, "3", seed=0)
    assert any(select_atlases(KEYS, "3", seed=s) != first for s in range(1, 6))
    assert select_atlases(KEYS, "30", seed=0) == KEYS


def test_a_list_names_training_cases():
    assert select_atlases(KEYS, "case_0003, case_0001", 0) == ["case_0003", "case_0001"]
    with pytest.raises(ValueError, match="case_0042 not among the fold's training cases"):
        select_atlases(KEYS, "case_0001,case_0042", 0)
    with pytest.raises(ValueError, match="at least one atlas"):
        select_atlases(KEYS, "0", 0)


class ShiftField(nn.Module):
    """Predicts a constant displacement (voxels) along the last axis, one value per batch item."""

    def __init__(self, *shifts: float):
        super().__init__()
        self.shifts = shifts

    def forward(self, moving, fixed):
        field = torch.zeros((moving.shape[0], moving.dim() - 2, *moving.shape[2:]))
        for i in range(moving.shape[0]):
            field[i, -1] = self.shifts[i % len(self.shifts)]
        return field


def _blob_batch(offsets, shape=(12, 12, 16)):
    z, y, x = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    images, labels = [], []
    for offset in offsets:
        distance = ((z - 6) ** 2 + (y - 6) ** 2 + (x - 6 - offset) ** 2).sqrt()
        images.append(torch.exp(-(distance / 3) ** 2))
        labels.append((distance < 3).long())
    return torch.stack(images)[:, None], torch.stack(labels)[:, None]


def test_pair_terms_reward_the_field_that_aligns_the_pairs():
    # batch [blob at x=6, blob at x=8]; pairs (moving -> fixed): 1 -> 0 and 0 -> 1. The pull displacement
    # warped(x) = moving(x + u) aligns them with u = +2 and u = -2.
    data, labels = _blob_batch([0, 2])
    aligned, displacement = pair_terms(ShiftField(2.0, -2.0), data, labels, 2, 9, False)
    identity, _ = pair_terms(ShiftField(0.0), data, labels, 2, 9, False)
    wrong_way, _ = pair_terms(ShiftField(-2.0, 2.0), data, labels, 2, 9, False)
    assert displacement.shape == (2, 3, 12, 12, 16)
    assert set(aligned) == {"ncc", "diffusion", "dice"}
    assert aligned["diffusion"] == 0  # constant fields are not penalised
    assert aligned["dice"] == pytest.approx(0.0, abs=1e-6)  # integer shifts: the one-hot maps land exactly
    assert aligned["dice"] < identity["dice"] < wrong_way["dice"]
    assert aligned["ncc"] < identity["ncc"] < wrong_way["ncc"]


def test_pair_terms_without_foreground_classes_have_no_dice():
    data, labels = _blob_batch([0, 1])
    terms, _ = pair_terms(ShiftField(0.0), data, labels * 0, 1, 9, False)
    assert "dice" not in terms
