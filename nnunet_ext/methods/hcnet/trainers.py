"""HCNet (Xie et al., "Tumor Segmentation with Heterogeneity Clustering in Non-contrast Breast MRI") stages 2 and 3 as
nnU-Net trainers. Stage 1 is ``nnunet-ext hcnet cluster`` (:mod:`nnunet_ext.methods.hcnet.cluster`).

1. ``HCNetHIPMTrainer`` (Sect. 2.2) trains the heterogeneity information prediction model on the map dataset that
   ``hcnet cluster`` writes (image: pre-contrast; label: 0 outside the ROI, clusters 1..K): a 3D UX-Net predicting the
   K + 1 classes, loss Eq. 2 (Dice Eq. 3 + weighted cross-entropy Eq. 4, class weights inversely proportional to the
   voxel frequency of each class in the fold's training cases), Adam at lr 1e-3 (the paper gives the rate, we chose
   Adam), 1000 epochs. No deep supervision (UX-Net has one output). Variants: ``_small`` (CPU widths), ``_resunet``
   and ``_vnet`` (the Fig. 3 backbones) and their ``_small_`` forms.
2. ``HCNetTrainer`` (KIS-Net, Sect. 2.3) trains on the labelled pre-contrast-only dataset: ResUNet backbone (the plans'
   stages and widths, residual blocks) + the frozen HIPM's softmax fused by the KIFB
   (:mod:`nnunet_ext.methods.hcnet.network`), loss Eq. 5 (Dice + 5 BCE), Adam at lr 5e-3, 300 epochs. The HIPM's
   weights are loaded when training starts and are part of the checkpoint, so ``nnUNetv2_predict -tr HCNetTrainer``
   needs only pre-contrast images.

Where ``HCNetTrainer`` finds the HIPM (training only), in this order:

- ``nnUNet_ext_hcnet_hipm_checkpoint=/path/checkpoint_final.pth`` if set;
- else ``$nnUNet_results/<map dataset>/<HIPM trainer>__<plans>__<configuration>/fold_<F>/checkpoint_final.pth``, where
  <map dataset> is ``nnUNet_ext_hcnet_map_dataset`` (id or name) or the ``hcnet_map_dataset`` key of the labelled
  dataset's dataset.json, <HIPM trainer> the class's ``hipm_trainer`` and F ``nnUNet_ext_hcnet_hipm_fold`` (default
  ``all``: the HIPM learns from every clustered case, ``nnUNetv2_train MAP_ID 3d_fullres all``).

A HIPM is refused when it predicts another number of clusters than the trainer's ``n_clusters`` (paper: 10), or when
its dataset was preprocessed differently from the labelled dataset (spacing, normalization, ...:
:func:`nnunet_ext.training.pretrained.preprocessing_mismatches`): plan both with the same planner.

Baselines on the same data and loss: ``HCNetTrainerNoPrior`` (the paper's ResUNet row) and ``UXNetTrainer`` (3D
UX-Net); the nnU-Net row is plain ``nnUNetTrainer``. ``HCNetTrainer_hardmap`` feeds the one-hot argmax of the HIPM
instead of its softmax.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nnunet_ext.methods.hcnet.backbones import build_hipm_backbone
from nnunet_ext.methods.hcnet.losses import HeterogeneityLoss, KineticSegmentationLoss, inverse_frequency_weights
from nnunet_ext.methods.hcnet.network import HCNetSegmentationNet, residual_unet_from_plans
from nnunet_ext.training.base import ExtTrainerBase, adam_with_poly_decay
from nnunet_ext.training.pretrained import load_pretrained_checkpoint, preprocessing_mismatches


class _SingleOutputTrainer(ExtTrainerBase):
    """3D, one output (no deep supervision), Adam with nnU-Net's poly decay."""

    supported_configurations = ("3d_fullres",)
    spatial_dims = 3

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # single-output networks

    def configure_optimizers(self):
        module = self.network_module
        parameters = module.trainable_parameters() if hasattr(module, "trainable_parameters") else \
            module.parameters()
        return adam_with_poly_decay(parameters, self.initial_lr, self.weight_decay, self.num_epochs)


