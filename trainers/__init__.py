"""Trainer shims (installed as ``nnunet_ext.trainers``); ``nnUNet_extTrainer`` points at this folder.

nnU-Net imports each module here as a top-level module, so every module only imports trainer classes from the
``nnunet_ext`` package, where they are importable and picklable. Keep this file empty of imports.
"""
