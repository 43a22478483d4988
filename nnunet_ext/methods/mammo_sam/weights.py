"""SAM weights from a local file only: reading, checking and exporting SAM-format checkpoints.

nnunet-ext never downloads weights. The user downloads a SAM checkpoint (``sam_vit_l_0b3195.pth``, ...) and names it
in ``nnUNet_ext_sam_checkpoint``; the trainer reads it once, at the start of training
(:meth:`MammoSAMTrainer.initialize`), and the nnU-Net checkpoint then holds every weight, so ``nnUNetv2_predict``
needs no SAM file.

Accepted files (read with ``torch.load(..., weights_only=True)``): a full SAM state dict (``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``), an encoder-only state dict (``patch_embed.*``, ``blocks.*``, ``neck.*``),
either possibly wrapped in ``{"model": ...}`` or ``{"state_dict": ...}`` or prefixed ``module.`` (DataParallel) or
``_orig_mod.`` (``torch.compile``).
SAM's patch embedding reads RGB; for a one-channel network its weights are summed over RGB (a grey image fed as
three equal channels gives the same response). The prompt encoder and mask decoder are read for networks with the
SAM decoder (``decoder="sam"``) when the file has them.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from nnunet_ext.errors import UserInputError

from .network import PRESETS

CHECKPOINT_VARIABLE = "nnUNet_ext_sam_checkpoint"
DECODER_PARTS = ("prompt_encoder", "mask_decoder")
_WRAPPERS = ("model", "state_dict")


def checkpoint_path_from_environment() -> Path:
    value = os.environ.get(CHECKPOINT_VARIABLE, "").strip()
    if not value:
        raise UserInputError(f"{CHECKPOINT_VARIABLE} is not set: name a local SAM checkpoint file (e.g. "
                             f"sam_vit_l_0b3195.pth); nnunet-ext never downloads weights")
    return Path(value).expanduser()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The flat state dict of a SAM-format file, wrappers and wrapper prefixes removed."""
    if not path.is_file():
        raise UserInputError(f"SAM checkpoint {path} (from {CHECKPOINT_VARIABLE}) does not exist; nnunet-ext never "
                             f"downloads weights: download it yourself and point {CHECKPOINT_VARIABLE} at it")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and weights-only refusals all mean: not a usable checkpoint
        reason = " ".join(str(error).split())[:200]
        raise UserInputError(f"{path} ({CHECKPOINT_VARIABLE}) is not a SAM checkpoint torch.load can read with "
                             f"weights_only=True: {reason}") from None
    while isinstance(content, dict) and len(content) == 1 and next(iter(content)) in _WRAPPERS:
        content = next(iter(content.values()))
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise UserInputError(f"{path} ({CHECKPOINT_VARIABLE}) is not a SAM checkpoint: expected a state dict of "
                             f"tensors, got {type(content).__name__}")
    return _without_wrapper_prefixes(content)


def _without_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the prefixes DataParallel/DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) add."""
    return {key.removeprefix("module.").removeprefix("_orig_mod."): value for key, value in state.items()}


def split_parts(state: dict[str, torch.Tensor], path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """``{"image_encoder": {...}, "mask_decoder": {...}, ...}`` with part prefixes removed."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    if any(key.startswith("image_encoder.") for key in state):
        for key, value in state.items():
            part, _, name = key.partition(".")
            parts.setdefault(part, {})[name] = value
    elif "patch_embed.proj.weight" in state:
        parts["image_encoder"] = dict(state)
    else:
        example = next(iter(state), "none")
        raise UserInputError(f"{path} ({CHECKPOINT_VARIABLE}) is not a SAM checkpoint: it has no image_encoder.* "
                             f"or patch_embed.* weights (first key: {example})")
    return parts


def likely_variant(encoder_state: dict[str, torch.Tensor]) -> str:
    """The SAM preset an encoder state dict was made for, from its width and depth."""
    width = encoder_state["patch_embed.proj.weight"].shape[0]
    depth = len({key.split(".")[1] for key in encoder_state if key.startswith("blocks.")})
    for name, preset in PRESETS.items():
        if (preset.embed_dim, preset.depth) == (width, depth):
            return name
    return f"an encoder of width {width} and depth {depth}, no preset"


