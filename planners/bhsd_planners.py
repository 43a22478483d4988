"""Thin module: the BHSD CT-window planners live in the installed package (importable, picklable)."""
from nnunet_ext.methods.bhsd.planners import BHSDCPUPlanner, BHSDPlanner  # noqa: F401
