"""nnU-Net trainers for Mammo-SAM: ``nnUNetv2_train DATASET 2d FOLD -tr MammoSAMTrainer``.

What the trainers change in nnU-Net, and nothing else:

- Network: :class:`..network.MammoSAM` (2D only). ``build_network_architecture`` builds it without weights, so
  ``nnUNetv2_predict`` needs no SAM file; :meth:`MammoSAMTrainer.initialize` reads the SAM checkpoint named by
  ``nnUNet_ext_sam_checkpoint`` once, at the start of training (:mod:`..weights`), and records it in
  ``sam_weights.json`` of the output folder.
- Optimiser (Sect. 3.2): SGD, lr 0.01, momentum 0.9 (the paper gives none; ours), cosine decay over the epochs, on
  the trainable parameters only (adapters and decoder).
- Loss (Sect. 3.2): F3Net's pixel-position-aware loss, weighted BCE + weighted IoU
  (:class:`nnunet_ext.losses.pixel_position_aware.PixelPositionAwareLoss`), on the logit difference, so softmax,
  argmax and fold ensembling stay nnU-Net's. One output: no deep supervision.
- Augmentation: nnU-Net's by default; ``nnUNet_ext_mammo_sam_augmentation=flips`` keeps only the random flips (the
  paper's) and nnU-Net's structural transforms (cropping, label clean-up).
- ``nnUNet_ext_mammo_sam_checkpointing=1``: per-block activation checkpointing (memory for time; vit_l/vit_h on
  small GPUs).

Names: ``MammoSAMTrainer`` (vit_l, the paper's), ``_vitb``, ``_vith``, ``_tiny`` (CPU); ablations ``_NoAdapter``,
``_SimpleAdapter``, ``_SAMDecoder``, ``_FreezeEncoder`` (frozen encoder, only SAM's mask decoder trained: the
paper's "Freeze Encoder" baseline), each also as ``_tiny_<ablation>``. ``MammoSAMPretrainTrainer_tiny`` trains the
tiny encoder itself (phantom set-up: :mod:`..cli` exports it as a SAM-format file).
"""
from __future__ import annotations

import hashlib
import json
import os

import torch
from torch import nn

from nnunet_ext.training.base import CosineLRScheduler, ExtTrainerBase, env_flag

from .network import MammoSAM

AUGMENTATION_VARIABLE = "nnUNet_ext_mammo_sam_augmentation"
CHECKPOINTING_VARIABLE = "nnUNet_ext_mammo_sam_checkpointing"


def _file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def flips_only(transforms):
    """nnU-Net's training pipeline reduced to flips: random intensity transforms dropped, the spatial transform
    (which crops the patch) kept without rotation and scaling."""
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    kept = []
    for transform in transforms.transforms:
        if isinstance(transform, RandomTransform):
            continue
        if isinstance(transform, SpatialTransform):
            transform.p_rotation = transform.p_scaling = transform.p_elastic_deform = 0
        kept.append(transform)
    transforms.transforms = kept
    return transforms