def _adapt_patch_embedding(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """File weights (E, 3, 16, 16) for a network reading ``in_chans`` channels: summed over RGB and shared equally
    by the network's channels (for one channel: the plain sum)."""
    if weight.shape[1] == in_chans:
        return weight
    return weight.sum(dim=1, keepdim=True).repeat(1, in_chans, 1, 1) / in_chans


def _checked(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], part: str, path: Path,
             preset: str, variant: str) -> dict[str, torch.Tensor]:
    for key, tensor in expected.items():
        if key not in given:
            raise UserInputError(f"{path} ({CHECKPOINT_VARIABLE}) lacks {part}.{key} that preset {preset!r} needs; "
                                 f"the file looks like {variant}")
        if tuple(given[key].shape) != tuple(tensor.shape):
            raise UserInputError(f"{path} ({CHECKPOINT_VARIABLE}) does not fit preset {preset!r}: {part}.{key} is "
                                 f"{tuple(given[key].shape)}, expected {tuple(tensor.shape)}; the file looks like "
                                 f"{variant}")
    return {key: given[key] for key in expected}


def load_sam_weights(network: torch.nn.Module, path: Path) -> list[str]:
    """Copy the file's SAM weights into ``network`` (a :class:`MammoSAM`); returns the parts loaded."""
    parts = split_parts(read_state_dict(path), path)
    encoder_state = dict(parts["image_encoder"])
    if "patch_embed.proj.weight" not in encoder_state:
        raise UserInputError(f"{path} ({CHECKPOINT_VARIABLE}) is not a SAM checkpoint: no "
                             f"image_encoder.patch_embed.proj.weight")
    variant = likely_variant(encoder_state)
    in_chans = network.image_encoder.patch_embed.proj.in_channels
    encoder_state["patch_embed.proj.weight"] = _adapt_patch_embedding(encoder_state["patch_embed.proj.weight"],
                                                                      in_chans)
    expected = network.image_encoder.state_dict()
    network.image_encoder.load_state_dict(_checked(expected, encoder_state, "image_encoder", path,
                                                   network.preset_name, variant))
    loaded = ["image_encoder"]
    for part in DECODER_PARTS:
        module = getattr(network, part, None)
        if module is not None and part in parts:
            module.load_state_dict(_checked(module.state_dict(), parts[part], part, path, network.preset_name,
                                            variant))
            loaded.append(part)
    return loaded


def sam_format(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The SAM-format part of a :class:`MammoSAM` state dict: ``image_encoder.*`` (and SAM decoder parts, if any),
    with the patch embedding written for RGB: a one-channel network's weights are divided by three and repeated,
    so :func:`load_sam_weights` sums them back to the same values."""
    result = {key: value.detach().cpu().clone() for key, value in _without_wrapper_prefixes(state).items()
              if key.split(".", 1)[0] in ("image_encoder", *DECODER_PARTS)}
    if "image_encoder.patch_embed.proj.weight" not in result:
        raise UserInputError("no image_encoder.patch_embed.proj.weight: not the weights of a Mammo-SAM network")
    weight = result["image_encoder.patch_embed.proj.weight"]
    if weight.shape[1] == 1:
        result["image_encoder.patch_embed.proj.weight"] = weight.repeat(1, 3, 1, 1) / 3
    return result


def write_checkpoint(state: dict[str, torch.Tensor], path: Path) -> None:
    """``torch.save`` to a temporary name beside ``path``, then renamed: no partial file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    torch.save(state, temporary)
    os.replace(temporary, path)


def export_sam_checkpoint(network: torch.nn.Module, path: Path) -> None:
    """Write ``network``'s encoder (and SAM decoder parts) as a SAM-format checkpoint (:func:`sam_format`)."""
    write_checkpoint(sam_format(network.state_dict()), path)