class HCNetHIPMTrainer(_SingleOutputTrainer):
    """HCNet stage 2: the heterogeneity information prediction model (Sect. 2.2, Eq. 2-4)."""

    backbone = "uxnet"
    preset = "paper"
    initial_lr_default = 1e-3
    num_epochs_default = 1000
    conformance_overrides = {"preset": "small"}

    @classmethod
    def build_hipm(cls, num_input_channels: int, num_output_channels: int) -> nn.Module:
        return build_hipm_backbone(cls.backbone, num_input_channels, num_output_channels, cls.preset)

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        return cls.build_hipm(num_input_channels, num_output_channels)

    def class_voxel_counts(self) -> np.ndarray:
        """Voxels per class over the fold's training cases (preprocessed segmentations; nnU-Net's -1 excluded)."""
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        self.dataset_class = self.dataset_class or infer_dataset_class(self.preprocessed_dataset_folder)
        keys, _ = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, keys)
        n_classes = self.label_manager.num_segmentation_heads
        counts = np.zeros(n_classes, np.int64)
        for key in keys:
            seg = np.asarray(dataset.load_case(key)[1])
            counts += np.bincount(seg[seg >= 0].ravel().astype(np.int64), minlength=n_classes)[:n_classes]
        return counts

    def _build_loss(self):
        counts = self.class_voxel_counts()
        weights = inverse_frequency_weights(counts)
        self.print_to_log_file(f"HCNet HIPM: class voxel counts {counts.tolist()}, Eq. 4 weights "
                               f"{np.round(weights, 4).tolist()}")
        return HeterogeneityLoss(weights).to(self.device)


class HCNetHIPMTrainer_small(HCNetHIPMTrainer):
    """CPU-sized UX-Net (widths 8-16-32-64, one block per stage, hidden 128)."""

    preset = "small"
    conformance_variant_of = "HCNetHIPMTrainer"


class HCNetHIPMTrainer_resunet(HCNetHIPMTrainer):
    """Fig. 3 backbone: ResUNet."""

    backbone = "resunet"
    conformance_variant_of = "HCNetHIPMTrainer"


class HCNetHIPMTrainer_vnet(HCNetHIPMTrainer):
    """Fig. 3 backbone: V-Net."""

    backbone = "vnet"
    conformance_variant_of = "HCNetHIPMTrainer"


class HCNetHIPMTrainer_small_resunet(HCNetHIPMTrainer_resunet):
    preset = "small"


class HCNetHIPMTrainer_small_vnet(HCNetHIPMTrainer_vnet):
    preset = "small"


class _PreOnlySegmentationTrainer(_SingleOutputTrainer):
    """Binary tumour segmentation with Eq. 5 (Dice + 5 BCE on the foreground probability), Adam at 5e-3, 300 epochs
    (Sect. 3): HCNet and the baselines it is compared with on the same data."""

    initial_lr_default = 5e-3
    num_epochs_default = 300
    bce_weight = 5.0  # lambda of Eq. 5

    def initialize(self):
        if not self.was_initialized and (self.label_manager.has_regions
                                         or self.label_manager.num_segmentation_heads != 2):
            raise RuntimeError(f"{type(self).__name__} segments one tumour class (Eq. 5 is binary); "
                               f"{self.plans_manager.dataset_name} has labels {self.dataset_json.get('labels')}")
        super().initialize()

    def _build_loss(self):
        return KineticSegmentationLoss(self.bce_weight)


class HCNetTrainerNoPrior(_PreOnlySegmentationTrainer):
    """The paper's ResUNet baseline: the KIS-Net backbone with its own segmentation head, no heterogeneity prior."""

    backbone_features: tuple[int, ...] | None = None  # None: the plans' widths

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        return residual_unet_from_plans(configuration_manager, num_input_channels, num_output_channels,
                                        cls.backbone_features)[0]


