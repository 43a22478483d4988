"""A trained registration model (``DCARegSegTrainer`` and its variants) as ``nnunet-ext register`` uses it.

A model is nnU-Net's results folder ``<trainer>__<plans>__<configuration>`` (``plans.json``, ``dataset.json``,
``fold_<F>/checkpoint_final.pth``), given directly (``--model``) or found from ``-tr/-d/-c/-p`` in
``$nnUNet_results``. The checkpoint names its trainer; it must be one of :mod:`.trainers` (the registration network
is rebuilt with that trainer's ``build_network_architecture`` and the stored weights).

Inputs are normalised as nnU-Net preprocessed the training cases: each channel with the plans' normalisation scheme
and intensity statistics (nnU-Net's own ``DefaultPreprocessor._normalize``; the mask of ``use_mask_for_norm`` is
nnU-Net's nonzero mask). Nothing is cropped or resampled: registration stays in the voxel grid of the input pair.
Where the input spacing differs from the plans' by more than 1 %, the result records it (the network saw another
voxel size in training).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_ext.errors import UserInputError

SPACING_TOLERANCE = 0.01


@dataclass
class TrainedModel:
    """A loaded registration model: the network (eval mode, on ``device``) and what normalising needs."""

    folder: Path
    fold: str
    trainer_name: str
    configuration: str
    network: Any  # the registration network (TMDCA or the ConvNet), not the atlas segmenter
    plans_manager: Any
    configuration_manager: Any

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.configuration_manager.spacing)

    def describe(self) -> dict:
        return {"folder": str(self.folder), "fold": self.fold, "trainer": self.trainer_name,
                "configuration": self.configuration, "spacing": list(self.spacing)}

    def normalise(self, image: np.ndarray) -> np.ndarray:
        """``image`` ``(C, *spatial)`` (or one channel ``(*spatial)``, returned without a channel axis) as nnU-Net
        normalised the training inputs."""
        from nnunetv2.preprocessing.cropping.cropping import create_nonzero_mask
        from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

        data = np.asarray(image, dtype=np.float32)
        single = data.ndim == len(self.configuration_manager.patch_size)
        data = data[None] if single else data.copy()
        if len(self.configuration_manager.normalization_schemes) != data.shape[0]:
            raise UserInputError(f"model {self.folder.name} was trained on "
                                 f"{len(self.configuration_manager.normalization_schemes)} channel(s); the images "
                                 f"have {data.shape[0]}")
        seg = np.where(create_nonzero_mask(data), 0, -1).astype(np.int8)[None]
        normalised = DefaultPreprocessor(verbose=False)._normalize(
            data, seg, self.configuration_manager, self.plans_manager.foreground_intensity_properties_per_channel)
        return normalised[0] if single else normalised

    def spacing_note(self, spacing) -> str | None:
        trained = np.asarray(self.spacing, dtype=float)
        given = np.asarray(spacing, dtype=float)[-len(trained):]
        if np.all(np.abs(given - trained) <= SPACING_TOLERANCE * trained):
            return None
        return (f"input spacing {tuple(float(s) for s in given)} differs from the training spacing "
                f"{tuple(float(s) for s in trained)}; registered in the input's voxel grid without resampling")


def model_folder(model: str | None, trainer: str | None, dataset: str | None, configuration: str | None,
                 plans: str = "nnUNetPlans") -> Path:
    """The model folder from ``--model`` or from ``-tr/-d/-c/-p`` (one or the other)."""
    if model:
        if trainer or dataset:
            raise UserInputError("give either --model FOLDER or -tr/-d/-c, not both")
        folder = Path(model)
    else:
        missing = [flag for flag, value in (("-tr", trainer), ("-d", dataset), ("-c", configuration)) if not value]
        if missing:
            raise UserInputError(f"a trained model needs -tr, -d and -c (missing {', '.join(missing)}), or --model")
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

        results = os.environ.get("nnUNet_results")
        if not results:
            raise UserInputError("nnUNet_results is not set: cannot find the model (or pass --model FOLDER)")
        try:
            name = maybe_convert_to_dataset_name(dataset)
        except RuntimeError:
            raise UserInputError(f"-d {dataset}: no such dataset in nnU-Net's folders") from None
        folder = Path(results) / name / f"{trainer}__{plans}__{configuration}"
    for required in ("plans.json", "dataset.json"):
        if not (folder / required).is_file():
            raise UserInputError(f"{folder}: not an nnU-Net model folder ({required} missing)")
    return folder


def load_model(folder: Path, fold: str = "0", checkpoint: str = "checkpoint_final.pth",
               device: str = "cpu") -> TrainedModel:
    """Rebuild the registration network of ``folder/fold_<fold>/<checkpoint>`` (see module docstring)."""
    import torch
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_ext.methods.dca import trainers

    path = folder / f"fold_{fold}" / checkpoint
    if not path.is_file():
        raise UserInputError(f"{path}: checkpoint not found (train the fold first, or pick --fold/--checkpoint)")
    try:
        stored = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file
        raise UserInputError(f"{path}: not a readable nnU-Net checkpoint ({type(error).__name__})") from None
    trainer_name = stored.get("trainer_name") if isinstance(stored, dict) else None
    trainer_class = getattr(trainers, str(trainer_name), None)
    if not (isinstance(trainer_class, type) and issubclass(trainer_class, trainers.DCARegSegTrainer)):
        raise UserInputError(f"{path}: trained by {trainer_name}, not a registration trainer "
                             f"(DCARegSegTrainer and its variants)")
    plans_manager = PlansManager(json.loads((folder / "plans.json").read_text()))
    dataset_json = json.loads((folder / "dataset.json").read_text())
    configuration = stored.get("init_args", {}).get("configuration")
    configuration_manager = plans_manager.get_configuration(configuration)
    channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    heads = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    network = trainer_class.build_network_architecture(plans_manager, configuration_manager, channels, heads, False)
    network.load_state_dict(stored["network_weights"])
    registration = network.registration.to(torch.device(device)).eval()
    return TrainedModel(folder, str(fold), str(trainer_name), configuration, registration, plans_manager,
                        configuration_manager)