class MammoSAMTrainer(ExtTrainerBase):
    """Mammo-SAM with SAM ViT-L (Table 1 row "Ours")."""

    preset: str = "vit_l"
    adapter: str = "msa"
    decoder: str = "multilevel"
    freeze_encoder: bool = True
    needs_sam_weights: bool = True
    initial_lr_default = 1e-2
    momentum: float = 0.9
    supported_configurations = ("2d",)
    spatial_dims = 2
    conformance_overrides = {"preset": "tiny"}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        if self.label_manager.has_regions:
            raise RuntimeError(f"{type(self).__name__} trains on label maps; dataset.json defines regions")
        self.augmentation = os.environ.get(AUGMENTATION_VARIABLE, "nnunet").strip() or "nnunet"
        if self.augmentation not in ("nnunet", "flips"):
            raise RuntimeError(f"{AUGMENTATION_VARIABLE}={self.augmentation!r}: use nnunet or flips")
        self.print_to_log_file(f"Mammo-SAM: preset={self.preset} adapter={self.adapter} decoder={self.decoder} "
                               f"augmentation={self.augmentation}", also_print_to_console=False)

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        return MammoSAM(num_input_channels, num_output_channels, cls.preset, cls.adapter, cls.decoder,
                        activation_checkpointing=env_flag(CHECKPOINTING_VARIABLE), freeze_encoder=cls.freeze_encoder)

    def initialize(self):
        first_time = not self.was_initialized
        super().initialize()
        if first_time and self.needs_sam_weights:
            self.load_sam_weights()
        if first_time:
            self.print_to_log_file(f"Mammo-SAM: {self.network_module.trainable_parameter_count()} trainable "
                                   f"parameters")

    def load_sam_weights(self) -> None:
        from .weights import checkpoint_path_from_environment, load_sam_weights

        path = checkpoint_path_from_environment()
        parts = load_sam_weights(self.network_module, path)
        self.print_to_log_file(f"Mammo-SAM: loaded {', '.join(parts)} from {path}")
        if self.local_rank == 0:
            record = {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": _file_digest(path),
                      "parts": parts}
            with open(f"{self.output_folder}/sam_weights.json", "w") as handle:
                json.dump(record, handle, indent=2)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # one output

    def _build_loss(self):
        from nnunet_ext.losses.pixel_position_aware import PixelPositionAwareLoss

        return PixelPositionAwareLoss(ignore_label=self.label_manager.ignore_label)

    def configure_optimizers(self):
        trainable = [p for p in self.network.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trainable, self.initial_lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        return optimizer, CosineLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def get_training_transforms(self, *args, **kwargs):
        transforms = super().get_training_transforms(*args, **kwargs)
        return flips_only(transforms) if self.augmentation == "flips" else transforms


class MammoSAMTrainer_vitb(MammoSAMTrainer):
    """Mammo-SAM on SAM ViT-B."""

    preset = "vit_b"
    conformance_variant_of = "MammoSAMTrainer"


class MammoSAMTrainer_vith(MammoSAMTrainer):
    """Mammo-SAM on SAM ViT-H."""

    preset = "vit_h"
    conformance_variant_of = "MammoSAMTrainer"


class MammoSAMTrainer_NoAdapter(MammoSAMTrainer):
    """Ablation: frozen encoder, no adapters, multi-level decoder (the benchmark's "No adapter" row)."""

    adapter = "none"
    conformance_variant_of = "MammoSAMTrainer"


class MammoSAMTrainer_SimpleAdapter(MammoSAMTrainer):
    """Ablation of Sect. 3.5: the simple convolutional adapter instead of the multi-scale one."""

    adapter = "simple"
    conformance_variant_of = "MammoSAMTrainer"


class MammoSAMTrainer_SAMDecoder(MammoSAMTrainer):
    """Ablation of Sect. 3.5: SAM's prompt-free mask decoder instead of the multi-level decoder."""

    decoder = "sam"


class MammoSAMTrainer_FreezeEncoder(MammoSAMTrainer_SAMDecoder):
    """Table 1 "Freeze Encoder": frozen encoder without adapters, only SAM's mask decoder trained."""

    adapter = "none"
    conformance_variant_of = "MammoSAMTrainer_SAMDecoder"


class MammoSAMTrainer_tiny(MammoSAMTrainer):
    """CPU preset (4 blocks of width 96, 64-channel neck) for tests and phantom benchmarks."""

    preset = "tiny"
    conformance_variant_of = "MammoSAMTrainer"


class MammoSAMTrainer_tiny_NoAdapter(MammoSAMTrainer_tiny):
    adapter = "none"


class MammoSAMTrainer_tiny_SimpleAdapter(MammoSAMTrainer_tiny):
    adapter = "simple"


class MammoSAMTrainer_tiny_SAMDecoder(MammoSAMTrainer_tiny):
    decoder = "sam"
    conformance_variant_of = "MammoSAMTrainer_SAMDecoder"


class MammoSAMTrainer_tiny_FreezeEncoder(MammoSAMTrainer_tiny_SAMDecoder):
    adapter = "none"


class MammoSAMPretrainTrainer_tiny(MammoSAMTrainer_tiny):
    """Phantom set-up only: trains the tiny encoder (no adapters, not frozen, no SAM file) with the multi-level
    decoder on a source dataset, as a stand-in for SAM's pretraining; ``nnunet-ext mammo-sam export-encoder``
    writes the result as a SAM-format checkpoint that the other tiny trainers start from.

    Loss: nnU-Net's Dice + cross-entropy, not the PPA loss. In exploratory runs the ViT trained from scratch with the
    PPA loss collapsed to a constant background map, while Dice + CE learned to find masses; SAM's own pretraining
    also used a Dice term (with focal loss)."""

    adapter = "none"
    freeze_encoder = False
    needs_sam_weights = False
    conformance_variant_of = None

    def _build_loss(self):
        return ExtTrainerBase._build_loss(self)  # nnU-Net's Dice + CE (deep supervision is off: a plain loss)
