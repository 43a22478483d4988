"""Tumour/background contrastive pretraining and fusion segmentation (Zhang et al., breast DCE-MRI) as nnU-Net
trainers.

Input: the post-contrast channel 1 and the subtraction channel ``SUB`` (last; ``nnunet-ext synth breast_dce
--subtraction`` and the DCE converters' ``--subtraction`` compute it from raw intensities).

1. ``TumorBgPretrainTrainer`` (Sect. 2.1, Eq. 1): for every training case of the fold, the real tumour patch, the
   tumour mirrored into the contralateral breast (positive) and the tumour site overwritten with mirrored normal
   tissue (negative) (:mod:`nnunet_ext.methods.contrastive.triplets`; bilateral and midline-crossing cases are
   skipped and counted in the log). The right-left axis is the raw image's x axis in the preprocessed layout; the
   midline is the centre of the preprocessed (nonzero-cropped) volume. Patches have the configuration's patch size.
   Loss Eq. 1, Adam at lr 1e-3 halved every 50 epochs (Sect. 3; the optimizer is our choice), SimSiam heads
   (2048 / 512; ``_small``: 128 / 32). The list of pretraining cases is stored in the checkpoint
   (``pretraining_cases``) and in ``pretraining_cases.json``. ``SimSiamPretrainTrainer`` is the Sect. 3 baseline:
   two augmented views (blur, flips, noise, scaling) of the same real tumour patches, SimSiam's loss.
2. ``TumorBgFusionTrainer`` (Sect. 2.2, Eq. 2): the pretrained encoder twice, frozen and trainable, joined by
   cross-attention at the two lowest levels, nnU-Net's U-Net decoder, loss 5 Dice + BCE, Adam at lr 5e-3 halved
   every 50 epochs. Variants: ``TumorBgInitTrainer`` (Table 1 row 3: the RU-Net initialised with the pretrained
   encoder, fine-tuned), ``SimSiamInitTrainer`` (row 2), ``TumorBgFusionScratchTrainer`` (the fusion network without
   pretraining: both encoders start from the same random weights).

Where the segmentation trainers find the pretrained encoder (training only; the checkpoint of the segmentation holds
both encoders, so ``nnUNetv2_predict`` needs nothing else):

- ``nnUNet_ext_contrastive_checkpoint=/path/checkpoint_final.pth`` if set;
- else ``$nnUNet_results/<dataset>/<pretrain trainer>__<plans>__<configuration>/fold_<fold>/checkpoint_final.pth``
  with the segmentation's own dataset, plans, configuration and fold.

It is refused when its encoder does not fit (other widths or levels), or when it was pretrained on a case outside the
segmentation fold's training cases (its labels would have leaked into the validation).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nnunet_ext.methods.contrastive.network import (ContrastiveFusionUNet, ContrastivePretrainNet, encoder_state)
from nnunet_ext.training.base import ExtTrainerBase
from nnunet_ext.training.pretrained import load_pretrained_checkpoint
from nnunet_ext.training.plans_networks import (deep_supervision_scales, initialize_residual_network,
                                                residual_encoder_from_plans, unet_decoder_for)

PRESETS = {"plans": (None, None), "small": ((16, 32, 64, 128), 4)}
POST_CHANNEL = 1


def input_channels(num_input_channels: int) -> list[int]:
    """The channels the networks read: the first post-contrast phase and the subtraction (the last channel)."""
    return [POST_CHANNEL, num_input_channels - 1]


def check_subtraction_channel(owner: str, dataset_json: dict, dataset_name: str) -> None:
    from nnunet_ext.datasets_conversion._dce_common import SUBTRACTION_CHANNEL  # the name the writers give it

    names = [str(v) for _, v in sorted(dataset_json["channel_names"].items(), key=lambda kv: int(kv[0]))]
    if len(names) < 3 or names[-1].upper() != SUBTRACTION_CHANNEL:
        raise RuntimeError(f"{owner} reads the post-contrast channel 1 and a last channel {SUBTRACTION_CHANNEL}; "
                           f"{dataset_name} has channels {names}: write it with --subtraction (nnunet-ext synth or "
                           "the DCE converters)")


def step_decay(optimizer, halving_epochs: int):
    """lr halved every ``halving_epochs`` epochs (Sect. 3), stepped by nnU-Net's ``step(current_epoch)``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5 ** (epoch // halving_epochs))


