"""Thin module: nnunet-ext's planner classes live in the installed package (importable, picklable)."""
from nnunet_ext.planning.planners import CPUPlanner, WholeImage2DPlanner, WholeVolumePlanner  # noqa: F401
