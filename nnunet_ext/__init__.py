"""nnunet-ext: published methods as nnU-Net v2 trainers, networks, planners, phantoms and converters."""

__version__ = "0.1.0"
