"""Thin module for nnU-Net's trainer lookup (nnUNet_extTrainer): the classes live in the installed package."""
from nnunet_ext.methods.dca.trainers import (  # noqa: F401
    ConvNetRegSegTrainer, ConvNetRegSegTrainer_small, DCARegSegTrainer, DCARegSegTrainer_diffeo,
    DCARegSegTrainer_similarity, DCARegSegTrainer_small, DCARegSegTrainer_small_similarity)
