"""Atlas-based segmentation with a registration network, as one ``nn.Module`` nnU-Net's predictor can run.

:class:`AtlasSegmenter` holds a registration network (TM-DCA, or the ConvNet baseline) and an :class:`AtlasBank`
of labelled atlases (the fold's training cases, preprocessed exactly as nnU-Net preprocesses any input). Its
``forward`` has two modes:

* ``forward(moving, fixed)``: the registration network's displacement (training goes through this call, so DDP sees
  the forward pass);
* ``forward(x)``: what ``nnUNetv2_predict`` calls on a patch. Every atlas is registered to ``x`` (atlas = moving,
  ``x`` = fixed), its one-hot labels are warped (linear interpolation of the one-hot maps, border values outside), and
  the warped maps are fused into class probabilities ``p``; the output is ``log p``, so nnU-Net's softmax returns
  ``p`` and its argmax, export, evaluation and fold ensembling (averaging ``p`` over folds) apply unchanged.

Fusion (:data:`FUSIONS`):

* ``vote``: majority vote, ``p_k(x) = 1/N sum_a onehot_k(L_a(phi_a(x)))`` (the soft vote of the linearly warped
  one-hot maps; its argmax is the majority label away from label boundaries);
* ``similarity``: locally weighted voting (Artaechevarria et al., IEEE TMI 2009), each atlas weighted per voxel by
  the squared local correlation ``cc_a(x)`` between ``x`` and the warped atlas image (VoxelMorph's NCC map over 9^n
  windows, :func:`~.register.local_ncc_map`, averaged over channels) plus ``1e-3`` so voxels where no atlas
  correlates fall back to the plain vote.

Geometry. nnU-Net crops every image to its nonzero bounding box before anything else, and its predictor pads an
input smaller than the patch to the patch, centred (``pad_nd_image``: ``diff // 2`` before). The atlases are stored
padded (or cropped) the same way to the patch size, so an atlas and a new image meet aligned at the centres of their
nonzero boxes: a translation pre-alignment, which is right for images in a common (e.g. affinely normalised) space
up to the difference of their boxes. The plans must make the patch cover whole images (``WholeVolumePlanner``):
with a sliding window, atlas and tile would not correspond.

Checkpoints: the bank's buffers are part of ``state_dict``; a bank built empty (``build_network_architecture``,
what the predictor builds) takes the shape of the stored atlases when the checkpoint is loaded.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FUSIONS = ("vote", "similarity")
SIMILARITY_FLOOR = 1e-3  # added to the local-correlation weights (see module docstring)
PROBABILITY_FLOOR = 1e-6  # log(0) guard of the returned log-probabilities


def build_registration_network(name: str, image_size: Sequence[int], preset: str, in_channels: int = 1,
                               diffeomorphic: bool = False) -> nn.Module:
    """``tmdca`` (:class:`~.network.TMDCA`) or ``convnet`` (the VoxelMorph-style baseline with TM-DCA's decoder)."""
    from nnunet_ext.methods.dca.convnet import build_network

    return build_network(name, image_size, preset, diffeomorphic=diffeomorphic, in_channels=in_channels)


def fit_to_shape(x: torch.Tensor, shape: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """Pad (``value``) or crop the trailing ``len(shape)`` axes of ``x`` to ``shape``, centred as nnU-Net's
    ``pad_nd_image``: ``diff // 2`` before, the rest after (cropping removes ``diff // 2`` before)."""
    spatial = x.shape[x.dim() - len(shape):]
    pad, slices = [], [slice(None)] * (x.dim() - len(shape))
    for have, want in zip(spatial, shape):
        diff = int(want) - int(have)
        before = abs(diff) // 2
        pad.append((before, diff - before) if diff > 0 else (0, 0))
        slices.append(slice(before, before + int(want)) if diff < 0 else slice(None))
    x = x[tuple(slices)]
    flat = [p for pair in reversed(pad) for p in pair]  # F.pad: last axis first
    return F.pad(x, flat, value=value) if any(flat) else x


class AtlasBank(nn.Module):
    """Atlas images ``(N, C, *S)`` (float32, preprocessed) and label maps ``(N, 1, *S)`` (int16) as buffers."""

    def __init__(self, ndim: int, in_channels: int):
        super().__init__()
        empty = (0, in_channels) + (1,) * ndim
        self.register_buffer("images", torch.zeros(empty))
        self.register_buffer("labels", torch.zeros((0, 1) + (1,) * ndim, dtype=torch.int16))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def fill(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Replace the atlases (moved to this bank's device)."""
        if images.dim() != self.images.dim() or images.shape[1] != self.images.shape[1]:
            raise ValueError(f"atlas images {tuple(images.shape)} do not fit the bank {tuple(self.images.shape)}")
        if labels.shape != (images.shape[0], 1, *images.shape[2:]):
            raise ValueError(f"atlas labels {tuple(labels.shape)} do not match images {tuple(images.shape)}")
        device = self.images.device
        self.images = images.to(device=device, dtype=torch.float32).contiguous()
        self.labels = labels.to(device=device, dtype=torch.int16).contiguous()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # a bank built empty (the predictor's) takes the stored atlases' shape before the values are copied
        for name in ("images", "labels"):
            stored = state_dict.get(prefix + name)
            if stored is not None and stored.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class AtlasSegmenter(nn.Module):
    """Registration network + atlas bank (module docstring).

    Args:
        registration: maps ``(moving, fixed)`` to a voxel displacement ``(B, ndim, *spatial)`` (pull-back).
        num_classes: segmentation heads of the dataset (labels ``0..K-1``).
        fusion: one of :data:`FUSIONS`.
        atlas_batch: atlases registered per forward pass at prediction (memory vs speed).
    """

    def __init__(self, registration: nn.Module, num_classes: int, fusion: str = "vote", atlas_batch: int = 1):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of {FUSIONS}")
        self.registration = registration
        self.ndim = int(registration.ndim)
        self.in_channels = int(registration.in_channels)
        self.num_classes = int(num_classes)
        self.fusion = fusion
        self.atlas_batch = max(1, int(atlas_batch))
        self.atlases = AtlasBank(self.ndim, self.in_channels)

    def forward(self, x: torch.Tensor, fixed: torch.Tensor | None = None) -> torch.Tensor:
        if fixed is not None:
            return self.registration(x, fixed)
        return self.segment(x)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Log fused label probabilities ``(B, K, *spatial)`` of ``x`` ``(B, C, *spatial)``; zeros (no preference,
        argmax background) with an empty bank."""
        spatial = tuple(x.shape[2:])
        if len(self.atlases) == 0:
            return x.new_zeros((x.shape[0], self.num_classes, *spatial))
        outputs = []
        for image in x.split(1):
            total = x.new_zeros((1, self.num_classes, *spatial), dtype=torch.float32)
            weight_sum = x.new_zeros((1, 1, *spatial), dtype=torch.float32)
            for start in range(0, len(self.atlases), self.atlas_batch):
                atlas_images = fit_to_shape(self.atlases.images[start:start + self.atlas_batch], spatial)
                atlas_labels = fit_to_shape(self.atlases.labels[start:start + self.atlas_batch], spatial)
                probabilities, weights = self._warped_votes(atlas_images, atlas_labels, image)
                total += (probabilities * weights).sum(0, keepdim=True)
                weight_sum += weights.sum(0, keepdim=True)
            outputs.append(torch.log((total / weight_sum).clamp_min(PROBABILITY_FLOOR)))
        return torch.cat(outputs).to(x.dtype)

    def _warped_votes(self, atlas_images: torch.Tensor, atlas_labels: torch.Tensor, image: torch.Tensor):
        from nnunet_ext.methods.dca.register import local_ncc_map
        from nnunet_ext.methods.dca.transform import warp

        fixed = image.expand(len(atlas_images), *image.shape[1:]).to(atlas_images.dtype)
        displacement = self.registration(atlas_images, fixed).float()
        one_hot = F.one_hot(atlas_labels[:, 0].long().clamp(0, self.num_classes - 1), self.num_classes)
        one_hot = one_hot.movedim(-1, 1).float()
        probabilities = warp(one_hot, displacement, "bilinear", "border")
        if self.fusion == "vote":
            weights = probabilities.new_ones((len(atlas_images), 1, *probabilities.shape[2:]))
        else:
            warped_images = warp(atlas_images.float(), displacement, "bilinear", "zeros")
            weights = local_ncc_map(fixed.float(), warped_images).mean(1, keepdim=True) + SIMILARITY_FLOOR
        return probabilities, weights
