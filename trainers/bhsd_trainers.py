"""Thin module for nnU-Net's trainer lookup (nnUNet_extTrainer): the classes live in the installed package."""
from nnunet_ext.methods.bhsd.trainers import (  # noqa: F401
    BHSDSingleClassTrainer_EDH, BHSDSingleClassTrainer_IPH, BHSDSingleClassTrainer_IVH, BHSDSingleClassTrainer_SAH,
    BHSDSingleClassTrainer_SDH, BHSDTrainer, BHSDTrainer_allneg, BHSDTrainer_neg200, BHSDTrainer_neg400,
    BHSDTrainer_neg600, BHSDTrainer_neg800, BHSDTrainer_SwinUNETR, BHSDTrainer_SwinUNETR_cpu, BHSDTrainer_UNETR,
    BHSDTrainer_UNETR_cpu, CPSTrainer, SupOnlyTrainer)
