"""Tests of nnunet_ext.losses.labels: nnU-Net targets as the losses read them."""
import pytest
import torch

from nnunet_ext.losses.labels import label_map_target


@pytest.mark.parametrize("spatial", [(6, 5), (3, 4, 5)])
@pytest.mark.parametrize("squeezed", [False, True])
def test_labels_and_valid_mask(spatial, squeezed):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, *spatial)
    target = torch.randint(0, 4, (2, 1, *spatial)).float()  # 3 = ignore
    given = target[:, 0] if squeezed else target
    labels, valid = label_map_target(logits, given, ignore_label=3)
    assert labels.shape == (2, 1, *spatial) and labels.dtype == torch.long
    assert torch.equal(valid, target != 3)
    assert torch.equal(labels, torch.where(target == 3, 0, target).long())
    plain, none = label_map_target(logits, given, ignore_label=None)
    assert none is None and torch.equal(plain, target.long())


@pytest.mark.parametrize("shape", [(2, 2, 6, 5), (1, 1, 6, 5), (2, 1, 6, 4), (2, 1, 1, 6, 5)])
def test_mismatched_targets_are_refused(shape):
    with pytest.raises(ValueError, match=r"target must be \(B, 1, \*spatial\) labels matching logits"):
        label_map_target(torch.zeros(2, 3, 6, 5), torch.zeros(shape), None)
