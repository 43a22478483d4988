"""The FFPN network (Chen et al., MICCAI 2023, Sec. 2.1 and Fig. 3) and its contour-to-label-map output.

Backbone + FPN: a torchvision ResNet (random init; pretrained weights are never downloaded) and
``torchvision.ops.FeaturePyramidNetwork`` on its last three stages give P1 (stride 32, semantic), P2 (16) and P3
(8, detailed). P1 and P2 are upsampled to P3's grid ("only to align the scale", Sec. 2.1), the Fourier pyramid.

Heads: one per level, the same architecture (three 3x3 Conv-BN-ReLU, then a 3x3 conv), each predicting for every
anchor its level's share of the Fourier offsets, location offsets and class scores. Harmonics are split across
levels by frequency (Fig. 2c): the lowest harmonics (main scale) on P1, the highest (shape detail) on P3; with N = 7
the split is 1-3 / 4-5 / 6-7. Fourier offsets are concatenated in harmonic order; location offsets and class
scores are averaged over the levels.

In training mode ``forward`` returns the raw maps for Eq. 3. In eval mode it returns segmentation logits for nnU-Net's
predictor: the input is resized to the network size, the best contour per class is decoded (Eq. 2 inverse, then
Eq. 1), scaled back and filled; see :func:`paint_label_logits` for how overlapping classes are resolved.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import anchors as anchor_math
from . import fourier
from .csr import DEFAULT_PROPOSALS, CSRHead, merge_proposals

# Backbone presets: (torchvision constructor name, FPN width). "tiny" keeps CPU tests in milliseconds.
PRESETS = {"resnet18": ("resnet18", 128), "resnet50": ("resnet50", 256), "tiny": ("resnet18", 32)}


def harmonic_split(order: int, levels: int = 3) -> list[list[int]]:
    """Harmonic indices (0-based) per pyramid level, low frequencies on the coarse level P1 (Fig. 2c)."""
    if order < levels:
        raise ValueError(f"FFPN needs at least {levels} harmonics to split over {levels} levels, got {order}")
    return [chunk.tolist() for chunk in np.array_split(np.arange(order), levels)]


def conv_bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True))


class LevelHead(nn.Module):
    """Three 3x3 Conv-BN-ReLU and a 3x3 conv: per anchor, ``4 n`` Fourier offsets, 2 location offsets, C scores."""

    def __init__(self, channels: int, num_anchors: int, num_harmonics: int, num_classes: int):
        super().__init__()
        self.shape = (num_anchors, 4 * num_harmonics, 2, num_classes)
        self.trunk = nn.Sequential(*(conv_bn_relu(channels) for _ in range(3)))
        self.predict = nn.Conv2d(channels, num_anchors * (4 * num_harmonics + 2 + num_classes), 3, padding=1)

    def forward(self, features: torch.Tensor):
        batch, _, height, width = features.shape
        anchors_, fourier_width, _, classes = self.shape
        out = self.predict(self.trunk(features)).view(batch, anchors_, -1, height, width)
        fourier_part, location, scores = out.split([fourier_width, 2, classes], dim=2)
        return fourier_part, location, scores


class FFPN(nn.Module):
    """Fourier Feature Pyramid Network.

    Args:
        in_channels: image channels.
        num_classes: foreground classes (one object each); nnU-Net's background class is not counted.
        anchor_fractions: ``(A, N, 4)`` anchor coefficients as fractions of ``input_size`` (see
            :func:`..anchors.fit_anchors`); stored as a buffer so checkpoints carry them.
        input_size: the square network input (416 in the paper); inputs are resized to it.
        preset: backbone/FPN size, a key of :data:`PRESETS`.
        num_points: contour points ``T`` for decoding.
        refine: add the CSR module (FFPN-R, :mod:`..csr`) on the concatenated Fourier pyramid.
    """

    stride = 8  # P3's stride: the grid all levels are aligned to

    def __init__(self, in_channels: int, num_classes: int, anchor_fractions, input_size: int = 416,
                 preset: str = "resnet18", num_points: int = 64, refine: bool = False):
        super().__init__()
        import torchvision

        if preset not in PRESETS:
            raise ValueError(f"unknown FFPN preset {preset!r}; choose one of {sorted(PRESETS)}")
        if input_size % 32:
            raise ValueError(f"FFPN input_size must be a multiple of 32 (the backbone's stride), got {input_size}")
        anchor_fractions = torch.as_tensor(np.asarray(anchor_fractions), dtype=torch.float32)
        self.register_buffer("anchor_fractions", anchor_fractions)
        self.num_classes, self.input_size, self.num_points = int(num_classes), int(input_size), int(num_points)
        order = anchor_fractions.shape[1]
        self.split = harmonic_split(order)
        backbone_name, width = PRESETS[preset]
        backbone = getattr(torchvision.models, backbone_name)(weights=None)
        if in_channels != 3:
            backbone.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool, backbone.layer1)
        self.stages = nn.ModuleList([backbone.layer2, backbone.layer3, backbone.layer4])
        # BasicBlock (resnet18) ends in conv2, Bottleneck (resnet50) in conv3
        stage_channels = [getattr(stage[-1], "conv3", stage[-1].conv2).out_channels for stage in self.stages]
        self.fpn = torchvision.ops.FeaturePyramidNetwork(stage_channels, width)
        # heads[0] sits on P1 (coarsest) and predicts the lowest harmonics
        self.heads = nn.ModuleList(
            LevelHead(width, len(anchor_fractions), len(harmonics), self.num_classes) for harmonics in self.split)
        self.csr = CSRHead(3 * width, order, self.stride) if refine else None

    def anchors_in_pixels(self) -> torch.Tensor:
        return self.anchor_fractions * self.input_size

    def forward_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs on P3's grid (input already at ``input_size``).

        Returns ``fourier (B, A, N, 4, H, W)`` offsets, ``location (B, A, 2, H, W)``, ``logits (B, A, C, H, W)``
        and, with CSR, ``refine_features (B, 3 * width, H, W)`` (the Fourier pyramid concatenated, Sec. 2.2).
        """
        features = self.stem(x)
        pyramid = {}
        for index, stage in enumerate(self.stages):
            features = stage(features)
            pyramid[f"c{index}"] = features
        p3, p2, p1 = self.fpn(pyramid).values()
        grid = p3.shape[-2:]
        levels = [F.interpolate(p, size=grid, mode="bilinear", align_corners=False) for p in (p1, p2)] + [p3]
        fourier_parts, locations, scores = zip(*(head(level) for head, level in zip(self.heads, levels)))
        batch, num_anchors = x.shape[0], len(self.anchor_fractions)
        fourier_offsets = torch.cat(fourier_parts, dim=2).view(batch, num_anchors, -1, 4, *grid)
        maps = {"fourier": fourier_offsets, "location": torch.stack(locations).mean(0),
                "logits": torch.stack(scores).mean(0)}
        if self.csr is not None:
            maps["refine_features"] = torch.cat(levels, dim=1)
        return maps

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        resized = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        maps = self.forward_maps(resized)
        if self.training:
            return maps
        return self.label_logits(maps, size)

    def decode_top(self, maps: dict[str, torch.Tensor], count: int = 1):
        """Per image and class, the ``count`` highest-scoring anchors' contours (network pixels).

        Returns ``centres (B, C, n, 2)``, ``coefficients (B, C, n, N, 4)``, ``scores (B, C, n)`` (sigmoid).
        """
        fourier_offsets, location, logits = maps["fourier"], maps["location"], maps["logits"]
        batch, num_anchors, _, height, width = location.shape
        flat_logits = logits.permute(0, 2, 1, 3, 4).reshape(batch, self.num_classes, -1)  # (B, C, A*H*W)
        top_logits, best = flat_logits.topk(min(count, flat_logits.shape[-1]), dim=-1)  # (B, C, n)
        anchor_index, cell = best // (height * width), best % (height * width)
        centres = anchor_math.grid_centres(height, width, self.stride).to(location)  # (H*W, 2)
        anchors_px = self.anchors_in_pixels().to(location)
        b = torch.arange(batch, device=location.device)[:, None, None].expand_as(best)
        row, col = cell // width, cell % width
        centre_offsets = location[b, anchor_index, :, row, col]  # (B, C, n, 2)
        coefficient_offsets = fourier_offsets[b, anchor_index, :, :, row, col]  # (B, C, n, N, 4)
        centre, coefficients = anchor_math.decode_offsets(
            centre_offsets, coefficient_offsets, centres[cell], anchors_px[anchor_index])
        return centre, coefficients, torch.sigmoid(top_logits)

    def refined_contours(self, maps: dict[str, torch.Tensor], centres, coefficients, scores):
        """FFPN-R: per image and class, CSR applied to the merged top-n proposals (:meth:`decode_top`).
        Returns ``(centres (B, C, 2), coefficients (B, C, N, 4))``."""
        batch, classes = scores.shape[:2]
        merged = [merge_proposals(centres[b, c], coefficients[b, c], scores[b, c], num_points=self.num_points)
                  for b in range(batch) for c in range(classes)]
        merged_centres = torch.stack([m[0] for m in merged])
        merged_coefficients = torch.stack([m[1] for m in merged])
        image_index = torch.arange(batch, device=scores.device).repeat_interleave(classes)
        offsets = self.csr(maps["refine_features"], image_index, merged_centres, merged_coefficients)
        centre, coefficient = anchor_math.decode_offsets(*offsets, merged_centres, merged_coefficients)
        return centre.view(batch, classes, 2), coefficient.view(batch, classes, *coefficient.shape[1:])

    def decode_best(self, maps: dict[str, torch.Tensor]):
        """Per image and class the final contour: the top proposal (FFPN) or its CSR refinement (FFPN-R).

        Returns ``points (B, C, T, 2)`` and ``scores (B, C)`` (the top proposal's probability).
        """
        # the top-n proposals are sorted by score, so their first one is FFPN's answer
        centres, coefficients, scores = self.decode_top(maps, 1 if self.csr is None else DEFAULT_PROPOSALS)
        centre, coefficient = centres[:, :, 0], coefficients[:, :, 0]
        if self.csr is not None:
            centre, coefficient = self.refined_contours(maps, centres, coefficients, scores)
        return fourier.decode(centre, coefficient, self.num_points), scores[..., 0]

    def label_logits(self, maps: dict[str, torch.Tensor], size) -> torch.Tensor:
        points, scores = self.decode_best(maps)
        scale = torch.tensor([size[1] / self.input_size, size[0] / self.input_size], device=points.device)
        # network pixel centres -> input pixel centres (align_corners=False geometry)
        points = (points + 0.5) * scale.to(points) - 0.5
        return paint_label_logits(points, scores, size)


