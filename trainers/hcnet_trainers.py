"""Thin module for nnU-Net's trainer lookup (nnUNet_extTrainer): the classes live in the installed package."""
from nnunet_ext.methods.hcnet.trainers import (  # noqa: F401
    HCNetHIPMTrainer, HCNetHIPMTrainer_resunet, HCNetHIPMTrainer_small, HCNetHIPMTrainer_small_resunet,
    HCNetHIPMTrainer_small_vnet, HCNetHIPMTrainer_vnet, HCNetTrainer, HCNetTrainer_hardmap, HCNetTrainer_small,
    HCNetTrainer_small_hardmap, HCNetTrainerNoPrior, HCNetTrainerNoPrior_small, UXNetTrainer, UXNetTrainer_small)