class _ContrastiveTrainer(ExtTrainerBase):
    preset = "plans"
    lr_halving_epochs = 50
    supported_configurations = ("3d_fullres",)
    spatial_dims = 3
    conformance_overrides = {"preset": "small"}

    @classmethod
    def build_encoder(cls, configuration_manager, num_input_channels: int) -> nn.Module:
        widths, levels = PRESETS[cls.preset]
        return residual_encoder_from_plans(configuration_manager, len(input_channels(num_input_channels)), widths,
                                           levels)

    def initialize(self):
        if not self.was_initialized:
            check_subtraction_channel(type(self).__name__, self.dataset_json, self.plans_manager.dataset_name)
        super().initialize()

    def configure_optimizers(self):
        module = self.network_module
        parameters = module.trainable_parameters() if hasattr(module, "trainable_parameters") else \
            module.parameters()
        optimizer = torch.optim.Adam(parameters, lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, step_decay(optimizer, self.lr_halving_epochs)


# --- 1. pretraining -------------------------------------------------------------------------------------------------


class TripletBatches:
    """Endless batches of stacked patches ``{"data": (B, V, C, *patch)}`` drawn with a seeded generator."""

    def __init__(self, patches: np.ndarray, batch_size: int, seed: int):
        self.patches, self.batch_size = torch.from_numpy(patches), batch_size
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        index = self.rng.integers(0, len(self.patches), self.batch_size)
        return {"data": self.patches[index]}


class TumorBgPretrainTrainer(_ContrastiveTrainer):
    """Tumour-background contrastive pretraining of the RU-Net encoder (Sect. 2.1, Eq. 1)."""

    initial_lr_default = 1e-3
    num_epochs_default = 200
    projection_dim, predictor_dim = 2048, 512
    blend_sigma_vox = 2.0
    conformance_overrides = {"preset": "small", "projection_dim": 32, "predictor_dim": 8}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        self.pretraining_cases: list[str] = []

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        encoder = cls.build_encoder(configuration_manager, num_input_channels)
        network = ContrastivePretrainNet(encoder, input_channels(num_input_channels), cls.projection_dim,
                                         cls.predictor_dim, cls.__name__)
        initialize_residual_network(network.encoder)
        return network

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # no decoder

    def _build_loss(self):
        return None  # Eq. 1 is computed in train_step

    def lr_axis(self) -> int:
        """The preprocessed axis that runs right-left: the raw image's x axis (SimpleITK order z, y, x)."""
        return list(self.plans_manager.transpose_forward).index(2)

    def case_triplets(self, keys: list[str]) -> tuple[list, dict]:
        from nnunet_ext.methods.contrastive.triplets import build_triplets

        dataset = self.dataset_class(self.preprocessed_dataset_folder, keys)

        def cases():
            for key in keys:
                data, seg, _, _ = dataset.load_case(key)
                yield key, np.asarray(data, dtype=np.float32), np.asarray(seg)

        return build_triplets(cases(), self.lr_axis(), self.configuration_manager.patch_size, self.blend_sigma_vox)

    def views(self, triplets: list) -> np.ndarray:
        """(N, 3, C, *patch): real, positive, negative."""
        return np.stack([np.stack([t.real, t.positive, t.negative]) for t in triplets]).astype(np.float32)

    def get_dataloaders(self):
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        self.dataset_class = self.dataset_class or infer_dataset_class(self.preprocessed_dataset_folder)
        train_keys, val_keys = self.do_split()
        triplets, skipped = self.case_triplets(train_keys)
        if not triplets:
            raise RuntimeError(f"{type(self).__name__}: no training case of fold {self.fold} gives a triplet "
                               f"(skipped: {dict(skipped)}): the method needs unilateral tumours away from the midline")
        self.pretraining_cases = sorted(t.name for t in triplets)
        self.print_to_log_file(f"{type(self).__name__}: {len(triplets)} triplets from {len(train_keys)} training "
                               f"cases; skipped {dict(skipped)} {skipped.names}")
        val_triplets, _ = self.case_triplets(val_keys)
        if not val_triplets:
            self.print_to_log_file("no validation case gives a triplet: validation reuses the training triplets")
            val_triplets = triplets
        from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

        # the patches are ready-made: no augmentation workers, nnU-Net's in-process wrapper
        return (SingleThreadedAugmenter(TripletBatches(self.views(triplets), self.batch_size, self.seed), None),
                SingleThreadedAugmenter(TripletBatches(self.views(val_triplets), self.batch_size, self.seed + 1),
                                        None))

    def contrastive_terms(self, network: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Eq. 1 on a batch of (real, positive, negative) patches, one encoder pass for all three."""
        from nnunet_ext.methods.contrastive.losses import tumour_background_loss

        data = batch["data"].to(self.device, non_blocking=True)
        n = data.shape[0]
        z, p = network(data.transpose(0, 1).flatten(0, 1))  # real batch, positive batch, negative batch
        return tumour_background_loss(p[:n], p[n:2 * n], p[2 * n:], z[:n], z[n:2 * n], z[2 * n:])

    def train_step(self, batch: dict) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            terms = self.contrastive_terms(self.network, batch)
        self.backward_and_step(terms["loss"])
        return {key: value.detach().cpu().numpy() for key, value in terms.items()}

    def validation_step(self, batch: dict) -> dict:
        module = self.network_module
        module.train()  # BatchNorm in training mode: the heads see the batch statistics they were trained with
        with torch.no_grad():
            terms = self.contrastive_terms(module, batch)
        return {key: value.detach().cpu().numpy() for key, value in terms.items()}

    def on_train_epoch_end(self, train_outputs: list[dict]):
        super().on_train_epoch_end(train_outputs)
        means = {key: float(np.mean([o[key] for o in train_outputs])) for key in train_outputs[0] if key != "loss"}
        self.print_to_log_file("Eq. 1 terms (train): " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        means = {key: float(np.mean([o[key] for o in val_outputs])) for key in val_outputs[0]}
        self.print_to_log_file("Eq. 1 terms (val): " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))
        # nnU-Net's progress plot and best-checkpoint logic read 'mean_fg_dice': here the separation of the real
        # patch from the negative relative to the positive, (cos(real, pos) - cos(real, neg)) / 2, in [-1, 1]
        separation = 0.5 * (means.get("cos_real_pos", 0.0) - means.get("cos_real_neg", 0.0))
        self.logger.log("mean_fg_dice", separation, self.current_epoch)
        self.logger.log("dice_per_class_or_region", [separation], self.current_epoch)
        self.logger.log("val_losses", means["loss"], self.current_epoch)

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        if self.local_rank == 0 and not self.disable_checkpointing and Path(filename).is_file():
            checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
            checkpoint["pretraining_cases"] = list(self.pretraining_cases)
            torch.save(checkpoint, filename)
            (Path(self.output_folder) / "pretraining_cases.json").write_text(
                json.dumps({"fold": self.fold, "cases": self.pretraining_cases}, indent=2))

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=False)
        super().load_checkpoint(filename_or_checkpoint)  # nnU-Net 2.8.1 reads the file itself
        self.pretraining_cases = list(checkpoint.get("pretraining_cases", []))

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file(f"{type(self).__name__} pretrains an encoder: no segmentation to validate")


class SimSiamPretrainTrainer(TumorBgPretrainTrainer):
    """The Sect. 3 baseline: SimSiam on two augmented views of the same real tumour patches."""

    def views(self, triplets: list) -> np.ndarray:
        return np.stack([t.real[None] for t in triplets]).astype(np.float32)

    def contrastive_terms(self, network: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        from nnunet_ext.methods.contrastive.augment import simsiam_view
        from nnunet_ext.methods.contrastive.losses import simsiam_loss

        real = batch["data"][:, 0].to(self.device, non_blocking=True)
        generator = getattr(self, "_view_generator", None)
        if generator is None:
            generator = self._view_generator = torch.Generator().manual_seed(self.seed)
        n = real.shape[0]
        z, p = network(torch.cat([simsiam_view(real, generator), simsiam_view(real, generator)]))
        with torch.no_grad():
            cosine = nn.functional.cosine_similarity(z[:n].float(), z[n:].float()).mean()
        return {"loss": simsiam_loss(p[:n], p[n:], z[:n], z[n:]), "cos_view1_view2": cosine}


# --- 2. segmentation ------------------------------------------------------------------------------------------------


class TumorBgFusionTrainer(_ContrastiveTrainer):
    """Frozen + trainable pretrained encoders joined by cross-attention; Eq. 2 (Sect. 2.2)."""

    pretrain_trainer: str | None = "TumorBgPretrainTrainer"  # a name (resolved in this module): settings, not code
    fuse = True
    attention_levels = 2
    dice_weight = 5.0  # lambda of Eq. 2
    initial_lr_default = 5e-3
    num_epochs_default = 300

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        encoder = cls.build_encoder(configuration_manager, num_input_channels)
        decoder = unet_decoder_for(encoder, configuration_manager, num_output_channels, enable_deep_supervision)
        initialize_residual_network(encoder)
        initialize_residual_network(decoder)
        return ContrastiveFusionUNet(encoder, decoder, input_channels(num_input_channels), cls.fuse,
                                     cls.attention_levels)

    def set_deep_supervision_enabled(self, enabled: bool):
        self.network_module.decoder.deep_supervision = enabled

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        levels = PRESETS[self.preset][1] or len(self.configuration_manager.pool_op_kernel_sizes)
        return deep_supervision_scales(self.configuration_manager.pool_op_kernel_sizes, levels)

    def _build_loss(self):
        from nnunet_ext.methods.contrastive.losses import DiceBCELoss

        if self.label_manager.has_regions or self.label_manager.num_segmentation_heads != 2:
            raise RuntimeError(f"{type(self).__name__} segments one tumour class (Eq. 2 is binary); "
                               f"{self.plans_manager.dataset_name} has labels {self.dataset_json.get('labels')}")
        return DiceBCELoss(self.dice_weight, self.label_manager.ignore_label)

    def initialize(self):
        was_initialized = self.was_initialized
        super().initialize()
        if not was_initialized and self.pretrain_trainer is not None:
            self.load_pretrained_encoder()

    def pretrained_checkpoint_path(self) -> Path:
        explicit = os.environ.get("nnUNet_ext_contrastive_checkpoint")
        if explicit:
            return Path(explicit)
        from nnunetv2.paths import nnUNet_results

        return (Path(nnUNet_results) / self.plans_manager.dataset_name
                / f"{self.pretrain_trainer}__{self.plans_manager.plans_name}__{self.configuration_name}"
                / f"fold_{self.fold}" / "checkpoint_final.pth")

    def load_pretrained_encoder(self) -> None:
        name, pretrain = type(self).__name__, self.pretrain_trainer
        path = self.pretrained_checkpoint_path()
        checkpoint = load_pretrained_checkpoint(
            path, name, "pretrained encoder", pretrain,
            f"pretrain it first: nnUNetv2_train {self.plans_manager.dataset_name} {self.configuration_name} "
            f"{self.fold} -tr {pretrain} -p {self.plans_manager.plans_name}, or set nnUNet_ext_contrastive_checkpoint",
            self.device)
        train_keys, _ = self.do_split()
        outside = sorted(set(checkpoint.get("pretraining_cases", [])) - set(train_keys))
        if outside:
            raise RuntimeError(f"{name}: {path} was pretrained on {len(outside)} case(s) outside fold {self.fold}'s "
                               f"training cases ({', '.join(outside[:5])}{', ...' if len(outside) > 5 else ''}): "
                               f"pretrain {pretrain} on the same fold")
        try:
            self.network_module.load_encoder_state(encoder_state(checkpoint["network_weights"]))
        except RuntimeError as error:
            first = " ".join(str(error).split())[:300]
            raise RuntimeError(f"{name}: the encoder in {path} does not fit {name}'s encoder (preset "
                               f"{self.preset!r}; pretrain with the matching {pretrain}): {first}") from None
        self.print_to_log_file(f"{name}: loaded the pretrained encoder from {path} "
                               f"({len(checkpoint.get('pretraining_cases', []))} pretraining cases)")


class TumorBgInitTrainer(TumorBgFusionTrainer):
    """Table 1 row 3: the RU-Net initialised with the tumour-background encoder and fine-tuned (no fusion)."""

    fuse = False
    conformance_variant_of = "TumorBgFusionTrainer"


class SimSiamInitTrainer(TumorBgInitTrainer):
    """Table 1 row 2: the RU-Net initialised with the SimSiam encoder."""

    pretrain_trainer = "SimSiamPretrainTrainer"
    conformance_variant_of = "TumorBgFusionTrainer"


class TumorBgFusionScratchTrainer(TumorBgFusionTrainer):
    """Ablation: the fusion network without pretraining (frozen and trainable encoders from the same random start)."""

    pretrain_trainer = None
    conformance_variant_of = "TumorBgFusionTrainer"


class TumorBgPretrainTrainer_small(TumorBgPretrainTrainer):
    """CPU-sized: encoder 16-32-64-128 over four levels, heads 128 / 32."""

    preset = "small"
    projection_dim, predictor_dim = 128, 32
    conformance_variant_of = "TumorBgPretrainTrainer"


class SimSiamPretrainTrainer_small(SimSiamPretrainTrainer):
    preset = "small"
    projection_dim, predictor_dim = 128, 32
    conformance_variant_of = "SimSiamPretrainTrainer"


class TumorBgFusionTrainer_small(TumorBgFusionTrainer):
    """CPU-sized: encoder 16-32-64-128 over four levels, pretrained by ``TumorBgPretrainTrainer_small``."""

    preset = "small"
    pretrain_trainer = "TumorBgPretrainTrainer_small"
    conformance_variant_of = "TumorBgFusionTrainer"


class TumorBgInitTrainer_small(TumorBgInitTrainer):
    preset = "small"
    pretrain_trainer = "TumorBgPretrainTrainer_small"


class SimSiamInitTrainer_small(SimSiamInitTrainer):
    preset = "small"
    pretrain_trainer = "SimSiamPretrainTrainer_small"


class TumorBgFusionScratchTrainer_small(TumorBgFusionScratchTrainer):
    preset = "small"
