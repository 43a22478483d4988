"""Residual pre/post-contrast fusion (Yan et al.): network, trainers."""
