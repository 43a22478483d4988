"""Thin module for nnU-Net's trainer lookup (nnUNet_extTrainer): the classes live in the installed package."""
from nnunet_ext.methods.contrastive.trainers import (  # noqa: F401
    SimSiamInitTrainer, SimSiamInitTrainer_small, SimSiamPretrainTrainer, SimSiamPretrainTrainer_small,
    TumorBgFusionScratchTrainer, TumorBgFusionScratchTrainer_small, TumorBgFusionTrainer, TumorBgFusionTrainer_small,
    TumorBgInitTrainer, TumorBgInitTrainer_small, TumorBgPretrainTrainer, TumorBgPretrainTrainer_small)
