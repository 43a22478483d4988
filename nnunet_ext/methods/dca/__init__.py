"""TM-DCA: deformable cross-attention transformer for image registration (Chen et al., MLMI 2023).

- :mod:`.attention`: window partition/reverse, Swin relative position bias and shifted-window mask, windowed
  cross-attention and the deformable windowed cross-attention (DW-MCA, Eq. 2), 2D and 3D.
- :mod:`.transform`: pull-back warping with voxel displacement fields (``SpatialTransformer``), one-hot label
  warping, and scaling-and-squaring integration of a stationary velocity field, 2D and 3D.
- :mod:`.network`: the TM-DCA network (``TMDCA``): moving and fixed Swin encoders sharing patch embedding and patch
  merging, joined by deformable cross-attention in both directions, and TransMorph's ConvNet decoder predicting a
  voxel displacement (or, ``diffeomorphic=True``, a stationary velocity integrated by scaling and squaring);
  presets ``paper`` (the authors' 3-level config) and ``small`` (CPU), 2D and 3D.

- :mod:`.convnet`: the VoxelMorph-style ConvNet baseline with TM-DCA's decoder (same contract as ``TMDCA``).
- :mod:`.atlas` / :mod:`.trainers`: ``DCARegSegTrainer`` (and variants): TM-DCA trained on an nnU-Net segmentation
  dataset with NCC + diffusion + label Dice on pairs of training cases; ``nnUNetv2_predict`` registers the fold's
  training cases (atlases stored in the checkpoint) to each new image and fuses their labels.
- :mod:`.register` / :mod:`.cli` / :mod:`.model`: ``nnunet-ext register``: one pair by instance optimisation or with
  a trained model (optionally fine-tuned on the pair), outputs in the Learn2Reg layout with the Jacobian determinant
  and metrics.
- :mod:`.syn` / :mod:`.pairbench`: ANTs SyN baseline (benchmark-only extra) and the real-pair benchmark command.
- :mod:`.cost`: time and memory of deformable vs XMorpher-style vs self windowed attention.

Shared: :mod:`nnunet_ext.metrics.registration` (Dice, HD95, SDlogJ, % det J <= 0, NDV); converters
``oasis_learn2reg`` and ``registration_pairs``; ``WholeVolumePlanner``; ``synth brain_pairs``.
"""
