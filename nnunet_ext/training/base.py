"""Shared behaviour of nnunet-ext trainers: seeding, an opt-in deterministic mode and CPU-sized schedules.

Environment variables (read when the trainer is created, logged in the training log):

| variable | effect |
| --- | --- |
| ``nnUNet_ext_seed`` | seed for python/numpy/torch (default 0); set before the network is built |
| ``nnUNet_ext_deterministic=1`` | ``torch.use_deterministic_algorithms(True)`` (and, on CUDA, cuDNN deterministic and
  ``CUBLAS_WORKSPACE_CONFIG=:4096:8``) and augmentation in the main process |
| ``nnUNet_ext_epochs`` / ``nnUNet_ext_iters`` / ``nnUNet_ext_val_iters`` | override the schedule (benchmarks give every
  model the same budget this way) |
| ``nnUNet_ext_skip_final_validation=1`` | skip nnU-Net's prediction of the validation cases after training (integration
  tests that predict their own test cases save its worker start-up; ``nnUNetv2_find_best_configuration`` needs it) |
| ``nnUNet_ext_adam_lr=LR`` | replace the trainer's optimizer by Adam at LR with nnU-Net's poly decay (every model of a
  short CPU benchmark: nnU-Net's SGD learns nothing in a few hundred steps); logged |

Trainers that override ``train_step`` call :meth:`ExtTrainerBase.backward_and_step` (nnU-Net's GradScaler logic) and
reach submodules through :attr:`ExtTrainerBase.network_module` (unwraps DDP and ``torch.compile``), so they stay
correct on CUDA, under AMP and under DDP.
"""
from __future__ import annotations

import os
import random
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

from nnunet_ext.env import environ_set


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def env_flag(name: str) -> bool:
    """An on/off environment variable: ``1``, ``true`` or ``t`` (any case) switch it on."""
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "t")


def check_patch_dimensions(trainer: str, spatial_dims: int | None, patch_size, configuration: str) -> None:
    """Refuse a configuration whose patch has another number of spatial axes than the trainer's network handles."""
    if spatial_dims is not None and len(patch_size) != spatial_dims:
        raise RuntimeError(f"{trainer} is {spatial_dims}D: train it with {'the 2d' if spatial_dims == 2 else 'a 3d'} "
                           f"configuration, not {configuration!r}")


def adam_with_poly_decay(parameters, lr: float, weight_decay: float, num_epochs: int):
    """Adam at ``lr`` with nnU-Net's poly learning-rate decay (nnU-Net's ``nnUNetTrainerVanillaAdam`` recipe):
    ``(optimizer, scheduler)`` as ``configure_optimizers`` returns them."""
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    return optimizer, PolyLRScheduler(optimizer, lr, num_epochs)


class CosineLRScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Cosine decay ``lr = initial_lr (1 + cos(pi t / T)) / 2`` stepped the way nnU-Net steps its PolyLRScheduler
    (``step(current_epoch)`` at each epoch start; ``t`` counts calls when no step is given)."""

    def __init__(self, optimizer, initial_lr: float, max_steps: int):
        self.initial_lr, self.max_steps, self.ctr = initial_lr, max_steps, 0
        super().__init__(optimizer, -1)

    def lr_at(self, step: int) -> float:
        return 0.5 * self.initial_lr * (1 + np.cos(np.pi * min(step, self.max_steps) / self.max_steps))

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step, self.ctr = self.ctr, self.ctr + 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(current_step)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def unwrap_network(network: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel and ``torch.compile`` wrappers (in the order nnU-Net applies them)."""
    from torch._dynamo import OptimizedModule

    if isinstance(network, nn.parallel.DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


def hard_label_counts(predicted: torch.Tensor, truth: torch.Tensor, classes) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
    """Per class of ``classes``: true positives, false positives and false negatives of two integer label maps, as
    nnU-Net's ``validation_step`` returns them (``tp_hard``, ``fp_hard``, ``fn_hard``) for its pseudo Dice."""
    tp = np.array([((predicted == c) & (truth == c)).sum().item() for c in classes])
    fp = np.array([((predicted == c) & (truth != c)).sum().item() for c in classes])
    fn = np.array([((predicted != c) & (truth == c)).sum().item() for c in classes])
    return tp, fp, fn


def enable_deterministic_algorithms() -> None:
    """Deterministic kernels on CPU and CUDA. cuBLAS needs its workspace config set before the first CUDA matmul,
    otherwise ``use_deterministic_algorithms`` raises on CUDA."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class ExtTrainerBase(nnUNetTrainer):
    """Base of nnunet-ext trainers. Subclasses set the class attributes below instead of editing ``__init__``.

    Every trainer the ``trainers/`` shims export is checked by ``tests/test_trainer_conformance.py`` (network builds,
    train step, pickling, checkpoint round trip, ``nnUNetPredictor``); two attributes shape what it checks:

    - ``supported_configurations``: the nnU-Net configurations the trainer's network is meant for; narrow it (e.g.
      ``("3d_fullres",)``) when a method is 3D only.
    - ``conformance_overrides``: class attributes the suite sets on the declaring class while it runs, so the class
      stays the same importable object (e.g. CPU-sized widths for a paper-sized network). Subclasses that inherit an
      overridden attribute see the preset value; subclasses that set the attribute themselves keep their own.
    - ``conformance_variant_of``: name of an exported trainer whose code this class shares, differing only in
      settings (class attributes, e.g. a paper's table rows: a number of negatives, a class id, a width). The suite
      checks that claim (neither class, nor any class between it and the shared code, defines a method) and then runs
      only the name lookup and pickling checks for the variant; the representative gets the full run.
    """

    num_epochs_default: int | None = None        # None: keep nnU-Net's 1000
    iterations_per_epoch_default: int | None = None
    val_iterations_default: int | None = None
    initial_lr_default: float | None = None
    supported_configurations: tuple[str, ...] = ("2d", "3d_fullres")
    spatial_dims: int | None = None              # 2 or 3: refuse patches of the other kind (None: both work)
    conformance_overrides: Mapping[str, Any] = MappingProxyType({})  # read-only: a shared mutable default would leak
    conformance_variant_of: str | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        check_patch_dimensions(type(self).__name__, self.spatial_dims, self.configuration_manager.patch_size,
                               configuration)
        schedule = {
            "num_epochs": _env_int("nnUNet_ext_epochs") or self.num_epochs_default,
            "num_iterations_per_epoch": _env_int("nnUNet_ext_iters") or self.iterations_per_epoch_default,
            "num_val_iterations_per_epoch": _env_int("nnUNet_ext_val_iters") or self.val_iterations_default,
            "initial_lr": self.initial_lr_default,
        }
        for attr, value in schedule.items():
            if value is not None:
                setattr(self, attr, value)
        adam_lr = os.environ.get("nnUNet_ext_adam_lr", "").strip()
        self.adam_lr = float(adam_lr) if adam_lr else None
        if self.adam_lr is not None:
            self.initial_lr = self.adam_lr
        self.seed = _env_int("nnUNet_ext_seed") or 0
        self.deterministic = env_flag("nnUNet_ext_deterministic")
        self.print_to_log_file(
            f"nnunet-ext: seed={self.seed} deterministic={self.deterministic} epochs={self.num_epochs} "
            f"iters={self.num_iterations_per_epoch} val_iters={self.num_val_iterations_per_epoch} "
            f"lr={self.initial_lr}" + (" optimizer=Adam (nnUNet_ext_adam_lr)" if self.adam_lr is not None else ""),
            also_print_to_console=False)

    def initialize(self):
        first_time = not self.was_initialized
        if first_time:
            # seed before the network is built so initial weights are reproducible
            seed_everything(self.seed)
            if self.deterministic:
                enable_deterministic_algorithms()
        super().initialize()
        if first_time and self.adam_lr is not None:  # after the subclass's own configure_optimizers: overrides it
            self.optimizer, self.lr_scheduler = adam_with_poly_decay(self.network.parameters(), self.adam_lr,
                                                                     self.weight_decay, self.num_epochs)

    @property
    def network_module(self) -> nn.Module:
        """The network itself, whatever nnU-Net wrapped it in (DDP, ``torch.compile``): use it to reach submodules
        or custom methods, e.g. ``self.network_module.dm``."""
        return unwrap_network(self.network)

    def backward_and_step(self, loss: torch.Tensor) -> None:
        """Backward pass, gradient clipping (norm 12) and optimizer step exactly as ``nnUNetTrainer.train_step``:
        through nnU-Net's ``GradScaler`` on CUDA (fp16 autocast), plainly on CPU."""
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()

    def perform_actual_validation(self, save_probabilities: bool = False):
        if env_flag("nnUNet_ext_skip_final_validation"):
            self.print_to_log_file("nnunet-ext: final validation skipped (nnUNet_ext_skip_final_validation=1)")
            return
        super().perform_actual_validation(save_probabilities)

    def get_dataloaders(self):
        if not self.deterministic:
            return super().get_dataloaders()
        # in-process augmentation: background workers draw their own random seeds
        with environ_set({"nnUNet_n_proc_DA": "0"}):
            seed_everything(self.seed)
            return super().get_dataloaders()
