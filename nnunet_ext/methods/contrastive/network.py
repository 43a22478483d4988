"""Networks of the tumour/background contrastive method (Zhang et al., breast DCE-MRI, Sect. 2, Fig. 2).

- :class:`ContrastivePretrainNet` (Fig. 2b): encoder E (the RU-Net encoder: nnU-Net's ``ResidualEncoder`` with the
  plans' geometry) -> global average pooling of its deepest level -> SimSiam projection MLP (three fully connected
  layers with BatchNorm, output ``projection_dim``) -> z; prediction MLP P (bottleneck ``predictor_dim``) -> p.
  SimSiam's sizes are 2048 / 512; the paper gives none of its own.
- :class:`ContrastiveFusionUNet` (Fig. 2c-d): the pretrained encoder twice, E1 frozen and E2 trainable; at the
  ``attention_levels`` lowest-resolution levels a non-local cross-attention block lets E2's features (queries) attend
  to E1's (keys and values) and adds the result back (residual); nnU-Net's U-Net decoder reads E2's levels.
  ``frozen_encoder=None`` gives the plain RU-Net (Table 1 rows 1-3: no or fine-tuned pretraining).

Both read the input channels ``input_channels`` of the nnU-Net batch (the paper's post-contrast and subtraction
images). A pretraining network does not segment: called in eval mode (what ``nnUNetv2_predict`` does) it raises.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

PRETRAINING_ONLY = ("{owner} is a pretraining network: it embeds patches and does not segment. Train "
                    "TumorBgFusionTrainer (or TumorBgInitTrainer, SimSiamInitTrainer) with its checkpoint and "
                    "predict with that")


def _mlp(sizes: Sequence[int], last_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        normalised = not last or last_norm
        layers.append(nn.Linear(n_in, n_out, bias=not normalised))  # BatchNorm's shift replaces the bias
        if normalised:
            layers.append(nn.BatchNorm1d(n_out))
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ContrastivePretrainNet(nn.Module):
    """Encoder + projection MLP (z) + prediction MLP (p) for Eq. 1 and SimSiam pretraining."""

    def __init__(self, encoder: nn.Module, input_channels: Sequence[int], projection_dim: int = 2048,
                 predictor_dim: int = 512, owner: str = "TumorBgPretrainTrainer"):
        super().__init__()
        self.encoder = encoder
        self.input_channels = list(input_channels)
        width = encoder.output_channels[-1]
        # SimSiam: projector fc-BN-ReLU, fc-BN-ReLU, fc-BN; predictor fc-BN-ReLU, fc (bottleneck)
        self.projector = _mlp([width, projection_dim, projection_dim, projection_dim], last_norm=True)
        self.predictor = _mlp([projection_dim, predictor_dim, projection_dim], last_norm=False)
        self.owner = owner

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, p) of patches ``x`` (all channels of the nnU-Net batch; the encoder reads ``input_channels``)."""
        features = self.encoder(x[:, self.input_channels])[-1]
        z = self.projector(features.flatten(2).mean(2))
        return z, self.predictor(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            raise RuntimeError(PRETRAINING_ONLY.format(owner=self.owner))
        return self.embed(x)


class CrossAttention(nn.Module):
    """Non-local cross-attention (embedded Gaussian): queries from the trainable encoder's features ``x``, keys and
    values from the frozen encoder's ``y`` (1x1x1 convolutions), ``x + W(softmax(q^T k) v)``; W starts at zero so
    the block starts as the identity (the non-local block's initialisation)."""

    def __init__(self, channels: int, conv_op: type[nn.Module], reduction: int = 2):
        super().__init__()
        inner = max(channels // reduction, 1)
        self.query, self.key, self.value = (conv_op(channels, inner, 1) for _ in range(3))
        self.out = conv_op(inner, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def attention(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, N, N) attention of the N positions of ``x`` over the N positions of ``y``; rows sum to 1."""
        q = self.query(x).flatten(2).transpose(1, 2)
        k = self.key(y).flatten(2)
        return torch.softmax(torch.bmm(q, k).float(), dim=-1).to(q.dtype)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        v = self.value(y).flatten(2).transpose(1, 2)
        attended = torch.bmm(self.attention(x, y), v).transpose(1, 2).reshape(x.shape[0], -1, *x.shape[2:])
        return x + self.out(attended)


class ContrastiveFusionUNet(nn.Module):
    """E2 (trainable) + frozen E1 fused by cross-attention at the lowest levels, U-Net decoder on E2's levels."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, input_channels: Sequence[int], fuse: bool = True,
                 attention_levels: int = 2):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.input_channels = list(input_channels)
        self.frozen_encoder = copy.deepcopy(encoder).requires_grad_(False).eval() if fuse else None
        levels = len(encoder.output_channels)
        self.attention_levels = list(range(max(levels - attention_levels, 0), levels)) if fuse else []
        self.attention = nn.ModuleList(CrossAttention(encoder.output_channels[k], encoder.conv_op)
                                       for k in self.attention_levels)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_encoder is not None:
            self.frozen_encoder.eval()  # frozen: its normalisation keeps the pretraining statistics
        return self

    def load_encoder_state(self, state_dict: dict) -> None:
        """The pretrained encoder's weights into E2 and, when fused, into the frozen E1."""
        self.encoder.load_state_dict(state_dict)
        if self.frozen_encoder is not None:
            self.frozen_encoder.load_state_dict(state_dict)

    def trainable_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith("frozen_encoder.")]

    def forward(self, x: torch.Tensor):
        x = x[:, self.input_channels]
        skips = list(self.encoder(x))
        if self.frozen_encoder is not None:
            with torch.no_grad():
                frozen = self.frozen_encoder(x)
            for block, level in zip(self.attention, self.attention_levels):
                skips[level] = block(skips[level], frozen[level])
        return self.decoder(skips)


def encoder_state(pretrain_state: dict) -> dict:
    """The encoder's weights inside a :class:`ContrastivePretrainNet` state dict (keys without ``encoder.``)."""
    return {key[len("encoder."):]: value for key, value in pretrain_state.items() if key.startswith("encoder.")}
