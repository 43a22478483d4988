"""Planners. They keep nnU-Net's ``DefaultPreprocessor`` and normalization names so plain ``nnUNetv2_predict`` works
with the plans they write (shared/NNUNET_PLUGIN_NOTES.md)."""
from __future__ import annotations

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner


class CPUPlanner(ExperimentPlanner):
    """nnU-Net's default planning with a narrower U-Net (16 base / 128 max features in 3D, 256 in 2D) and a 2 GB
    memory target, so patches and networks are small enough to train on a CPU. Plans name: ``nnUNetPlansCPU``
    (pass ``-p nnUNetPlansCPU`` to ``nnUNetv2_train``/``nnUNetv2_predict``)."""

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 2,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetPlansCPU",
                 overwrite_target_spacing=None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.UNet_base_num_features = 16
        self.UNet_max_features_3d = 128
        self.UNet_max_features_2d = 256
