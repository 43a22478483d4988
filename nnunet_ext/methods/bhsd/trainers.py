"""nnU-Net trainers for the BHSD experiments (Wu et al., MLMI 2023): ``nnUNetv2_train DATASET 3d_fullres FOLD -tr X``.

================================  =============================================================================
trainer                           what it changes in nnU-Net
================================  =============================================================================
``BHSDTrainer``                   the fold's bleeding scans only (Table 1 "nnUNet3D", Table 2 "96B"); negatives and
                                  unlabeled scans of the dataset are left out of training (:mod:`.split`)
``BHSDTrainer_neg200`` ...        plus 200 / 400 / 600 / 800 negative scans (Table 2 rows); ``_allneg``: all of them
``BHSDSingleClassTrainer_EDH``... one binary model per class (Table 3 "1class-X"), merged by ``nnunet-ext bhsd merge``
``BHSDTrainer_UNETR``             MONAI UNETR / Swin UNETR instead of the U-Net (Table 1 rows), AdamW 1e-4 as their
``BHSDTrainer_SwinUNETR``         official settings; ``_cpu`` variants are narrower for CPU benchmarks
``CPSTrainer``                    cross pseudo supervision with the dataset's unlabeled scans (Table 4, :mod:`.cps`)
``SupOnlyTrainer``                the same two-network code path with CPS weight 0 (Table 4 "SupOnly")
================================  =============================================================================

Sampling: nnU-Net's patch sampler, except that foreground-forced samples (nnU-Net's oversampled third of a batch)
always come from scans that hold foreground of the trained classes (:class:`~nnunet_ext.training.dataloading.
ForegroundFirstDataLoader`), so adding negatives does not dilute them. The number of negatives can also be set with
``nnUNet_ext_bhsd_negatives=N`` (or ``all``) for studies at other scales; it is logged and stored in
``bhsd_split.json`` next to the checkpoint. A dataset's binary (merged-foreground) task, as in Table 4, is a dataset
whose labels are ``background`` and one hemorrhage class (``nnunet-ext synth head_ct_ich --option
merge_classes=true``); every trainer here handles either.
"""
from __future__ import annotations

import json
import os

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn

from nnunet_ext.training.base import ExtTrainerBase
from nnunet_ext.training.dataloading import ForegroundFirstDataLoader, substituted_data_loader, wrap_in_augmenter

from .cps import NetworkPair, cps_loss, sigmoid_rampup
from .networks import build_swin_unetr, build_unetr
from .split import FoldCases, fold_cases, has_foreground

NEGATIVES_ENV = "nnUNet_ext_bhsd_negatives"
BHSD_CLASSES = {"EDH": 1, "IPH": 2, "IVH": 3, "SAH": 4, "SDH": 5}


class BHSDTrainer(ExtTrainerBase):
    """Multi-class 3D nnU-Net on the fold's bleeding scans plus ``num_negatives`` negative scans (None: all)."""

    num_negatives: int | None = 0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        requested = os.environ.get(NEGATIVES_ENV, "").strip()
        if requested:
            if requested != "all" and not requested.isdigit():
                raise ValueError(f"{NEGATIVES_ENV} must be a number >= 0 or 'all', got {requested!r}")
            self.num_negatives = None if requested == "all" else int(requested)
        self.fold_cases: FoldCases | None = None

    # --- which cases ------------------------------------------------------------------------------------------------

    def trained_classes(self) -> tuple[int, ...] | None:
        """Label values foreground-forced samples are centred on (None: any foreground class)."""
        return None

    def do_split(self):
        train_keys, val_keys = super().do_split()
        if self.fold_cases is None:
            try:
                self.fold_cases = fold_cases(train_keys, val_keys, self.dataset_json, self.preprocessed_dataset_folder,
                                             self.num_negatives)
            except ValueError as exc:
                raise RuntimeError(f"{type(self).__name__}, {self.plans_manager.dataset_name} fold {self.fold}: "
                                   f"{exc}") from None
            cases = self.fold_cases
            self.print_to_log_file(
                f"BHSD split: {len(cases.bleeding)} bleeding + {len(cases.negatives)} of "
                f"{cases.available_negatives} negative scans for training, {len(cases.val)} for validation; "
                f"{len(cases.unlabeled)} unlabeled scans not trained on with a label")
            if self.local_rank == 0:
                os.makedirs(self.output_folder, exist_ok=True)
                with open(os.path.join(self.output_folder, "bhsd_split.json"), "w") as handle:
                    json.dump({"num_negatives_requested": self.num_negatives, **cases.__dict__}, handle, indent=1)
        return self.fold_cases.train, self.fold_cases.val

    def _foreground_first_loader(self, *args, **kwargs):
        """Factory for :func:`substituted_data_loader`: nnU-Net's arguments, our sampling policy."""
        identifiers = args[0].identifiers
        classes = self.trained_classes()
        with_class = [k for k in identifiers if has_foreground(self.preprocessed_dataset_folder, k, classes)]
        if not with_class and classes is not None:  # a one-class model on a fold without its class
            with_class = [k for k in identifiers if has_foreground(self.preprocessed_dataset_folder, k)]
        return ForegroundFirstDataLoader(*args, foreground_cases=with_class, foreground_classes=classes, **kwargs)

    def get_dataloaders(self):
        with substituted_data_loader(self._foreground_first_loader):
            return super().get_dataloaders()


