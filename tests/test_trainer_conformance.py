"""Trainer conformance: every trainer class the ``trainers/`` shims export, on a tiny nnU-Net-planned phantom.

For each trainer (``discover_trainers()``; a new method's trainers join by merely existing):

1. its network builds for every configuration in ``supported_configurations`` (2d, 3d_fullres);
2. one ``train_step`` on a batch of its own dataloader gives a finite loss and moves the trainable weights only;
3. the class pickles as the same importable object nnU-Net's ``nnUNet_extTrainer`` lookup finds; its dataloader and
   network weights pickle as spawn workers and checkpoints need them;
4. ``save_checkpoint`` -> ``load_checkpoint`` into a fresh instance restores weights and optimizer state bit for bit;
5. ``nnUNetPredictor`` resolves the trainer by name from a results folder and predicts a test case: same shape as the
   input, valid labels.

Checks 2-5 run on the trainer's primary configuration (3d_fullres where supported); on its other configurations
they are marked ``slow``. Paper-sized trainers declare CPU-sized presets (``conformance_overrides``), applied to the
classes for the whole module. DKM segmentation trainers get their frozen diffusion module from the conformance run
of their ``dm_trainer`` (a real nnU-Net checkpoint, named by ``nnUNet_ext_dkm_dm_checkpoint``).
"""
from __future__ import annotations

import importlib
import io
import pickle
import sys
import textwrap

import numpy as np
import pytest
import torch

from tests.conformance_helpers import (DEVICE, FOLD, ConformanceSession, assert_bit_identical, build_datasets,
                                       code_owner, declared_overrides, discover_trainers, predicts_segmentation,
                                       primary_configuration, quiet, supported_configurations, unwrapped_network,
                                       variant_representative)

TRAINERS = discover_trainers()
# settings-only variants (conformance_variant_of) get the lookup and pickling checks; their representative the rest
FULL_RUN = [cls for cls in TRAINERS if variant_representative(cls) is None]
VARIANTS = [cls for cls in TRAINERS if variant_representative(cls) is not None]


def _name(cls) -> str:
    return cls.__name__


def _trainer_configurations(slow_beyond_primary: bool):
    for cls in FULL_RUN:
        for configuration in supported_configurations(cls):
            marks = [pytest.mark.slow] if slow_beyond_primary and configuration != primary_configuration(cls) else []
            yield pytest.param(cls, configuration, id=f"{cls.__name__}-{configuration}", marks=marks)


BUILDS = list(_trainer_configurations(slow_beyond_primary=False))
RUNS = list(_trainer_configurations(slow_beyond_primary=True))


@pytest.fixture(scope="module")
def conformance(tmp_path_factory):
    """nnU-Net folders, the fast CPU settings, the trainers' presets and the planned phantom pair, for the module."""
    from nnunet_ext.env import environment

    root = tmp_path_factory.mktemp("conformance")
    with pytest.MonkeyPatch.context() as patch:
        env = environment(root / "ws", keep_existing=False)
        for variable, value in env.items():
            patch.setenv(variable, value)
        for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            (root / "ws" / variable).mkdir(parents=True, exist_ok=True)
        patch.setenv("nnUNet_ext_seed", "0")
        patch.setenv("nnUNet_ext_deterministic", "0")  # "1" would switch torch's global deterministic mode for good
        for variable in ("nnUNet_ext_dkm_dm_checkpoint", "nnUNet_ext_dkm_dm_fold", "nnUNet_ext_epochs",
                         "nnUNet_ext_adam_lr", "nnUNet_ext_iters", "nnUNet_ext_val_iters"):
            patch.delenv(variable, raising=False)  # a developer's shell must not steer the suite
        # raising=True (the default): an override naming an attribute the class lacks is a typo and fails here
        for klass, attribute, value in declared_overrides(TRAINERS):
            patch.setattr(klass, attribute, value)
        datasets = build_datasets(patch, root / "ws" / "nnUNet_raw", root / "ws" / "nnUNet_preprocessed")
        patch.setenv("nnUNet_n_proc_DA", "0")  # from here on augmentation runs in this process: no workers
        yield ConformanceSession(datasets, patch, root / "weights")


# --- discovery ----------------------------------------------------------------------------------------------------

