"""Small, fast trainers for demos and tests: nnU-Net's default pipeline on a CPU-sized schedule."""
from __future__ import annotations

from nnunet_ext.training.base import ExtTrainerBase


class DemoTrainer(ExtTrainerBase):
    """nnU-Net's default trainer with a short schedule (15 epochs x 12 iterations) for the CPU demo."""

    num_epochs_default = 15
    iterations_per_epoch_default = 12
    val_iterations_default = 4


class TinyTrainer(ExtTrainerBase):
    """2 epochs x 2 iterations: proves the pipeline runs (integration tests), learns nothing."""

    num_epochs_default = 2
    iterations_per_epoch_default = 2
    val_iterations_default = 1
