"""nnU-Net trainers of nnunet-ext (the repository's ``trainers/`` folder re-exports them for nnU-Net's lookup)."""
