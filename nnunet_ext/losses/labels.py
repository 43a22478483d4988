"""nnU-Net's segmentation target as the losses of this package read it."""
from __future__ import annotations

import torch


def label_map_target(logits: torch.Tensor, target: torch.Tensor,
                     ignore_label: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(labels, valid)`` of an nnU-Net target for ``logits`` (B, C, *spatial).

    ``target`` is nnU-Net's (B, 1, *spatial) label map (any dtype; (B, *spatial) is accepted too). ``labels`` is
    (B, 1, *spatial) long with ignored pixels set to background; ``valid`` is the mask of not-ignored pixels, or None
    without an ignore label. A target of another shape raises ValueError.
    """
    if target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)
    if target.ndim != logits.ndim or target.shape[1] != 1 or target.shape[2:] != logits.shape[2:] \
            or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be (B, 1, *spatial) labels matching logits {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    labels = target.long()
    if ignore_label is None:
        return labels, None
    valid = labels != ignore_label
    return torch.where(valid, labels, torch.zeros_like(labels)), valid
