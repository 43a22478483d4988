"""Thin module for nnU-Net's trainer lookup (nnUNet_extTrainer): the classes live in the installed package."""
from nnunet_ext.training.demo import DemoTrainer, DemoTrainerSGD, TinyTrainer  # noqa: F401