class HCNetTrainer(HCNetTrainerNoPrior):
    """HCNet stage 3, KIS-Net: ResUNet + frozen HIPM prior through the KIFB (Sect. 2.3, Eq. 5)."""

    hipm_trainer: type[HCNetHIPMTrainer] = HCNetHIPMTrainer
    n_clusters = 10            # Sect. 3.2: K = 10
    hard_prior = False
    embed_channels = 16
    conformance_overrides = {"n_clusters": 1}  # the suite's HIPM learns the tumour label: K = 1

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        backbone, feature_channels = residual_unet_from_plans(configuration_manager, num_input_channels,
                                                              num_output_channels, cls.backbone_features,
                                                              features_only=True)
        hipm = cls.hipm_trainer.build_hipm(1, cls.n_clusters + 1)
        return HCNetSegmentationNet(backbone, feature_channels, hipm, cls.n_clusters + 1, num_output_channels,
                                    cls.embed_channels, cls.hard_prior)

    def hipm_checkpoint_path(self) -> Path:
        explicit = os.environ.get("nnUNet_ext_hcnet_hipm_checkpoint")
        if explicit:
            return Path(explicit)
        map_dataset = os.environ.get("nnUNet_ext_hcnet_map_dataset") or self.dataset_json.get("hcnet_map_dataset")
        if not map_dataset:
            raise RuntimeError(f"{type(self).__name__}: set nnUNet_ext_hcnet_hipm_checkpoint to the HIPM's checkpoint "
                               "or nnUNet_ext_hcnet_map_dataset to the map dataset of nnunet-ext hcnet cluster")
        from nnunetv2.paths import nnUNet_results
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

        fold = os.environ.get("nnUNet_ext_hcnet_hipm_fold", "all")
        return (Path(nnUNet_results) / maybe_convert_to_dataset_name(map_dataset)
                / f"{self.hipm_trainer.__name__}__{self.plans_manager.plans_name}__{self.configuration_name}"
                / f"fold_{fold}" / "checkpoint_final.pth")

    def initialize(self):
        was_initialized = self.was_initialized
        super().initialize()
        if not was_initialized:
            self.load_hipm()

    def load_hipm(self) -> None:
        path = self.hipm_checkpoint_path()
        name = type(self).__name__
        checkpoint = load_pretrained_checkpoint(
            path, name, "HIPM", self.hipm_trainer.__name__,
            f"train it with nnUNetv2_train <map dataset> {self.configuration_name} all -tr "
            f"{self.hipm_trainer.__name__}, or set nnUNet_ext_hcnet_hipm_checkpoint", self.device)
        init_args = checkpoint["init_args"]
        clusters = len((init_args.get("dataset_json") or {}).get("labels", {})) - 1
        if clusters != self.n_clusters:
            raise RuntimeError(f"{name}: the HIPM {path} predicts K = {clusters} clusters, {name} expects "
                               f"K = {self.n_clusters} (cluster with nnunet-ext hcnet cluster -K {self.n_clusters})")
        mismatches = preprocessing_mismatches(init_args, self.plans_manager.plans, self.configuration_name,
                                              names=("HIPM", name))
        if mismatches:
            raise RuntimeError(f"{name}: the HIPM {path} saw differently preprocessed images than "
                               f"{self.plans_manager.dataset_name} provides: {'; '.join(mismatches)}. Plan the map "
                               "dataset and the labelled dataset with the same planner and plans name")
        try:
            self.network_module.load_hipm_state(checkpoint["network_weights"])
        except RuntimeError as error:
            first = " ".join(str(error).split())[:300]
            raise RuntimeError(f"{name}: the HIPM {path} does not fit {self.hipm_trainer.__name__}'s network "
                               f"({first})") from None
        self.print_to_log_file(f"HCNet: loaded the frozen HIPM from {path}")


class HCNetTrainer_hardmap(HCNetTrainer):
    """Ablation: the one-hot argmax of the HIPM (a hard heterogeneity map) instead of its softmax."""

    hard_prior = True
    conformance_variant_of = "HCNetTrainer"


class HCNetTrainer_small(HCNetTrainer):
    """CPU-sized: backbone widths 16-32-64-128 (or the plans' if smaller stages), the small UX-Net HIPM."""

    hipm_trainer = HCNetHIPMTrainer_small
    backbone_features = (16, 32, 64, 128)
    conformance_variant_of = None  # another HIPM class: the suite counts a class-valued attribute as code


class HCNetTrainer_small_hardmap(HCNetTrainer_small):
    hard_prior = True
    conformance_variant_of = "HCNetTrainer_small"


class HCNetTrainerNoPrior_small(HCNetTrainerNoPrior):
    backbone_features = (16, 32, 64, 128)
    conformance_variant_of = "HCNetTrainerNoPrior"


class UXNetTrainer(_PreOnlySegmentationTrainer):
    """Baseline: 3D UX-Net segmentation (Table 1's 3DUXNet row) with the same loss and schedule as HCNet."""

    preset = "paper"
    conformance_overrides = {"preset": "small"}

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        return build_hipm_backbone("uxnet", num_input_channels, num_output_channels, cls.preset)


class UXNetTrainer_small(UXNetTrainer):
    preset = "small"
    conformance_variant_of = "UXNetTrainer"
