"""Small, fast trainers for demos, tests and CPU benchmarks: nnU-Net's default pipeline on a short schedule.

nnU-Net's SGD (lr 1e-2, momentum 0.99, poly decay) is tuned for 1000 x 250 iterations; on a 180-iteration CPU
schedule it learned nothing on the breast_dce phantom (Dice 0.000 with pre + post input, measured in the first DKM
benchmark). ``DemoTrainer`` therefore uses Adam with lr 1e-3 and poly decay (what nnU-Net's
``nnUNetTrainerVanillaAdam1en3`` variant does); everything else (network from the plans, deep supervision,
augmentation, loss) is nnU-Net's default. The schedule (20 epochs x 25 iterations) is the one ``make demo`` uses
with the 2d configuration: about 2-3 minutes on 2 CPU cores.
"""
from __future__ import annotations

from nnunet_ext.training.base import ExtTrainerBase, adam_with_poly_decay


class DemoTrainerSGD(ExtTrainerBase):
    """nnU-Net's default trainer, unchanged but for the schedule: 20 epochs x 25 iterations."""

    num_epochs_default = 20
    iterations_per_epoch_default = 25
    val_iterations_default = 4


class DemoTrainer(DemoTrainerSGD):
    """Short schedule (20 x 25) with Adam, lr 1e-3 (see the module docstring)."""

    initial_lr_default = 1e-3

    def configure_optimizers(self):
        return adam_with_poly_decay(self.network.parameters(), self.initial_lr, self.weight_decay, self.num_epochs)


class TinyTrainer(ExtTrainerBase):
    """2 epochs x 2 iterations: proves the pipeline runs (integration tests), learns nothing."""

    num_epochs_default = 2
    iterations_per_epoch_default = 2
    val_iterations_default = 1