def test_discovery_dedupes_sorts_and_skips_nnunet_classes(tmp_path, monkeypatch):
    """Shims re-exporting a class twice, importing nnU-Net's base class and defining a new trainer in another file."""
    package = tmp_path / "fake_shims"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "b_shim.py").write_text(textwrap.dedent("""
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        from nnunet_ext.training.demo import TinyTrainer, DemoTrainer
        Alias = TinyTrainer
    """))
    (package / "a_shim.py").write_text(textwrap.dedent("""
        from nnunet_ext.training.base import ExtTrainerBase
        from nnunet_ext.training.demo import TinyTrainer
        class ZNewMethodTrainer(ExtTrainerBase):
            pass
        NOT_A_TRAINER = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        names = [cls.__name__ for cls in discover_trainers("fake_shims")]
    finally:
        for module in [m for m in sys.modules if m == "fake_shims" or m.startswith("fake_shims.")]:
            del sys.modules[module]
    assert names == ["DemoTrainer", "ExtTrainerBase", "TinyTrainer", "ZNewMethodTrainer"]


def test_discovered_trainers_have_unique_names():
    from nnunet_ext.training.demo import DemoTrainer, TinyTrainer

    names = [cls.__name__ for cls in TRAINERS]
    assert len(set(names)) == len(names), names  # nnU-Net resolves trainers by name: the first one would win
    assert {DemoTrainer, TinyTrainer} <= set(TRAINERS)


@pytest.mark.parametrize("cls", VARIANTS, ids=_name)
def test_variants_share_the_code_of_their_fully_checked_representative(cls):
    by_name = {klass.__name__: klass for klass in FULL_RUN}
    representative = by_name.get(variant_representative(cls))
    assert representative is not None, f"{cls.__name__}: representative {variant_representative(cls)!r} is not an " \
                                       f"exported trainer with a full conformance run"
    assert code_owner(cls) is code_owner(representative), (
        f"{cls.__name__} is declared a settings-only variant of {representative.__name__}, but its code comes from "
        f"{code_owner(cls).__name__}, not {code_owner(representative).__name__}")


def test_code_owner_finds_methods_and_ignores_settings():
    class Base:
        def method(self):
            return 1

    class Settings(Base):
        width = 3

    class Override(Settings):
        @property
        def height(self):
            return 2

    assert code_owner(Settings) is Base and code_owner(Override) is Override


@pytest.mark.parametrize("cls", TRAINERS, ids=_name)
def test_supported_configurations_are_known(cls):
    configurations = supported_configurations(cls)
    assert configurations and set(configurations) <= {"2d", "3d_fullres"}, configurations


@pytest.mark.parametrize("trainer_name", ["DemoTrainerSGD", "DemoTrainer", "BHSDTrainer_UNETR"])
def test_adam_lr_variable_replaces_any_optimizer(conformance, trainer_name, monkeypatch):
    """nnUNet_ext_adam_lr: Adam at that lr with nnU-Net's poly decay, whatever the trainer configures itself."""
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    from tests.conformance_helpers import create_trainer

    cls = next(c for c in TRAINERS if c.__name__ == trainer_name)
    monkeypatch.setenv("nnUNet_ext_adam_lr", "0.002")
    trainer = create_trainer(cls, conformance.dataset_for(cls), primary_configuration(cls))
    with quiet():
        trainer.initialize()
    assert type(trainer.optimizer) is torch.optim.Adam and trainer.optimizer.param_groups[0]["lr"] == 0.002
    assert isinstance(trainer.lr_scheduler, PolyLRScheduler) and trainer.initial_lr == 0.002
    params = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert params == {id(p) for p in trainer.network.parameters()}


# --- 1. network builds --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,configuration", BUILDS)
def test_network_builds(conformance, cls, configuration):
    """As ``initialize`` (deep supervision on) and the predictor (off) build it; segmentation networks map a batch
    of patches to one logit map per head."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset = conformance.dataset_for(cls)
    plans_manager = PlansManager(dataset.plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    channels = determine_num_input_channels(plans_manager, configuration_manager, dataset.dataset_json)
    heads = plans_manager.get_label_manager(dataset.dataset_json).num_segmentation_heads
    patch = tuple(configuration_manager.patch_size)
    x = torch.randn((2, channels, *patch), generator=torch.Generator().manual_seed(0))
    for deep_supervision in (True, False):
        network = cls.build_network_architecture(plans_manager, configuration_manager, channels, heads,
                                                 deep_supervision)
        assert isinstance(network, torch.nn.Module) and sum(p.numel() for p in network.parameters()) > 0
        if not predicts_segmentation(cls):
            continue
        network.eval()
        with torch.no_grad():
            output = network(x)
        if not deep_supervision:  # what the predictor feeds its sliding window: one tensor
            assert isinstance(output, torch.Tensor), type(output)
        full_resolution = output[0] if isinstance(output, (list, tuple)) else output
        assert full_resolution.shape == (2, heads, *patch), (deep_supervision, full_resolution.shape)


# --- 2. train step ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,configuration", RUNS)
def test_train_step(conformance, cls, configuration):
    run = conformance.run(cls, configuration)
    assert run.loss.size == 1 and np.isfinite(run.loss).all(), f"train_step returned the loss {run.loss}"
    after = unwrapped_network(run.trainer).state_dict()
    changed = {name for name, before in run.weights_before_step.items() if not torch.equal(before, after[name])}
    trainable = set(run.weights_before_step) & {n for n, _ in unwrapped_network(run.trainer).named_parameters()}
    assert changed & (trainable - run.frozen_parameters), "the optimizer step moved no trainable parameter"
    assert not changed & run.frozen_parameters, f"frozen parameters changed: {sorted(changed & run.frozen_parameters)}"


# --- 3. pickling --------------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:`torch.jit.interface` is deprecated:FutureWarning")  # nnU-Net imports it all
@pytest.mark.parametrize("cls", TRAINERS, ids=_name)
def test_class_pickles_as_the_class_nnunet_finds(conformance, cls):
    """Spawned workers and DDP processes re-import the class by reference, and ``nnUNetv2_train/predict -tr NAME``
    find it through the shims (imported as throw-away top-level modules): all three must be the same object."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    assert pickle.loads(pickle.dumps(cls)) is cls
    assert getattr(importlib.import_module(cls.__module__), cls.__qualname__) is cls
    with quiet():
        assert recursive_find_trainer_class_by_name(cls.__name__) is cls


@pytest.mark.parametrize("cls,configuration", RUNS)
def test_dataloader_and_weights_pickle(conformance, cls, configuration):
    """What nnU-Net actually pickles. Its augmentation workers receive the data loader with the trainer's transforms
    (spawn pickles them), so the loader must survive pickling and still produce batches. The network object itself
    is never pickled: checkpoints hold its ``state_dict`` (``torch.save``), DDP broadcasts tensors and the predictor
    rebuilds the network with ``build_network_architecture``. So the weights' contract is that the state_dict holds
    nothing but tensors: it round-trips through ``torch.load(weights_only=True)``, the safe loader."""
    run = conformance.run(cls, configuration)
    loader = run.trainer.dataloader_train.data_loader
    copy = pickle.loads(pickle.dumps(loader))
    batch, copied_batch = next(loader), next(copy)
    assert copied_batch["data"].shape == batch["data"].shape

    state = unwrapped_network(run.trainer).state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    assert_bit_identical(dict(state), dict(torch.load(buffer, weights_only=True)), "state_dict")


# --- 4. checkpoint round trip -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,configuration", RUNS)
def test_checkpoint_loads_bit_identically(conformance, cls, configuration):
    run = conformance.run(cls, configuration)
    trained = unwrapped_network(run.trainer).state_dict()
    assert any(not torch.equal(run.weights_before_step[k], trained[k]) for k in trained), \
        "training did not change the weights: the round trip below would prove nothing"
    fresh = conformance.fresh_trainer(cls, configuration)
    with quiet():
        fresh.load_checkpoint(str(run.checkpoint))
    assert_bit_identical(dict(trained), dict(unwrapped_network(fresh).state_dict()), "network_weights")
    assert_bit_identical(run.trainer.optimizer.state_dict(), fresh.optimizer.state_dict(), "optimizer_state")
    if run.trainer.grad_scaler is not None:
        assert_bit_identical(run.trainer.grad_scaler.state_dict(), fresh.grad_scaler.state_dict(), "grad_scaler")


# --- 5. prediction ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,configuration", RUNS)
def test_predictor_predicts_from_the_checkpoint(conformance, cls, configuration, tmp_path):
    """As ``nnUNetv2_predict -tr NAME``: the predictor reads plans.json, dataset.json and fold_<F>/checkpoint_final.pth
    from the results folder and resolves the trainer by the name in the checkpoint through ``nnUNet_extTrainer``."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if not predicts_segmentation(cls):
        pytest.skip(f"{cls.__name__} trains no segmentation model")
    run = conformance.run(cls, configuration)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=False,
                                perform_everything_on_device=DEVICE.type == "cuda", device=DEVICE, allow_tqdm=False)
    with quiet():
        predictor.initialize_from_trained_model_folder(run.trainer.output_folder_base, use_folds=(FOLD,))
        files = run.dataset.test_case_files()
        predictor.predict_from_files_sequential([files], str(tmp_path))
    assert predictor.trainer_name == cls.__name__

    reader = predictor.plans_manager.image_reader_writer_class()
    image, _ = reader.read_images(files)
    (prediction_file,) = tmp_path.glob(f"*{run.dataset.dataset_json['file_ending']}")
    prediction, _ = reader.read_seg(str(prediction_file))
    assert prediction.shape[1:] == image.shape[1:]
    assert set(np.unique(prediction).tolist()) <= set(predictor.label_manager.all_labels)
