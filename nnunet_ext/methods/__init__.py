"""One folder per published method (network, method math, trainers, inference, CLI verbs), built on the shared
infrastructure of :mod:`nnunet_ext` (metrics, synth, pipeline, planning, io, CLI dispatcher)."""
