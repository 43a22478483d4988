"""Planners. They keep nnU-Net's ``DefaultPreprocessor`` and normalization names so plain ``nnUNetv2_predict`` works
with the plans they write (shared/NNUNET_PLUGIN_NOTES.md)."""
from __future__ import annotations

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.preprocessing.resampling.no_resampling import no_resampling_hack

from nnunet_ext.errors import UserInputError


class GroupedSplits:
    """Mixin for an nnU-Net ExperimentPlanner: after planning, write ``splits_final.json`` from dataset.json
    ``case_groups`` (patients, examinations) so folds never split a group; an existing split is kept."""

    def plan_experiment(self):
        plans = super().plan_experiment()
        from .splits import write_grouped_splits

        write_grouped_splits(self.dataset_name, self.dataset_json)  # only when dataset.json has case_groups
        return plans


class CPUPlanner(GroupedSplits, ExperimentPlanner):
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


class WholeImage2DPlanner(CPUPlanner):
    """For 2D image datasets whose images each frame one object at their own zoom (HC18, CAMUS, most ultrasound):
    every image keeps its own pixel grid (nnU-Net's ``no_resampling_hack``; the spacing stays in the images' metadata
    and in the exported predictions), and the 2d patch covers the largest image, so training patches and inference
    see whole images. This is the setting of whole-image detectors such as FFPN (their network resizes the patch to
    its input size) and keeps a U-Net baseline on the same plans comparable. Plans name ``nnUNetPlansWholeImage``;
    batch size 2; the U-Net is CPUPlanner's."""

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 2,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetPlansWholeImage",
                 overwrite_target_spacing=None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)

    def plan_experiment(self):
        shapes = np.asarray(self.dataset_fingerprint["shapes_after_crop"])
        if not (shapes[:, 0] == 1).all():
            raise UserInputError(f"{type(self).__name__} plans 2D images only ({self.dataset_name} has 3D images); "
                                 f"use CPUPlanner")
        # nnU-Net reads a 2D image's slice thickness as 999 x its pixel spacing, so with varying pixel sizes some
        # images would count as 2 slices "after resampling" and a 3d_fullres plan would appear. One thickness for all
        # keeps every image a single slice (nothing is resampled anyway).
        spacings = np.asarray(self.dataset_fingerprint["spacings"], dtype=float)
        spacings[:, 0] = spacings[:, 0].max()
        self.dataset_fingerprint = {**self.dataset_fingerprint, "spacings": spacings.tolist()}
        return super().plan_experiment()

    def determine_resampling(self, *args, **kwargs):
        return no_resampling_hack, {}, no_resampling_hack, {}

    def determine_segmentation_softmax_export_fn(self, *args, **kwargs):
        return no_resampling_hack, {}

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier, approximate_n_voxels_dataset,
                                    _cache):
        if len(spacing) != 2:
            raise RuntimeError(f"{type(self).__name__} plans 2D images only; use CPUPlanner")
        transpose_forward, _ = self.determine_transpose()
        largest = np.max(np.asarray(self.dataset_fingerprint["shapes_after_crop"]), 0)[transpose_forward][1:]
        return plan_covering(self, spacing, largest, data_identifier, approximate_n_voxels_dataset, _cache)


def plan_covering(planner: ExperimentPlanner, spacing, shape, data_identifier, approximate_n_voxels_dataset,
                  _cache) -> dict:
    """nnU-Net's configuration plan for a patch covering ``shape`` (nnU-Net still caps a patch at its 256^3-voxel
    aspect-ratio box and rounds it up to what the pooling needs), batch size 2."""
    # a memory target this large never shrinks the patch; the batch size is set below
    memory_target, planner.UNet_vram_target_GB = planner.UNet_vram_target_GB, 1e6
    try:
        plan = ExperimentPlanner.get_plans_for_configuration(planner, spacing, shape, data_identifier,
                                                             approximate_n_voxels_dataset, _cache)
    finally:
        planner.UNet_vram_target_GB = memory_target
    plan["batch_size"] = 2
    return plan


class WholeVolumePlanner(CPUPlanner):
    """For registration and atlas-based segmentation (``DCARegSegTrainer``): nnU-Net's resampling and
    normalisation, but every configuration's patch covers the largest image of the dataset after cropping and
    resampling, so a training patch is a whole image (pairs of cases meet aligned, centred as nnU-Net pads them) and
    the predictor runs one tile per image. Plans name ``nnUNetPlansWholeVolume``; batch size 2 (a pair); the U-Net
    is CPUPlanner's."""

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 2,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetPlansWholeVolume",
                 overwrite_target_spacing=None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier, approximate_n_voxels_dataset,
                                    _cache):
        transpose_forward, _ = self.determine_transpose()
        shapes = np.asarray(self.dataset_fingerprint["shapes_after_crop"], dtype=float)[:, transpose_forward]
        spacings = np.asarray(self.dataset_fingerprint["spacings"], dtype=float)[:, transpose_forward]
        axes = len(spacing)  # 2d plans the last two axes
        resampled = shapes[:, -axes:] * spacings[:, -axes:] / np.asarray(spacing, dtype=float)
        largest = np.ceil(np.max(resampled, 0) - 1e-6).astype(int)
        return plan_covering(self, spacing, largest, data_identifier, approximate_n_voxels_dataset, _cache)
