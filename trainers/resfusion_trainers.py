"""Thin module for nnU-Net's trainer lookup (nnUNet_extTrainer): the classes live in the installed package."""
from nnunet_ext.methods.resfusion.trainers import (  # noqa: F401
    PostOnlyTrainer, PostOnlyTrainer_small, ResFusionNoWeightTrainer, ResFusionNoWeightTrainer_small, ResFusionTrainer,
    ResFusionTrainer_gate, ResFusionTrainer_gate_small, ResFusionTrainer_small, ResFusionUnsharedTrainer,
    ResFusionUnsharedTrainer_small)
