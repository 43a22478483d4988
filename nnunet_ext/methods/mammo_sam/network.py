"""Mammo-SAM network (Xiong et al., MICCAI 2023): frozen SAM image encoder, multi-scale adapters, multi-level decoder.

- Encoder: ``segment_anything``'s :class:`ImageEncoderViT`, built exactly as ``build_sam_vit_{b,l,h}`` builds it and
  stored as ``self.image_encoder``, so its parameter names are SAM's (``image_encoder.blocks.0.attn.qkv.weight``) and
  a SAM checkpoint loads without renaming (:mod:`.weights`). Frozen, neck included.
- Multi-scale adapter (Sect. 2.1, Fig. 2b), inserted before every transformer block as ``x = x + MSA(x)``:
  1x1 Conv c -> c/4; four parallel 3x3 Conv with dilation 1, 2, 3, 4, c/4 -> c/16 each; concatenation (c/4);
  1x1 Conv -> c. Every "Conv" is Conv-LayerNorm-GELU. Our choice (the paper is silent): the last LayerNorm's
  weight starts at zero, so the adapter outputs GELU(0) = 0 and the adapted encoder starts as the frozen SAM
  encoder. The ``simple`` ablation (Sect. 3.5) is 1x1 Conv c -> c/4, 3x3 Conv, 1x1 Conv -> c, same conventions.
- Multi-level decoder (Sect. 2.2, Fig. 3a) on the neck output: three blocks of ConvTranspose x2 + two
  Conv-BN-ReLU (256 -> 128 -> 64 -> 32 for SAM's 256-channel neck), then the multi-scale decoder block (Fig. 3b):
  the MSA's four dilated branches without the down-projection (our reading: c -> c/4 each, so the concatenation
  has c channels), then a 1x1 convolution to the classes; bilinear upsampling to the input size.
- ``decoder="sam"`` (ablation and the "Freeze Encoder" baseline): SAM's own mask decoder without prompts (the
  prompt encoder's "no mask" embedding, no sparse tokens), one mask per image. Its ``repeat_interleave`` expands the
  image embedding per prompt token set, so it is called image by image. Its one mask logit ``m`` becomes the
  two-class logits ``[0, m]``: softmax gives ``sigmoid(m)``, so nnU-Net's argmax and ensembling apply unchanged.
- Input sizes: ``pos_embed`` (trained at a ``img_size / 16`` square grid) is resized bicubically to the token grid
  of the input at run time, any H, W that are multiples of 16, non-square too; SAM's attention already resizes its
  relative-position tables. Other sizes are zero-padded at the bottom/right and the logits cropped back.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

ADAPTERS = ("msa", "simple", "none")
DECODERS = ("multilevel", "sam")


@dataclass(frozen=True)
class EncoderPreset:
    """``ImageEncoderViT`` hyperparameters; the three SAM presets are ``segment_anything.build_sam``'s."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    window_size: int = 14
    out_chans: int = 256
    patch_size: int = 16


