"""Tests of nnunet_ext.methods.mammo_sam.trainers beyond the conformance suite: the flips-only augmentation, the
ablation settings of every trainer name, the optimiser's parameter set."""
import numpy as np
import pytest
import torch

from nnunet_ext.methods.mammo_sam import trainers


def _nnunet_transforms(patch_size=(32, 24)):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    return nnUNetTrainer.get_training_transforms(patch_size, (-np.pi, np.pi), None, (0, 1), False)


def test_flips_only_drops_every_random_intensity_transform():
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    full = _nnunet_transforms()
    assert any(isinstance(t, RandomTransform) for t in full.transforms)
    reduced = trainers.flips_only(full)
    assert not any(isinstance(t, RandomTransform) for t in reduced.transforms)
    kinds = {type(t) for t in reduced.transforms}
    assert SpatialTransform in kinds and MirrorTransform in kinds
    spatial = next(t for t in reduced.transforms if isinstance(t, SpatialTransform))
    assert spatial.p_rotation == spatial.p_scaling == spatial.p_elastic_deform == 0


@pytest.mark.parametrize("seed", range(6))
def test_flips_only_output_is_a_flip_of_the_input(seed):
    torch.manual_seed(seed)
    image = torch.arange(32 * 24, dtype=torch.float32).reshape(1, 32, 24)
    segmentation = (image > 300).to(torch.int16)
    out = trainers.flips_only(_nnunet_transforms())(image=image.clone(), segmentation=segmentation.clone())
    flips = [image, image.flip(1), image.flip(2), image.flip(1).flip(2)]
    matches = [i for i, f in enumerate(flips) if torch.equal(out["image"], f)]
    assert len(matches) == 1
    expected_segmentation = [segmentation, segmentation.flip(1), segmentation.flip(2),
                             segmentation.flip(1).flip(2)][matches[0]]
    assert torch.equal(out["segmentation"], expected_segmentation)


@pytest.mark.parametrize("name,preset,adapter,decoder,frozen,needs_file", [
    ("MammoSAMTrainer", "vit_l", "msa", "multilevel", True, True),
    ("MammoSAMTrainer_vitb", "vit_b", "msa", "multilevel", True, True),
    ("MammoSAMTrainer_vith", "vit_h", "msa", "multilevel", True, True),
    ("MammoSAMTrainer_NoAdapter", "vit_l", "none", "multilevel", True, True),
    ("MammoSAMTrainer_SimpleAdapter", "vit_l", "simple", "multilevel", True, True),
    ("MammoSAMTrainer_SAMDecoder", "vit_l", "msa", "sam", True, True),
    ("MammoSAMTrainer_FreezeEncoder", "vit_l", "none", "sam", True, True),
    ("MammoSAMTrainer_tiny", "tiny", "msa", "multilevel", True, True),
    ("MammoSAMTrainer_tiny_NoAdapter", "tiny", "none", "multilevel", True, True),
    ("MammoSAMTrainer_tiny_SimpleAdapter", "tiny", "simple", "multilevel", True, True),
    ("MammoSAMTrainer_tiny_SAMDecoder", "tiny", "msa", "sam", True, True),
    ("MammoSAMTrainer_tiny_FreezeEncoder", "tiny", "none", "sam", True, True),
    ("MammoSAMPretrainTrainer_tiny", "tiny", "none", "multilevel", False, False),
])
def test_trainer_names_carry_their_settings(name, preset, adapter, decoder, frozen, needs_file):
    cls = getattr(trainers, name)
    assert (cls.preset, cls.adapter, cls.decoder, cls.freeze_encoder, cls.needs_sam_weights) == (
        preset, adapter, decoder, frozen, needs_file)
    with torch.device("meta"):
        network = cls.build_network_architecture(None, None, 1, 2)
    assert (network.preset_name, network.adapter_kind, network.decoder_kind) == (preset, adapter, decoder)
    assert all(p.requires_grad != frozen for p in network.image_encoder.parameters())


def test_the_trainer_module_exports_every_class_to_the_shim():
    import importlib

    shim = importlib.import_module("nnunet_ext.trainers.mammo_sam_trainers")
    names = {n for n, v in vars(trainers).items() if isinstance(v, type) and issubclass(v, trainers.MammoSAMTrainer)}
    assert names <= set(vars(shim))


def test_only_the_pretraining_trainer_leaves_the_ppa_loss():
    from nnunet_ext.training.base import ExtTrainerBase

    assert trainers.MammoSAMPretrainTrainer_tiny._build_loss is not trainers.MammoSAMTrainer._build_loss
    assert all(getattr(trainers, name)._build_loss is trainers.MammoSAMTrainer._build_loss
               for name in dir(trainers) if name.startswith("MammoSAMTrainer"))
    assert ExtTrainerBase._build_loss is not trainers.MammoSAMTrainer._build_loss
