"""nnU-Net trainers for FFPN (Chen et al., MICCAI 2023): ``nnUNetv2_train DATASET 2d FOLD -tr FFPNTrainer``.

What the trainer changes in nnU-Net, and nothing else:

- Network: :class:`..network.FFPN`, 2D only. Its anchor buffer is filled in :meth:`FFPNTrainer.initialize` from the
  fold's preprocessed *training* cases (k-means over their contours, :func:`..anchors.fit_anchors`) and is saved in
  the checkpoint, so ``nnUNetv2_predict`` gets the same anchors; a copy is written to ``ffpn_anchors.json``.
- Targets: made on the fly from nnU-Net's augmented label patches (:mod:`..targets`); the patch is resized to
  ``input_size`` by the network, so targets and anchors live in network pixels.
- Loss: Eq. 3. Optimiser Adam, lr 1e-3 (the paper's learning rate), nnU-Net's poly schedule.
- Inference: the network's eval output is a one-hot label map per patch, so nnU-Net's predictor, export and fold
  ensembling work unchanged. Mirroring test-time augmentation is off (the paper uses none).
"""
from __future__ import annotations

import json

import numpy as np
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from torch import nn

from nnunet_ext.training.base import ExtTrainerBase, hard_label_counts

from . import anchors as anchor_math
from . import fourier
from .network import FFPN
from .targets import batch_loss, batch_targets, csr_loss, image_targets

MAX_ANCHOR_SLICES = 2000  # k-means sample cap: a 3D dataset trained in 2d has many slices


class FFPNTrainer(ExtTrainerBase):
    """FFPN without refinement (Table 1 row "FFPN")."""

    input_size: int = 416           # the paper's network input
    preset: str = "resnet18"        # backbone; the paper does not name one
    harmonics: int = fourier.DEFAULT_ORDER
    num_anchors: int = anchor_math.DEFAULT_NUM_ANCHORS
    num_points: int = 64            # contour points for decoding and the contour loss
    refine: bool = False            # CSR (FFPN-R)
    initial_lr_default = 1e-3
    supported_configurations = ("2d",)
    spatial_dims = 2
    conformance_overrides = {"input_size": 64, "preset": "tiny"}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False  # one output

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True) -> nn.Module:
        # Placeholder anchors of the right shape: training fills them, prediction loads them from the checkpoint.
        placeholder = np.zeros((cls.num_anchors, cls.harmonics, 4))
        return FFPN(num_input_channels, num_output_channels - 1, placeholder, input_size=cls.input_size,
                    preset=cls.preset, num_points=cls.num_points, refine=cls.refine)

    def initialize(self):
        first_time = not self.was_initialized
        super().initialize()
        if first_time:
            fractions = self.fit_fold_anchors()
            self.network_module.anchor_fractions.copy_(torch.as_tensor(fractions, dtype=torch.float32))

    def training_contours(self) -> np.ndarray:
        """Eq. 1 coefficients (network pixels) of every object in the fold's training cases, slice by slice."""
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        training_keys, _ = self.do_split()
        dataset = infer_dataset_class(self.preprocessed_dataset_folder)(self.preprocessed_dataset_folder,
                                                                        training_keys)
        rng = np.random.default_rng(self.seed)
        patch_h, patch_w = self.configuration_manager.patch_size
        num_classes = self.label_manager.num_segmentation_heads - 1
        per_case = max(1, MAX_ANCHOR_SLICES // max(1, len(training_keys)))
        collected = []
        for key in training_keys:
            segmentation = np.asarray(dataset.load_case(key)[1][0])  # (Z, H, W); Z = 1 for 2D images
            labelled = np.flatnonzero((segmentation > 0).reshape(len(segmentation), -1).any(1))
            if len(labelled) > per_case:
                labelled = np.sort(rng.choice(labelled, per_case, replace=False))
            # the network resizes a patch, not the image: contours scale by input_size / patch_size
            scale = (self.input_size / patch_w, self.input_size / patch_h)
            for z in labelled:
                targets = image_targets(segmentation[z], num_classes, self.harmonics, scale)
                collected.extend(targets.coefficients)
        return np.asarray(collected).reshape(-1, self.harmonics, 4)

    def fit_fold_anchors(self) -> np.ndarray:
        contours = self.training_contours()
        if len(contours) == 0:
            raise RuntimeError(f"{type(self).__name__}: no labelled object in the training cases of fold "
                               f"{self.fold} of {self.plans_manager.dataset_name}; FFPN needs contours for anchors")
        fractions = anchor_math.fit_anchors(contours, self.input_size, self.num_anchors, seed=self.seed)
        if self.local_rank == 0:
            with open(f"{self.output_folder}/ffpn_anchors.json", "w") as handle:
                json.dump({"input_size": self.input_size, "fractions_of_input_size": fractions.tolist(),
                           "training_contours": len(contours)}, handle)
        self.print_to_log_file(f"FFPN: {len(fractions)} anchors from {len(contours)} training contours")
        return fractions

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        result = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None  # no test-time mirroring, as in the paper
        return result

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # FFPN has a single output

    def _build_loss(self):
        return None  # Eq. 3 needs anchors and contours: see compute_loss

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def compute_loss(self, maps: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        network = self.network_module
        targets = batch_targets(labels, network.num_classes, self.harmonics, network.input_size)
        loss = batch_loss(maps, targets, network.anchors_in_pixels(), network.stride, self.num_points)["total"]
        if network.csr is not None:
            loss = loss + csr_loss(network, maps, targets, self.num_points)
        return loss

    @staticmethod
    def _labels(batch: dict) -> torch.Tensor:
        target = batch["target"]
        return target[0] if isinstance(target, list) else target

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            with torch.autocast("cuda"):
                maps = self.network(data)
        else:
            maps = self.network(data)
        loss = self.compute_loss(maps, self._labels(batch))  # float32: contour decoding is not fp16-safe
        self.backward_and_step(loss)
        return {"loss": loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        labels = self._labels(batch).to(self.device)
        network = self.network_module
        resized = nn.functional.interpolate(data, size=(network.input_size,) * 2, mode="bilinear",
                                            align_corners=False)
        maps = network.forward_maps(resized)
        loss = self.compute_loss(maps, labels)
        predicted = network.label_logits(maps, data.shape[-2:]).argmax(1)
        truth = labels[:, 0].long()
        tp, fp, fn = hard_label_counts(predicted, truth, range(1, network.num_classes + 1))
        return {"loss": loss.detach().cpu().numpy(), "tp_hard": tp, "fp_hard": fp, "fn_hard": fn}


class FFPNTrainer_tiny(FFPNTrainer):
    """CPU-sized FFPN for tests and quick looks: narrow FPN, 64 x 64 network input."""

    input_size = 64
    preset = "tiny"
    conformance_overrides = {}


class FFPNRTrainer(FFPNTrainer):
    """FFPN-R: FFPN plus Contour Sampling Refinement (Table 1 row "FFPN-R"), trained jointly with Eq. 3 + CSR loss."""

    refine = True


class FFPNRTrainer_tiny(FFPNTrainer_tiny):
    """CPU-sized FFPN-R for tests."""

    refine = True


class FFPNTrainer_cpu(FFPNTrainer):
    """FFPN with a 224 x 224 network input instead of the paper's 416 x 416, otherwise unchanged: the CPU budget
    of the HC18 and phantom benchmarks (about 3x cheaper per step on 2 cores)."""

    input_size = 224


class FFPNRTrainer_cpu(FFPNTrainer_cpu):
    """FFPN-R at the CPU-budget input size (224 x 224)."""

    refine = True
