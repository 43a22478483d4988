"""``DCARegSegTrainer``: TM-DCA trained on an ordinary nnU-Net segmentation dataset, predicting by atlas registration.

``nnUNetv2_train DATASET 3d_fullres FOLD -tr DCARegSegTrainer -p nnUNetPlansWholeVolume`` (plans from
``nnunet-ext plan_and_preprocess -pl WholeVolumePlanner``: whole images as patches, see :mod:`.atlas`).

Training (what changes in nnU-Net, and nothing else):

* Each step registers pairs drawn from the fold's training cases: the batch (nnU-Net's loader, whole images) is
  paired with itself rolled by one, ``moving = batch[i + 1], fixed = batch[i]``. Loss (mean over pairs)::

      L = NCC_9(f, m o phi) + lambda_reg * Diff(u) + lambda_seg * (1 - SoftDice(onehot(s_m) o phi, onehot(s_f)))

  the unsupervised TM-DCA/VoxelMorph objective (local NCC, window 9; diffusion regulariser) plus the label-guided
  Dice term of the registration-assisted segmentation paper (its Eq. 1, ``L_pair = -Dice + lambda_1 L_smooth``),
  over the foreground classes, with linearly warped one-hot maps (:mod:`.register` has the terms).
* Defaults: ``lambda_reg = 1`` (VoxelMorph's and TransMorph's weight for the diffusion term with NCC;
  ``lambda_1 = 1`` in the registration-assisted segmentation paper), ``lambda_seg = 1`` (TransMorph's OASIS
  training weights NCC : Dice : Grad = 1 : 1 : 1); Adam, lr 1e-4 (TM-DCA, TransMorph and the registration-assisted
  segmentation paper all use 1e-4), no weight decay, nnU-Net's poly decay; network: the authors' 3-level TM-DCA
  (``preset = "paper"``), displacement output. Environment overrides: ``nnUNet_ext_dca_lambda_reg``,
  ``nnUNet_ext_dca_lambda_seg`` (logged).
* No spatial augmentation and no mirroring: transforms applied to each case independently would misalign the pair
  (TM-DCA and TransMorph train without augmentation). The loader delivers whole images (the patch covers them).
* Validation (nnU-Net's pseudo Dice in the log and progress plot): the same pairing on validation batches, Dice of
  the nearest-neighbour-warped moving labels against the fixed labels.

Prediction (``nnUNetv2_predict``, final validation, fold ensembling): the network is an
:class:`~.atlas.AtlasSegmenter` whose bank holds the fold's training cases (all, or ``nnUNet_ext_dca_atlases``: a
number N, the first N of a seeded shuffle, or comma-separated case ids); every atlas is registered to the new image
and the warped labels are fused (``fusion = "vote"``, or ``"similarity"`` in ``DCARegSegTrainer_similarity``). The
atlases travel in the checkpoint (their preprocessed images and labels), so prediction needs nothing else. The
atlas list is written to ``fold_X/dca_atlases.json``.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import nn

from nnunet_ext.training.base import ExtTrainerBase, adam_with_poly_decay, hard_label_counts

from .atlas import AtlasSegmenter, build_registration_network, fit_to_shape

ATLAS_ENV = "nnUNet_ext_dca_atlases"


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    number = float(value)
    if not (np.isfinite(number) and number >= 0):
        raise ValueError(f"{name}={value}: must be a number >= 0")
    return number


def select_atlases(training_keys: list[str], request: str | None, seed: int) -> list[str]:
    """The atlas case ids: all training cases (``request`` empty), the first N of a seeded shuffle (``"N"``), or the
    listed ids (``"a,b,c"``, each must be a training case of the fold)."""
    keys = sorted(training_keys)
    request = (request or "").strip()
    if not request:
        return keys
    if request.isdigit():
        count = int(request)
        if count < 1:
            raise ValueError(f"{ATLAS_ENV}={request}: need at least one atlas")
        order = np.random.default_rng(seed).permutation(len(keys))
        return [keys[i] for i in sorted(order[:count])]
    wanted = [k.strip() for k in request.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in keys]
    if unknown:
        raise ValueError(f"{ATLAS_ENV}: {', '.join(unknown)} not among the fold's training cases")
    return wanted


def pair_terms(network: nn.Module, data: torch.Tensor, labels: torch.Tensor, num_classes: int, ncc_window: int,
               autocast: bool) -> tuple[dict, torch.Tensor]:
    """Register ``batch[i + 1] -> batch[i]`` for every ``i``; return the loss terms and the displacement."""
    from nnunet_ext.methods.dca.register import diffusion_regulariser, local_ncc, soft_dice_loss
    from nnunet_ext.methods.dca.transform import warp

    moving, moving_labels = data.roll(-1, 0), labels.roll(-1, 0)
    with torch.autocast(data.device.type, enabled=autocast):
        displacement = network(moving, data)
    displacement = displacement.float()  # warping and NCC in float32
    warped = warp(moving.float(), displacement)
    terms = {"ncc": local_ncc(data.float(), warped, ncc_window), "diffusion": diffusion_regulariser(displacement)}
    if num_classes > 1:
        def one_hot(target):
            return nn.functional.one_hot(target[:, 0].long(), num_classes).movedim(-1, 1)[:, 1:].float()

        terms["dice"] = soft_dice_loss(warp(one_hot(moving_labels), displacement), one_hot(labels))
    return terms, displacement


class DCARegSegTrainer(ExtTrainerBase):
    """TM-DCA (paper-sized) registration with label guidance; atlas-based prediction (module docstring)."""

    network_name: str = "tmdca"
    preset: str = "paper"
    diffeomorphic: bool = False
    fusion: str = "vote"
    lambda_reg: float = 1.0
    lambda_seg: float = 1.0
    ncc_window: int = 9
    atlas_batch: int = 1
    initial_lr_default = 1e-4
    # 2d works for datasets of 2D images (one slice each; load_atlases refuses slices of volumes), which the
    # conformance suite's 3D phantom is not
    supported_configurations = ("3d_fullres",)
    conformance_overrides = {"preset": "small"}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False  # one output: the displacement / the fused labels
        if self.label_manager.has_regions or self.label_manager.has_ignore_label:
            raise RuntimeError(f"{type(self).__name__} fuses atlas label maps: region-based and ignore-label "
                               f"datasets are not supported")
        self.lambda_reg = _env_float("nnUNet_ext_dca_lambda_reg", self.lambda_reg)
        self.lambda_seg = _env_float("nnUNet_ext_dca_lambda_seg", self.lambda_seg)
        self.print_to_log_file(f"DCARegSeg: network={self.network_name} preset={self.preset} "
                               f"diffeomorphic={self.diffeomorphic} lambda_reg={self.lambda_reg} "
                               f"lambda_seg={self.lambda_seg} fusion={self.fusion}", also_print_to_console=False)

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        registration = build_registration_network(cls.network_name, configuration_manager.patch_size, cls.preset,
                                                  num_input_channels, cls.diffeomorphic)
        return AtlasSegmenter(registration, num_output_channels, cls.fusion, cls.atlas_batch)

    def initialize(self):
        first_time = not self.was_initialized
        super().initialize()
        if first_time:
            self.load_atlases()

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        if not self.is_ddp and self.batch_size < 2:
            self.batch_size = 2  # a batch must hold a pair

    def load_atlases(self) -> None:
        """Fill the network's atlas bank with the fold's (selected) training cases, fitted to the patch."""
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        training_keys, _ = self.do_split()
        keys = select_atlases(list(training_keys), os.environ.get(ATLAS_ENV), self.seed)
        dataset = infer_dataset_class(self.preprocessed_dataset_folder)(self.preprocessed_dataset_folder, keys)
        patch = tuple(self.configuration_manager.patch_size)
        images, labels = [], []
        for key in keys:
            data, segmentation = dataset.load_case(key)[:2]
            data, segmentation = np.asarray(data, dtype=np.float32), np.asarray(segmentation)
            if len(patch) == 2:  # 2d: a 2D image is stored as (C, 1, H, W)
                if data.shape[1] != 1:
                    raise RuntimeError(f"{type(self).__name__}: the 2d configuration registers 2D images; case "
                                       f"{key} has {data.shape[1]} slices (train 3d_fullres)")
                data, segmentation = data[:, 0], segmentation[:, 0]
            images.append(fit_to_shape(torch.from_numpy(data), patch))
            labels.append(fit_to_shape(torch.from_numpy(np.maximum(segmentation, 0).astype(np.int16)), patch))
        self.network_module.atlases.fill(torch.stack(images), torch.stack(labels))
        if self.local_rank == 0:
            with open(os.path.join(self.output_folder, "dca_atlases.json"), "w") as handle:
                json.dump({"atlases": keys, "patch_size": list(patch), "fusion": self.fusion}, handle, indent=1)
        self.print_to_log_file(f"DCARegSeg: {len(keys)} atlases from the fold's training cases")

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, _, _, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, False, tuple(self.configuration_manager.patch_size), None

    @staticmethod
    def get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        # no spatial or intensity augmentation: pairs must stay aligned (module docstring)
        return ExtTrainerBase.get_validation_transforms(deep_supervision_scales, is_cascaded, foreground_labels,
                                                        regions, ignore_label)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # one output

    def _build_loss(self):
        return None  # see loss_terms

    def configure_optimizers(self):
        return adam_with_poly_decay(self.network.parameters(), self.initial_lr, 0.0, self.num_epochs)

    def loss_terms(self, batch: dict) -> tuple[dict, torch.Tensor, torch.Tensor]:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        labels = (target[0] if isinstance(target, list) else target).to(self.device, non_blocking=True)
        if data.shape[0] < 2:
            raise RuntimeError(f"{type(self).__name__} registers pairs within a batch: batch size >= 2 needed")
        terms, displacement = pair_terms(self.network, data, labels, self.label_manager.num_segmentation_heads,
                                         self.ncc_window, self.device.type == "cuda")
        total = terms["ncc"] + self.lambda_reg * terms["diffusion"]
        if "dice" in terms and self.lambda_seg > 0:
            total = total + self.lambda_seg * terms["dice"]
        terms["total"] = total
        return terms, displacement, labels

    def train_step(self, batch: dict) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        terms, _, _ = self.loss_terms(batch)
        self.backward_and_step(terms["total"])
        return {"loss": terms["total"].detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        from nnunet_ext.methods.dca.transform import warp

        terms, displacement, labels = self.loss_terms(batch)
        warped = warp(labels.roll(-1, 0).float(), displacement, "nearest", "zeros").round().long()
        truth = labels.long()
        tp, fp, fn = hard_label_counts(warped, truth, range(1, self.label_manager.num_segmentation_heads))
        return {"loss": terms["total"].detach().cpu().numpy(), "tp_hard": tp, "fp_hard": fp, "fn_hard": fn}


class DCARegSegTrainer_small(DCARegSegTrainer):
    """CPU-sized TM-DCA (``small`` preset: embed 16, one block per stage) for tests, phantoms and CPU benchmarks."""

    preset = "small"
    conformance_variant_of = "DCARegSegTrainer"


class DCARegSegTrainer_similarity(DCARegSegTrainer):
    """Locally similarity-weighted label fusion instead of the majority vote."""

    fusion = "similarity"
    conformance_variant_of = "DCARegSegTrainer"


class DCARegSegTrainer_small_similarity(DCARegSegTrainer_small):
    """CPU-sized, similarity-weighted fusion."""

    fusion = "similarity"
    conformance_variant_of = "DCARegSegTrainer"


class DCARegSegTrainer_diffeo(DCARegSegTrainer):
    """Diffeomorphic output: stationary velocity field integrated by scaling and squaring."""

    diffeomorphic = True
    conformance_variant_of = "DCARegSegTrainer"


class ConvNetRegSegTrainer(DCARegSegTrainer):
    """The VoxelMorph-style ConvNet baseline with TM-DCA's decoder, trained and applied identically."""

    network_name = "convnet"
    conformance_variant_of = "DCARegSegTrainer"


class ConvNetRegSegTrainer_small(ConvNetRegSegTrainer):
    """CPU-sized ConvNet baseline."""

    preset = "small"
    conformance_variant_of = "DCARegSegTrainer"
