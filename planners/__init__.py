"""Planner shims (installed as ``nnunet_ext.planners``), searched by ``nnunet-ext plan_and_preprocess -pl NAME``."""