def inside_polygon(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(..., T, 2)`` closed ``(x, y)`` polygons -> ``(..., height, width)`` bool: pixel centres inside (even-odd
    rule, as ``skimage.draw.polygon2mask``). Scanline form in torch, so eval runs on the model's device in
    ``O(H T + H W)`` memory: per row, the x positions where edges cross it are sorted, and a pixel is inside when an
    odd number of crossings lies left of it."""
    ys = torch.arange(height, device=points.device, dtype=points.dtype)[:, None]  # (H, 1)
    start, end = points[..., None, :, :], points.roll(-1, dims=-2)[..., None, :, :]  # (..., 1, T, 2)
    x0, y0, x1, y1 = start[..., 0], start[..., 1], end[..., 0], end[..., 1]
    crosses = (y0 > ys) != (y1 > ys)  # (..., H, T)
    run = torch.where(crosses, y1 - y0, torch.ones_like(y1))
    crossing_x = torch.where(crosses, x0 + (ys - y0) * (x1 - x0) / run, torch.full_like(run, float("inf")))
    crossing_x = crossing_x.sort(dim=-1).values.contiguous()
    xs = torch.arange(width, device=points.device, dtype=points.dtype).expand(*crossing_x.shape[:-1], width)
    return torch.searchsorted(crossing_x, xs.contiguous()) % 2 == 1


def paint_label_logits(points: torch.Tensor, scores: torch.Tensor, size) -> torch.Tensor:
    """Segmentation logits ``(B, 1 + C, H, W)`` from one filled contour per class.

    The ring rule (CAMUS myocardium around the left ventricle): each class is trained on its *filled* outline, so
    the outline of a ring encloses the classes inside it. Painting classes from the largest filled area to the
    smallest lets inner classes overwrite the ring's middle. Logits are the one-hot label map, so argmax gives it
    back and softmax probabilities still average sensibly across folds. A class whose score is below 0.5 (no object
    found) is not painted.
    """
    height, width = int(size[0]), int(size[1])
    batch, classes = scores.shape
    inside = inside_polygon(points, height, width) & (scores[..., None, None] >= 0.5)  # (B, C, H, W)
    area = inside.flatten(2).sum(-1)
    label = torch.zeros(batch, height, width, dtype=torch.long, device=points.device)
    for image in range(batch):
        for cls in torch.argsort(area[image], descending=True, stable=True).tolist():
            label[image][inside[image, cls]] = cls + 1
    return F.one_hot(label, classes + 1).permute(0, 3, 1, 2).to(points.dtype)
