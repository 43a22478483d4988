"""Thin module for nnU-Net's trainer lookup (nnUNet_extTrainer): the classes live in the installed package."""
from nnunet_ext.methods.ffpn.trainers import (  # noqa: F401
    FFPNRTrainer, FFPNRTrainer_cpu, FFPNRTrainer_tiny, FFPNTrainer, FFPNTrainer_cpu, FFPNTrainer_tiny)
