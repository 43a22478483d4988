"""Thin module for nnU-Net's trainer lookup (nnUNet_extTrainer): the classes live in the installed package."""
from nnunet_ext.methods.dkm.trainers import (  # noqa: F401
    DKMDiffusionTrainer, DKMDiffusionTrainer_small, DKMTrainer, DKMTrainer_small, DKMTrainer_small_f1,
    DKMTrainer_small_f1f2f3f4, DKMTrainer_small_f2, DKMTrainer_small_f2f4, DKMTrainer_small_f3, DKMTrainer_small_f4,
    DKMTrainerNoCode, DKMTrainerNoCode_small)
