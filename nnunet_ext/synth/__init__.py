"""Deterministic, physically plausible phantoms written as nnU-Net raw datasets (``nnunet-ext synth``)."""