def _negatives_variant(count: int | None) -> type:
    suffix = "allneg" if count is None else f"neg{count}"
    doc = (f"BHSDTrainer with {'every negative scan' if count is None else f'{count} negative scans'} of the fold "
           f"(BHSD Table 2)")
    return type(f"BHSDTrainer_{suffix}", (BHSDTrainer,), {"num_negatives": count, "__doc__": doc,
                                                          "__module__": __name__,
                                                          "conformance_variant_of": "BHSDTrainer"})


BHSDTrainer_neg200 = _negatives_variant(200)
BHSDTrainer_neg400 = _negatives_variant(400)
BHSDTrainer_neg600 = _negatives_variant(600)
BHSDTrainer_neg800 = _negatives_variant(800)
BHSDTrainer_allneg = _negatives_variant(None)


# --- Table 3: one binary model per class ------------------------------------------------------------------------------

SINGLE_CLASS_KEY = "nnunet_ext_single_class"


def one_class_dataset_json(dataset_json: dict, label_value: int) -> dict:
    """dataset.json of a binary model of one class: labels background / that class as 1, and the class's name and
    original value under ``nnunet_ext_single_class`` (nnU-Net copies dataset.json into the model and prediction
    folders, so ``nnunet-ext bhsd merge`` knows which class a folder's 1 stands for)."""
    names = {v: k for k, v in dataset_json["labels"].items() if isinstance(v, int)}
    if label_value not in names or label_value == 0:
        raise RuntimeError(f"dataset labels {dataset_json['labels']} have no foreground class {label_value}")
    return {**dataset_json, "labels": {"background": 0, names[label_value]: 1},
            SINGLE_CLASS_KEY: {"name": names[label_value], "value": label_value,
                               "dataset_labels": dataset_json["labels"]}}


class BHSDSingleClassTrainer(BHSDTrainer):
    """Binary model of ``single_class`` (a label value of the dataset) on the same cases and plans (BHSD Table 3,
    "1class-X"). Targets are ``label == single_class``; foreground-forced patches centre on that class; nnU-Net's
    final validation compares with the same binary reference (not with label 1 of the dataset)."""

    single_class: int = BHSD_CLASSES["EDH"]

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, one_class_dataset_json(dataset_json, self.single_class), device)

    def trained_classes(self):
        return (self.single_class,)

    def _binary(self, target):
        if isinstance(target, list):
            return [(t == self.single_class).to(t.dtype) for t in target]
        return (target == self.single_class).to(target.dtype)

    def train_step(self, batch: dict) -> dict:
        return super().train_step({**batch, "target": self._binary(batch["target"])})

    def validation_step(self, batch: dict) -> dict:
        return super().validation_step({**batch, "target": self._binary(batch["target"])})

    def perform_actual_validation(self, save_probabilities: bool = False):
        # nnU-Net scores the validation predictions against <preprocessed>/gt_segmentations: give it binary copies
        import tempfile

        import SimpleITK as sitk

        base = self.preprocessed_dataset_folder_base
        with tempfile.TemporaryDirectory(prefix="single_class_gt_") as tmp:
            os.makedirs(os.path.join(tmp, "gt_segmentations"))
            for name in os.listdir(os.path.join(base, "gt_segmentations")):
                image = sitk.ReadImage(os.path.join(base, "gt_segmentations", name))
                binary = sitk.Cast(image == self.single_class, image.GetPixelID())
                binary.CopyInformation(image)
                sitk.WriteImage(binary, os.path.join(tmp, "gt_segmentations", name))
            self.preprocessed_dataset_folder_base = tmp
            try:
                super().perform_actual_validation(save_probabilities)
            finally:
                self.preprocessed_dataset_folder_base = base


