"""Mammo-SAM: frozen SAM encoder, multi-scale adapters and a multi-level decoder for breast masses on whole
mammograms (Xiong et al., MICCAI 2023; spec ../shared/papers/mammo_sam.md).

- :mod:`.network`: ``MammoSAM`` (SAM's ``ImageEncoderViT`` under its own names, MSA / simple adapters, multi-level
  or SAM decoder, pos_embed resizing, presets vit_b / vit_l / vit_h / tiny).
- :mod:`.weights`: SAM checkpoints from a local file (``nnUNet_ext_sam_checkpoint``), checks, SAM-format export.
- :mod:`.trainers`: ``MammoSAMTrainer`` and its variants (``nnUNetv2_train DATASET 2d FOLD -tr MammoSAMTrainer``).
- :mod:`.cli`: ``nnunet-ext mammo-sam export-encoder``.

Elsewhere, as shared infrastructure: the F3Net loss (:mod:`nnunet_ext.losses.pixel_position_aware`), the
``mammo_2d`` phantom, and the CBIS-DDSM and INbreast converters (``datasets_conversion/``).
"""
