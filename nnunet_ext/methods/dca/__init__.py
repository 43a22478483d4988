"""TM-DCA: deformable cross-attention transformer for image registration (Chen et al., MLMI 2023).

- :mod:`.attention`: window partition/reverse, Swin relative position bias and shifted-window mask, windowed
  cross-attention and the deformable windowed cross-attention (DW-MCA, Eq. 2), 2D and 3D.
- :mod:`.transform`: pull-back warping with voxel displacement fields (``SpatialTransformer``), one-hot label
  warping, and scaling-and-squaring integration of a stationary velocity field, 2D and 3D.
- :mod:`.network`: the TM-DCA network (``TMDCA``): moving and fixed Swin encoders sharing patch embedding and patch
  merging, joined by deformable cross-attention in both directions, and TransMorph's ConvNet decoder predicting a
  voxel displacement (or, ``diffeomorphic=True``, a stationary velocity integrated by scaling and squaring);
  presets ``paper`` (the authors' 3-level config) and ``small`` (CPU), 2D and 3D.

- :mod:`.register` / :mod:`.cli`: ``nnunet-ext register``: one pair by instance optimisation (local NCC + diffusion
  regulariser [+ label Dice]), outputs in the Learn2Reg layout with the Jacobian determinant and metrics.
- :mod:`.cost`: time and memory of deformable vs XMorpher-style vs self windowed attention.

Shared: :mod:`nnunet_ext.metrics.registration` (Dice, HD95, SDlogJ, % det J <= 0, NDV).
Not built yet (issue #10): ``DCARegSegTrainer`` and atlas-based prediction through ``nnUNetv2_predict``,
``register`` with a trained model, the OASIS and pairs converters, and the benchmarks.
"""