def _single_class_variant(name: str) -> type:
    # EDH (label 1) gets the full conformance run: the suite's phantom has label 1 only
    variant_of = None if name == "EDH" else "BHSDSingleClassTrainer_EDH"
    return type(f"BHSDSingleClassTrainer_{name}", (BHSDSingleClassTrainer,),
                {"single_class": BHSD_CLASSES[name], "__module__": __name__, "conformance_variant_of": variant_of,
                 "__doc__": f"Binary {name} model (label {BHSD_CLASSES[name]}) for BHSD Table 3"})


BHSDSingleClassTrainer_EDH = _single_class_variant("EDH")
BHSDSingleClassTrainer_IPH = _single_class_variant("IPH")
BHSDSingleClassTrainer_IVH = _single_class_variant("IVH")
BHSDSingleClassTrainer_SAH = _single_class_variant("SAH")
BHSDSingleClassTrainer_SDH = _single_class_variant("SDH")


# --- Table 1: transformer baselines -------------------------------------------------------------------------------

class _SingleOutputNetwork:
    """Mixin for networks without nnU-Net's deep supervision; optimiser AdamW as UNETR/Swin UNETR's official code."""

    initial_lr_default = 1e-4
    weight_decay = 1e-5
    supported_configurations = ("3d_fullres",)
    network_builder = None  # build_unetr / build_swin_unetr, called with ``network_kwargs``
    network_kwargs: dict = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        return cls.network_builder(num_input_channels, num_output_channels, configuration_manager.patch_size,
                                   **cls.network_kwargs)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # one output

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


class BHSDTrainer_UNETR(_SingleOutputNetwork, BHSDTrainer):
    """MONAI UNETR in nnU-Net's pipeline (BHSD Table 1 "UNETR")."""

    network_builder = staticmethod(build_unetr)
    network_kwargs = {"feature_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_heads": 12}
    conformance_overrides = {"network_kwargs": {"feature_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_heads": 2}}


class BHSDTrainer_UNETR_cpu(BHSDTrainer_UNETR):
    """UNETR at a quarter of the width (hidden 192, 4 heads, feature size 8) for CPU benchmarks."""

    conformance_variant_of = "BHSDTrainer_UNETR"

    network_kwargs = {"feature_size": 8, "hidden_size": 192, "mlp_dim": 768, "num_heads": 4}


class BHSDTrainer_SwinUNETR(_SingleOutputNetwork, BHSDTrainer):
    """MONAI Swin UNETR in nnU-Net's pipeline (BHSD Table 1 "Swin UNETR")."""

    network_builder = staticmethod(build_swin_unetr)
    network_kwargs = {"feature_size": 48}
    conformance_overrides = {"network_kwargs": {"feature_size": 12, "depths": (1, 1, 1, 1)}}


class BHSDTrainer_SwinUNETR_cpu(BHSDTrainer_SwinUNETR):
    """Swin UNETR with feature size 12 for CPU benchmarks."""

    conformance_variant_of = "BHSDTrainer_SwinUNETR"

    network_kwargs = {"feature_size": 12}


# --- Table 4: cross pseudo supervision ------------------------------------------------------------------------------

