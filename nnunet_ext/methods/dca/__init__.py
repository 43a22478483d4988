"""TM-DCA: deformable cross-attention transformer for image registration (Chen et al., MLMI 2023).

- :mod:`.attention`: window partition/reverse, Swin relative position bias and shifted-window mask, windowed
  cross-attention and the deformable windowed cross-attention (DW-MCA, Eq. 2), 2D and 3D.
- :mod:`.transform`: pull-back warping with voxel displacement fields (``SpatialTransformer``), one-hot label
  warping, and scaling-and-squaring integration of a stationary velocity field, 2D and 3D.

Not built yet: the network assembly (dual encoders, patch merging, ConvNet decoder), the trainer and the CLI.
"""
