"""In-process nnU-Net workspaces for the DKM trainer tests.

Datasets are tiny ``breast_dce`` phantoms put through nnU-Net's own ``DefaultPreprocessor.run_case_npy`` (transpose,
crop, normalization, resampling, foreground class locations) and saved as nnU-Net saves them, with hand-written
plans; trainers are built from those plans on the CPU. No planning, no subprocess, a second or two per dataset.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

SHAPE = (16, 32, 32)       # breast_dce at its default field of view: spacing (6.0, 4.2, 4.2) mm
SPACING = (6.0, 4.2, 4.2)
PATCH = (16, 16, 16)
CONFIGURATION = "3d_fullres"


def make_plans(dataset_name: str, channels: int, spacing=SPACING, normalization: str = "ZScoreNormalization",
               use_mask_for_norm: bool = False, transpose=(0, 1, 2), order: int = 3,
               intensity_mean: float = 300.0) -> dict:
    """Plans as nnU-Net's ExperimentPlanner writes them, for one 3D configuration (fields the trainers read)."""
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    configuration = {
        "data_identifier": f"nnUNetPlans_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(PATCH),
        "median_image_size_in_voxels": [float(s) for s in SHAPE],
        "spacing": [float(s) for s in spacing],
        "normalization_schemes": [normalization] * channels,
        "use_mask_for_norm": [use_mask_for_norm] * channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": order, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv3d",
                            "kernel_sizes": [[3, 3, 3]] * 3, "strides": strides, "n_conv_per_stage": [2, 2, 2],
                            "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
                            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": False,
    }
    statistics = {"max": 800.0, "mean": intensity_mean, "median": intensity_mean, "min": 50.0,
                  "percentile_00_5": 60.0, "percentile_99_5": 780.0, "std": 100.0}
    return {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [float(s) for s in spacing],
        "original_median_shape_after_transp": list(SHAPE),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(transpose),
        "transpose_backward": [int(i) for i in np.argsort(transpose)],
        "configurations": {CONFIGURATION: configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {str(c): dict(statistics) for c in range(channels)},
    }


def dataset_json(channels: int) -> dict:
    names = ["pre", "post1", "post2"][:channels]
    return {"channel_names": {str(i): n for i, n in enumerate(names)}, "labels": {"background": 0, "tumor": 1},
            "numTraining": 4, "file_ending": ".nii.gz"}


class Workspace:
    """nnU-Net folders (``nnUNet_preprocessed``, ``nnUNet_results``) holding hand-preprocessed datasets."""

    def __init__(self, preprocessed: Path, results: Path):
        self.preprocessed, self.results = preprocessed, results
        self.datasets: dict[str, tuple[dict, dict]] = {}

    def add_dataset(self, dataset_name: str, channels: int = 3, labels: str = "real", cases: int = 4,
                    **plans_options) -> tuple[dict, dict]:
        """Preprocess ``cases`` breast_dce phantoms (first ``channels`` phases) with nnU-Net's DefaultPreprocessor.

        ``labels="zeros"`` writes all-background labels instead of the tumour masks (the images are the same).
        """
        from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
        from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2, comp_blosc2_params
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        from nnunet_ext.synth import breast_dce
        from nnunet_ext.synth.base import case_rng

        plans, meta = make_plans(dataset_name, channels, **plans_options), dataset_json(channels)
        manager = PlansManager(copy.deepcopy(plans))
        configuration = manager.get_configuration(CONFIGURATION)
        folder = self.preprocessed / dataset_name
        (folder / configuration.data_identifier).mkdir(parents=True, exist_ok=True)
        (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
        (folder / "dataset.json").write_text(json.dumps(meta))
        for i in range(cases):
            case = breast_dce.make_case(case_rng(0, 0, i), SHAPE)
            image = np.stack(case.images[:channels])
            label = case.label if labels == "real" else np.zeros_like(case.label)
            properties = {"spacing": list(case.spacing)}
            data, seg, properties = DefaultPreprocessor(verbose=False).run_case_npy(
                image, label[None].astype(np.int16), properties, manager, configuration, meta)
            blocks, chunks = comp_blosc2_params(data.shape, PATCH, 4)
            blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, PATCH, 1)
            nnUNetDatasetBlosc2.save_case(data.astype(np.float32), seg, properties,
                                          str(folder / configuration.data_identifier / f"case_{i:04d}"),
                                          chunks=chunks, blocks=blocks, chunks_seg=chunks_seg, blocks_seg=blocks_seg)
        self.datasets[dataset_name] = (plans, meta)
        return plans, meta

    def trainer(self, trainer_class, dataset_name: str, fold="all"):
        plans, meta = self.datasets[dataset_name]
        return trainer_class(plans={**copy.deepcopy(plans), "continue_training": False}, configuration=CONFIGURATION,
                             fold=fold, dataset_json=copy.deepcopy(meta), device=torch.device("cpu"))


@pytest.fixture
def workspace(nnunet_env) -> Workspace:
    return Workspace(Path(nnunet_env["nnUNet_preprocessed"]), Path(nnunet_env["nnUNet_results"]))


class FakeDDP(nn.parallel.DistributedDataParallel):
    """Stand-in for DistributedDataParallel in one CPU process (no process group): the wrapper's public surface that
    trainer code may use - ``.module``, ``forward``, ``parameters()`` - and nothing else, so ``wrapper.dm`` fails as it
    does on a real DDP wrapper. A subclass, so ``unwrap_network`` recognises it."""

    def __init__(self, module: nn.Module, device_ids=None, **_):
        nn.Module.__init__(self)
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


@pytest.fixture
def single_process_ddp(monkeypatch):
    """nnU-Net's DDP code paths in one process: its ``initialize`` wraps the network in :class:`FakeDDP` and asks a
    world of size 1. Set ``trainer.is_ddp = True`` after building a trainer (its constructor would pick a GPU)."""
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as nnunet_trainer_module

    from nnunet_ext.methods.dkm import trainers as dkm

    # is_initialized stays False: nnU-Net's constructor would otherwise move the trainer to a GPU
    fake_dist = SimpleNamespace(
        get_world_size=lambda: 1, get_rank=lambda: 0, barrier=lambda: None, is_available=lambda: True,
        is_initialized=lambda: False, all_gather_object=lambda out, obj: out.__setitem__(0, obj))
    monkeypatch.setattr(nnunet_trainer_module, "DDP", FakeDDP)
    monkeypatch.setattr(nnunet_trainer_module, "dist", fake_dist)
    monkeypatch.setattr(dkm, "dist", fake_dist)
    # SyncBatchNorm needs a process group to train; nnU-Net's conversion is not what is under test
    monkeypatch.setattr(nn.SyncBatchNorm, "convert_sync_batchnorm", classmethod(lambda cls, module, *a, **k: module))
    return fake_dist


class SpyGradScaler:
    """Records nnU-Net's GradScaler protocol (scale -> backward, unscale_, step, update) with scale factor 1."""

    def __init__(self):
        self.calls: list[str] = []

    def scale(self, loss):
        self.calls.append("scale")
        return loss

    def unscale_(self, optimizer):
        self.calls.append("unscale_")

    def step(self, optimizer):
        self.calls.append("step")
        optimizer.step()

    def update(self):
        self.calls.append("update")