class CPSTrainer(BHSDTrainer):
    """Two nnU-Net U-Nets trained with cross pseudo supervision on labeled + unlabeled scans (:mod:`.cps`).

    ``unlabeled_pool``: ``"unlabeled_cases"`` (dataset.json ``unlabeled_cases``: the converter's pool or phantom scans
    whose labels were withheld) or ``"training_cases"`` (the fold's own training images only). Unlabeled batches have
    the labeled batch size and nnU-Net's training augmentation, without foreground oversampling. The predictor and
    nnU-Net's validation use network ``a``.
    """

    cps_weight: float = 1.5           # lambda of the CPS paper (its PASCAL VOC setting)
    cps_rampup_fraction: float = 0.4  # share of the epochs over which lambda ramps up
    unlabeled_pool: str = "unlabeled_cases"
    conformance_overrides = {"unlabeled_pool": "training_cases"}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.dataloader_unlabeled = None

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        # built one after the other from the seeded generator: same architecture, different initial weights
        a, b = (super(CPSTrainer, cls).build_network_architecture(plans_manager, configuration_manager,
                                                                  num_input_channels, num_output_channels,
                                                                  enable_deep_supervision) for _ in range(2))
        return NetworkPair(a, b)

    def set_deep_supervision_enabled(self, enabled: bool):
        for network in (self.network_module.a, self.network_module.b):
            network.decoder.deep_supervision = enabled

    def current_cps_weight(self) -> float:
        progress = self.current_epoch / max(1, self.num_epochs)
        return self.cps_weight * sigmoid_rampup(progress, self.cps_rampup_fraction)

    def unlabeled_identifiers(self) -> list[str]:
        self.do_split()
        if self.unlabeled_pool == "training_cases":
            return list(self.fold_cases.train)
        if self.unlabeled_pool != "unlabeled_cases":
            raise ValueError(f"unlabeled_pool must be 'unlabeled_cases' or 'training_cases', got "
                             f"{self.unlabeled_pool!r}")
        if not self.fold_cases.unlabeled:
            raise RuntimeError(f"{type(self).__name__}: dataset.json of {self.plans_manager.dataset_name} lists no "
                               f"unlabeled_cases (convert with an unlabeled pool, or synth with --labeled_cases)")
        return list(self.fold_cases.unlabeled)

    def get_dataloaders(self):
        calls = []

        def recording_factory(*args, **kwargs):
            calls.append((args, kwargs))
            return self._foreground_first_loader(*args, **kwargs)

        with substituted_data_loader(recording_factory):
            train, val = super(BHSDTrainer, self).get_dataloaders()
        if self.cps_weight > 0:
            from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

            (dataset, batch_size, initial_patch_size, patch_size, label_manager), kwargs = calls[0]
            pool = type(dataset)(self.preprocessed_dataset_folder, self.unlabeled_identifiers())
            loader = nnUNetDataLoader(pool, batch_size, initial_patch_size, patch_size, label_manager,
                                      oversample_foreground_percent=0.0, transforms=kwargs["transforms"])
            self.dataloader_unlabeled = wrap_in_augmenter(loader, pin_memory=self.device.type == "cuda",
                                                          in_process=self.deterministic)
        return train, val

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.print_to_log_file(f"CPS weight {self.current_cps_weight():.4f}", also_print_to_console=False)

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        weight = self.current_cps_weight()
        images = data
        if weight > 0:
            unlabeled = next(self.dataloader_unlabeled)["data"].to(self.device, non_blocking=True)
            images = torch.cat([data, unlabeled])
        n = data.shape[0]
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            out_a, out_b = self.network(images, both=True)
            supervised = self.loss(_labeled(out_a, n), target) + self.loss(_labeled(out_b, n), target)
            cross = cps_loss(_full_resolution(out_a), _full_resolution(out_b)) if weight > 0 \
                else torch.zeros((), device=self.device)
            loss = supervised + weight * cross
        self.backward_and_step(loss)
        return {"loss": loss.detach().cpu().numpy()}

    def on_train_end(self):
        super().on_train_end()
        finish = getattr(self.dataloader_unlabeled, "_finish", None)
        if finish is not None:
            finish()


class SupOnlyTrainer(CPSTrainer):
    """Two networks, labeled scans only: CPSTrainer with weight 0 (BHSD Table 4 "SupOnly"); no unlabeled batch is
    drawn, so the supervised path is CPS's without its extra term."""

    cps_weight = 0.0


def _labeled(output, n: int):
    return [o[:n] for o in output] if isinstance(output, (list, tuple)) else output[:n]


def _full_resolution(output):
    return output[0] if isinstance(output, (list, tuple)) else output
