"""Experiment planners for nnunet-ext (looked up by class name from the repository's ``planners/`` folder)."""
