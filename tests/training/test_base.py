"""Helpers of nnunet_ext.training.base (the trainers themselves: tests/test_trainer_conformance.py)."""
import torch


def test_hard_label_counts_match_sklearns_confusion_matrix():
    from sklearn.metrics import confusion_matrix

    from nnunet_ext.training.base import hard_label_counts

    generator = torch.Generator().manual_seed(0)
    predicted, truth = torch.randint(0, 4, (2, 5, 6, 7), generator=generator), torch.randint(0, 4, (2, 5, 6, 7),
                                                                                           generator=generator)
    matrix = confusion_matrix(truth.flatten().numpy(), predicted.flatten().numpy(), labels=range(4))
    tp, fp, fn = hard_label_counts(predicted, truth, range(1, 4))
    assert tp.tolist() == [matrix[c, c] for c in range(1, 4)]
    assert fp.tolist() == [matrix[:, c].sum() - matrix[c, c] for c in range(1, 4)]
    assert fn.tolist() == [matrix[c, :].sum() - matrix[c, c] for c in range(1, 4)]