PRESETS = {
    "vit_b": EncoderPreset(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": EncoderPreset(1024, 24, 16, (5, 11, 17, 23)),  # the paper's choice (Sect. 3.2)
    "vit_h": EncoderPreset(1280, 32, 16, (7, 15, 23, 31)),
    # CPU preset for tests and phantom benchmarks: same architecture, 4 blocks of width 96, 64-channel neck
    "tiny": EncoderPreset(96, 4, 4, (1, 3), img_size=256, window_size=7, out_chans=64),
}
SAM_PRESETS = ("vit_b", "vit_l", "vit_h")


def build_image_encoder(preset: EncoderPreset, in_chans: int = 3) -> nn.Module:
    """SAM's image encoder with the arguments ``segment_anything.build_sam`` uses (``in_chans`` aside)."""
    from segment_anything.modeling import ImageEncoderViT

    return ImageEncoderViT(depth=preset.depth, embed_dim=preset.embed_dim, img_size=preset.img_size, mlp_ratio=4,
                           norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=preset.num_heads,
                           patch_size=preset.patch_size,
                           qkv_bias=True, use_rel_pos=True, global_attn_indexes=preset.global_attn_indexes,
                           window_size=preset.window_size, out_chans=preset.out_chans, in_chans=in_chans)


class ConvLNGELU(nn.Sequential):
    """The paper's "k x k Conv^d": convolution, LayerNorm over channels, GELU (Fig. 2b)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        from segment_anything.modeling.common import LayerNorm2d

        padding = dilation * (kernel_size - 1) // 2
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation),
                         LayerNorm2d(out_channels), nn.GELU())

    def zero_init_output(self) -> None:
        nn.init.zeros_(self[1].weight)  # LayerNorm2d's scale: the block outputs GELU(0 + bias 0) = 0


class DilatedBranches(nn.Module):
    """Four parallel 3x3 Conv-LN-GELU with dilation 1-4, concatenated (shared by MSA and MSD)."""

    def __init__(self, in_channels: int, branch_channels: int):
        super().__init__()
        self.branches = nn.ModuleList(ConvLNGELU(in_channels, branch_channels, 3, dilation)
                                      for dilation in (1, 2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class MultiScaleAdapter(nn.Module):
    """MSA (Fig. 2b) on channels-first features: c -> c/4 -> 4 x c/16 (dilations 1-4) -> c."""

    def __init__(self, channels: int):
        super().__init__()
        self.down = ConvLNGELU(channels, channels // 4)
        self.multi_scale = DilatedBranches(channels // 4, channels // 16)
        self.up = ConvLNGELU(4 * (channels // 16), channels)
        self.up.zero_init_output()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.multi_scale(self.down(x)))


class SimpleAdapter(nn.Module):
    """Ablation of Sect. 3.5: 1x1 Conv down, one 3x3 Conv, 1x1 Conv up (Conv-LN-GELU each)."""

    def __init__(self, channels: int):
        super().__init__()
        self.down = ConvLNGELU(channels, channels // 4)
        self.middle = ConvLNGELU(channels // 4, channels // 4, 3)
        self.up = ConvLNGELU(channels // 4, channels)
        self.up.zero_init_output()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.middle(self.down(x)))


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True)]


class MultiLevelDecoder(nn.Module):
    """Fig. 3: three (ConvTranspose x2, 2 x Conv-BN-ReLU) blocks halving the width, then MSD -> class logits."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        widths = [in_channels, in_channels // 2, in_channels // 4, in_channels // 8]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 2, stride=2), *_conv_bn_relu(c_out, c_out),
                          *_conv_bn_relu(c_out, c_out))
            for c_in, c_out in zip(widths[:-1], widths[1:]))
        self.multi_scale = DilatedBranches(widths[-1], widths[-1] // 4)  # MSD: no down-projection
        self.classifier = nn.Conv2d(4 * (widths[-1] // 4), num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.multi_scale(x))


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``pos_embed`` (1, h0, w0, C) resized bicubically to ``grid``; returned unchanged at its own grid."""
    if tuple(pos_embed.shape[1:3]) == tuple(grid):
        return pos_embed
    resized = F.interpolate(pos_embed.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


class MammoSAM(nn.Module):
    """Frozen SAM encoder + adapters + decoder; ``forward`` maps (B, C_in, H, W) to (B, num_classes, H, W) logits.

    Attributes named as in SAM: ``image_encoder`` (and ``prompt_encoder``/``mask_decoder`` with ``decoder="sam"``).
    """

    def __init__(self, num_input_channels: int, num_classes: int, preset: str = "vit_l", adapter: str = "msa",
                 decoder: str = "multilevel", activation_checkpointing: bool = False, freeze_encoder: bool = True):
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"unknown Mammo-SAM preset {preset!r} (choose from {', '.join(PRESETS)})")
        if adapter not in ADAPTERS or decoder not in DECODERS:
            raise ValueError(f"adapter must be one of {ADAPTERS} and decoder one of {DECODERS}, got {adapter!r}, "
                             f"{decoder!r}")
        if decoder == "sam" and num_classes != 2:
            raise ValueError(f"the SAM mask decoder predicts one mask: 2 classes (background, object), not "
                             f"{num_classes}")
        self.preset_name, self.preset = preset, PRESETS[preset]
        self.adapter_kind, self.decoder_kind = adapter, decoder
        self.activation_checkpointing = activation_checkpointing
        self.image_encoder = build_image_encoder(self.preset, num_input_channels)
        self.image_encoder.requires_grad_(not freeze_encoder)  # trainable only to pretrain the tiny stand-in
        width = self.preset.embed_dim
        adapter_class = {"msa": MultiScaleAdapter, "simple": SimpleAdapter}.get(adapter)
        self.adapters = (nn.ModuleList(adapter_class(width) for _ in range(self.preset.depth))
                         if adapter_class else None)
        if decoder == "multilevel":
            self.decoder = MultiLevelDecoder(self.preset.out_chans, num_classes)
        else:
            self._build_sam_decoder()

    def _build_sam_decoder(self) -> None:
        from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

        dim, grid = self.preset.out_chans, self.preset.img_size // self.preset.patch_size
        self.prompt_encoder = PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid),
                                            input_image_size=(self.preset.img_size,) * 2, mask_in_chans=16)
        self.prompt_encoder.requires_grad_(False)  # only its no-mask embedding and PE are used; nothing to train
        heads = 8 if dim >= 256 else 4
        self.mask_decoder = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=2, embedding_dim=dim, mlp_dim=8 * dim, num_heads=heads), transformer_dim=dim, iou_head_depth=3,
            iou_head_hidden_dim=dim)
        # mask-quality head: its output is unused without prompts; frozen, so DDP sees no parameter without a gradient
        self.mask_decoder.iou_prediction_head.requires_grad_(False)

    # --- encoder ------------------------------------------------------------------------------------------------
    def _adapted_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self.adapters is not None:  # tokens are (B, H, W, C); the adapter convolves channels-first
            x = x + self.adapters[index](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.image_encoder.blocks[index](x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Neck features (B, out_chans, H / 16, W / 16) of an input whose H, W are multiples of 16."""
        encoder = self.image_encoder
        tokens = encoder.patch_embed(x)
        tokens = tokens + resize_pos_embed(encoder.pos_embed, tokens.shape[1:3])
        for index in range(len(encoder.blocks)):
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                tokens = checkpoint(self._adapted_block, index, tokens, use_reentrant=False)
            else:
                tokens = self._adapted_block(index, tokens)
        return encoder.neck(tokens.permute(0, 3, 1, 2))

    # --- decoders -----------------------------------------------------------------------------------------------
    def _sam_decode(self, features: torch.Tensor) -> torch.Tensor:
        grid = tuple(features.shape[-2:])
        positional = self.prompt_encoder.pe_layer(grid).unsqueeze(0)
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *grid)
        sparse = features.new_zeros((1, 0, features.shape[1]))
        masks = [self.mask_decoder(image_embeddings=features[i:i + 1], image_pe=positional,
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=False)[0] for i in range(len(features))]
        mask = torch.cat(masks)  # (B, 1, 4 h, 4 w)
        return torch.cat([torch.zeros_like(mask), mask], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        patch = self.preset.patch_size
        pad_h, pad_w = (-height) % patch, (-width) % patch
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        features = self.encode(x)
        logits = self.decoder(features) if self.decoder_kind == "multilevel" else self._sam_decode(features)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :height, :width]

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
