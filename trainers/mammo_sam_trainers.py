"""Thin module for nnU-Net's trainer lookup (nnUNet_extTrainer): the classes live in the installed package."""
from nnunet_ext.methods.mammo_sam.trainers import (  # noqa: F401
    MammoSAMPretrainTrainer_tiny, MammoSAMTrainer, MammoSAMTrainer_FreezeEncoder, MammoSAMTrainer_NoAdapter,
    MammoSAMTrainer_SAMDecoder, MammoSAMTrainer_SimpleAdapter, MammoSAMTrainer_tiny,
    MammoSAMTrainer_tiny_FreezeEncoder, MammoSAMTrainer_tiny_NoAdapter, MammoSAMTrainer_tiny_SAMDecoder,
    MammoSAMTrainer_tiny_SimpleAdapter, MammoSAMTrainer_vitb, MammoSAMTrainer_vith)
