"""CT windowing of the BHSD paper (Sect. 3, implementation details) as nnU-Net plans.

The paper clips Hounsfield units to [-40, 120], subtracts 40 and divides by 80. nnU-Net's ``CTNormalization``
computes ``(clip(x, p00.5, p99.5) - mean) / std`` from the dataset statistics stored in the plans
(``foreground_intensity_properties_per_channel``), so plans holding ``percentile_00_5 = -40``,
``percentile_99_5 = 120``, ``mean = 40`` and ``std = 80`` make nnU-Net's own preprocessor apply exactly the paper's
window, in training and in plain ``nnUNetv2_predict`` alike; no custom preprocessor is involved. The statistics the
fingerprint measured are kept under ``nnunet_ext_ct_window.fingerprint_statistics`` in the plans.

- ``BHSDPlanner`` (plans ``nnUNetPlansBHSD``): nnU-Net's default planning (GPU-sized U-Net) with the window.
- ``BHSDCPUPlanner`` (plans ``nnUNetPlansBHSDCPU``): :class:`~nnunet_ext.planning.planners.CPUPlanner`'s narrower
  U-Net with the window, for CPU runs and the phantom benchmarks.

Every channel must be named ``CT`` in dataset.json (a window in HU means nothing for other images).
"""
from __future__ import annotations

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from nnunet_ext.errors import UserInputError
from nnunet_ext.planning.planners import CPUPlanner, GroupedSplits

#: The paper's window in HU.
BHSD_WINDOW_HU = (-40.0, 120.0)


def window_statistics(low: float, high: float) -> dict[str, float]:
    """CTNormalization statistics that map [low, high] HU linearly onto [-1, 1]: mean = centre, std = half-width."""
    return {"percentile_00_5": float(low), "percentile_99_5": float(high), "mean": (low + high) / 2.0,
            "std": (high - low) / 2.0}


class _CTWindow:
    """Mixin for an nnU-Net ExperimentPlanner: write ``window_hu`` into the plans' CT normalization statistics."""

    window_hu: tuple[float, float] = BHSD_WINDOW_HU

    def plan_experiment(self):
        channels = self.dataset_json["channel_names"]
        not_ct = {k: v for k, v in channels.items() if str(v).upper() != "CT"}
        if not_ct:
            raise UserInputError(f"{type(self).__name__} windows CT in HU; channel_names of {self.dataset_name} "
                                 f"has non-CT channels {not_ct}")
        low, high = self.window_hu
        measured = self.dataset_fingerprint["foreground_intensity_properties_per_channel"]
        windowed = {channel: {**stats, **window_statistics(low, high)} for channel, stats in measured.items()}
        self._measured_statistics = measured
        self.dataset_fingerprint = {**self.dataset_fingerprint,
                                    "foreground_intensity_properties_per_channel": windowed}
        return super().plan_experiment()

    def save_plans(self, plans):
        plans["nnunet_ext_ct_window"] = {"window_hu": list(self.window_hu),
                                         "fingerprint_statistics": self._measured_statistics}
        return super().save_plans(plans)


class BHSDPlanner(_CTWindow, GroupedSplits, ExperimentPlanner):
    """nnU-Net's default planner with the BHSD window [-40, 120] HU (plans ``nnUNetPlansBHSD``)."""

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetPlansBHSD",
                 overwrite_target_spacing=None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)


class BHSDCPUPlanner(_CTWindow, CPUPlanner):
    """CPUPlanner with the BHSD window [-40, 120] HU (plans ``nnUNetPlansBHSDCPU``)."""

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 2,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetPlansBHSDCPU",
                 overwrite_target_spacing=None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
