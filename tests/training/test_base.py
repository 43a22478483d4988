"""Helpers of nnunet_ext.training.base (the trainers themselves: tests/test_trainer_conformance.py)."""
import pytest
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


@pytest.mark.parametrize("max_steps", [4, 10, 1000])
def test_cosine_schedule_matches_the_closed_form(max_steps):
    import math

    from nnunet_ext.training.base import CosineLRScheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = CosineLRScheduler(optimizer, 0.01, max_steps)
    for step in (0, max_steps // 2, max_steps - 1, max_steps):
        scheduler.step(step)  # as nnU-Net steps it: lr_scheduler.step(current_epoch)
        expected = 0.005 * (1 + math.cos(math.pi * step / max_steps))
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    counting = CosineLRScheduler(optimizer, 0.01, max_steps)  # construction sets step 0
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    counting.step()  # without an argument: the next step
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005 * (1 + math.cos(math.pi / max_steps)))


@pytest.mark.parametrize("spatial_dims,patch,refused", [(2, [32, 32], False), (2, [16, 32, 32], True),
                                                        (3, [16, 32, 32], False), (3, [32, 32], True),
                                                        (None, [32, 32], False), (None, [16, 32, 32], False)])
def test_patch_dimensions_of_the_other_kind_are_refused(spatial_dims, patch, refused):
    from nnunet_ext.training.base import check_patch_dimensions

    if refused:
        with pytest.raises(RuntimeError, match=rf"XTrainer is {spatial_dims}D: train it with .* not 'cfg'"):
            check_patch_dimensions("XTrainer", spatial_dims, patch, "cfg")
    else:
        check_patch_dimensions("XTrainer", spatial_dims, patch, "cfg")


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), (" T ", True), ("0", False), ("", False),
                                            ("yes", False), (None, False)])
def test_env_flag(monkeypatch, value, expected):
    from nnunet_ext.training.base import env_flag

    if value is None:
        monkeypatch.delenv("NNUNET_EXT_TEST_FLAG", raising=False)
    else:
        monkeypatch.setenv("NNUNET_EXT_TEST_FLAG", value)
    assert env_flag("NNUNET_EXT_TEST_FLAG") is expected
