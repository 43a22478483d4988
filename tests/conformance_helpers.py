"""Machinery of the trainer conformance suite (``tests/test_trainer_conformance.py``), importable by scripts.

``discover_trainers()`` lists every nnU-Net trainer class the ``trainers/`` shims export, so a new method's trainers
join the suite by merely existing (a results file records ``len(discover_trainers())`` as ``conformance_trainers``).

The rest builds what the suite checks against: a tiny ``breast_dce`` phantom pair (bilateral DCE dataset with pre,
post1, post2 and SUB channels and its pre-contrast-only twin) planned and preprocessed by nnU-Net itself with ``CPUPlanner``, plans
patched to tiny patches, and one cached "conformance run" per (trainer, configuration): ``initialize``,
``on_train_start``, one ``train_step`` on a batch of the trainer's own dataloader, ``save_checkpoint``.

Method-specific facts the suite cannot guess from a class live in three small functions below
(:func:`conformance_dataset`, :func:`predicts_segmentation`, :func:`pretrained_prerequisites`); a new method whose
trainers need something other than the defaults adds its line there.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from tests.conftest import InProcessPool

TRAINER_PACKAGE = "nnunet_ext.trainers"
CONFIGURATIONS = ("2d", "3d_fullres")
PLANNER, PLANS = "CPUPlanner", "nnUNetPlansCPU"
DCE_DATASET_ID, PRE_ONLY_DATASET_ID = 981, 982   # private nnU-Net root: any free ids
IMAGE_SHAPE = (16, 32, 32)
# two breasts (the contrastive pretraining mirrors tumours across the midline) and the subtraction channel: channels
# pre, post1, post2, SUB
DCE_OPTIONS = {"bilateral": True, "subtraction": True}
TRAINING_CASES, TEST_CASES = 5, 1                # 5: nnU-Net's 5-fold split needs one case per fold
TINY_PATCH_SIZE = {"2d": [32, 32], "3d_fullres": [16, 16, 16]}
BATCH_SIZE = 2                                   # BatchNorm-based networks need > 1 sample per batch
FOLD = 0
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- discovery ---------------------------------------------------------------------------------------------------

def discover_trainers(package: str = TRAINER_PACKAGE) -> list[type[nnUNetTrainer]]:
    """Every ``nnUNetTrainer`` subclass that a module of ``package`` exports, deduplicated, sorted by name.

    nnU-Net's own classes are left out (a shim importing ``nnUNetTrainer`` does not make it ours).
    """
    root = importlib.import_module(package)
    found: dict[int, type[nnUNetTrainer]] = {}
    for info in pkgutil.iter_modules(root.__path__, f"{package}."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, nnUNetTrainer)
                    and not value.__module__.startswith("nnunetv2.")):
                found[id(value)] = value
    return sorted(found.values(), key=lambda cls: (cls.__name__, cls.__module__))


def variant_representative(cls: type[nnUNetTrainer]) -> str | None:
    """The exported trainer whose full conformance run stands for ``cls`` (``conformance_variant_of``), or None."""
    return getattr(cls, "conformance_variant_of", None)


def code_owner(cls: type) -> type:
    """The first class in ``cls``'s MRO that defines a method, property or other callable: where its code lives.
    Two classes with the same code owner differ only in settings (data class attributes)."""
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            if name.startswith("__") and name.endswith("__"):
                continue
            if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
                return klass
    return object


def primary_configuration(cls: type[nnUNetTrainer]) -> str:
    """The configuration of the fast conformance run: 3d_fullres where supported (what the methods target)."""
    supported = supported_configurations(cls)
    return "3d_fullres" if "3d_fullres" in supported else supported[0]


def supported_configurations(cls: type[nnUNetTrainer]) -> tuple[str, ...]:
    return tuple(getattr(cls, "supported_configurations", CONFIGURATIONS))


# --- method-specific facts ----------------------------------------------------------------------------------------

def conformance_dataset(cls: type[nnUNetTrainer]) -> str:
    """``"dce"`` (4 channels, labelled) or ``"pre_only"`` (its 1-channel twin): the dataset the trainer trains on."""
    from nnunet_ext.methods.dkm.trainers import DKMTrainer
    from nnunet_ext.methods.hcnet.trainers import HCNetHIPMTrainer, HCNetTrainerNoPrior, UXNetTrainer

    return "pre_only" if issubclass(cls, (DKMTrainer, HCNetHIPMTrainer, HCNetTrainerNoPrior, UXNetTrainer)) else "dce"


def predicts_segmentation(cls: type[nnUNetTrainer]) -> bool:
    """False for trainers whose network is no segmentation model (``nnUNetPredictor`` does not apply to them)."""
    from nnunet_ext.methods.contrastive.trainers import TumorBgPretrainTrainer
    from nnunet_ext.methods.dkm.trainers import DKMDiffusionTrainer

    # the DM denoises (`nnunet-ext dkm synthesize-post` runs it); a pretraining network embeds patches
    return not issubclass(cls, (DKMDiffusionTrainer, TumorBgPretrainTrainer))


def pretrained_prerequisites(cls: type[nnUNetTrainer]) -> dict[str, type[nnUNetTrainer] | Callable[[Path], Path]]:
    """Environment variable -> what it must name while ``cls`` is initialized: a trainer class (its conformance
    checkpoint: a pretrained part trained by another trainer) or a function writing a weights file into a folder."""
    from nnunet_ext.methods.contrastive import trainers as contrastive
    from nnunet_ext.methods.dkm.trainers import DKMTrainer
    from nnunet_ext.methods.hcnet.trainers import HCNetTrainer
    from nnunet_ext.methods.mammo_sam.trainers import MammoSAMTrainer

    if issubclass(cls, DKMTrainer) and cls.dm_trainer is not None and cls.code_stages:
        return {"nnUNet_ext_dkm_dm_checkpoint": cls.dm_trainer}
    if issubclass(cls, HCNetTrainer):
        return {"nnUNet_ext_hcnet_hipm_checkpoint": cls.hipm_trainer}
    if issubclass(cls, contrastive.TumorBgFusionTrainer) and cls.pretrain_trainer is not None:
        return {"nnUNet_ext_contrastive_checkpoint": getattr(contrastive, cls.pretrain_trainer)}
    if issubclass(cls, MammoSAMTrainer) and cls.needs_sam_weights:
        return {"nnUNet_ext_sam_checkpoint": lambda folder: random_sam_checkpoint(folder, cls.preset, cls.decoder)}
    return {}


def random_sam_checkpoint(folder: Path, preset: str, decoder: str) -> Path:
    """A SAM-format file (RGB patch embedding, ``image_encoder.*`` and SAM decoder keys) with random weights."""
    from nnunet_ext.methods.mammo_sam.network import MammoSAM
    from nnunet_ext.methods.mammo_sam.weights import export_sam_checkpoint

    path = Path(folder) / f"sam_{preset}_{decoder}_random.pth"
    if not path.is_file():
        export_sam_checkpoint(MammoSAM(3, 2, preset, decoder=decoder), path)
    return path


# --- conformance overrides ----------------------------------------------------------------------------------------

def declared_overrides(trainers: list[type]) -> list[tuple[type, str, Any]]:
    """(class, attribute, value) for every ``conformance_overrides`` entry declared in the MRO of ``trainers``.

    An entry is applied to the class that declares it: subclasses that inherit the attribute see the preset value,
    subclasses that set the attribute themselves (``DKMDiffusionTrainer_small.dm_widths``) keep theirs.
    """
    entries: dict[tuple[int, str], tuple[type, str, Any]] = {}
    for trainer in trainers:
        for klass in trainer.__mro__:
            for attribute, value in klass.__dict__.get("conformance_overrides", {}).items():
                entries[(id(klass), attribute)] = (klass, attribute, value)
    return list(entries.values())


# --- nnU-Net without worker processes -----------------------------------------------------------------------------

def planning_in_process(monkeypatch) -> None:
    """Patch nnU-Net's planning modules to run without worker processes and with a small intensity sample."""
    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
    from nnunetv2.preprocessing.preprocessors import default_preprocessor
    from nnunetv2.utilities import utils

    spawn = SimpleNamespace(get_context=lambda method: SimpleNamespace(Pool=InProcessPool))
    monkeypatch.setattr(fingerprint_extractor, "multiprocessing", spawn)
    monkeypatch.setattr(default_preprocessor, "multiprocessing", spawn)
    monkeypatch.setattr(utils, "Pool", InProcessPool)
    # nnU-Net draws 10e7 foreground intensities (with replacement) for statistics that only CT normalization uses;
    # on 5 tiny cases that is 7 s of sampling and sorting. 1e5 samples give the same plans for z-scored MRI.
    original_init = fingerprint_extractor.DatasetFingerprintExtractor.__init__

    def init_with_small_sample(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.num_foreground_voxels_for_intensitystats = 1e5
        self.show_progress_bar = False

    monkeypatch.setattr(fingerprint_extractor.DatasetFingerprintExtractor, "__init__", init_with_small_sample)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow nnU-Net's console chatter (banner, plans, progress bars); exceptions still propagate."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


# --- data ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConformanceDataset:
    name: str                 # nnU-Net dataset name, e.g. Dataset981_BreastDCE
    raw: Path                 # raw dataset folder (imagesTs holds the test case)
    preprocessed: Path        # preprocessed dataset folder (plans, dataset.json)

    @property
    def plans(self) -> dict:
        return json.loads((self.preprocessed / f"{PLANS}.json").read_text())

    @property
    def dataset_json(self) -> dict:
        return json.loads((self.preprocessed / "dataset.json").read_text())

    def test_case_files(self) -> list[str]:
        """Channel files of the first test case, in channel order (what ``nnUNetv2_predict -i`` would pick up)."""
        ending = self.dataset_json["file_ending"]
        first = sorted((self.raw / "imagesTs").glob(f"*_0000{ending}"))[0].name[:-len(f"_0000{ending}")]
        return [str(p) for p in sorted((self.raw / "imagesTs").glob(f"{first}_[0-9][0-9][0-9][0-9]{ending}"))]


def build_datasets(monkeypatch, raw_root: Path, preprocessed_root: Path) -> dict[str, ConformanceDataset]:
    """Synthesize the DCE/pre-only pair, plan and preprocess both with nnU-Net (CPUPlanner, 2d and 3d_fullres) and
    patch their plans to tiny patches and batch size 2."""
    from nnunet_ext.planning.cli import plan_and_preprocess
    from nnunet_ext.synth.cli import synthesize

    dce_raw, pre_raw = synthesize("breast_dce", DCE_DATASET_ID, cases=TRAINING_CASES, test_cases=TEST_CASES, seed=0,
                                  raw=str(raw_root), pre_only_id=PRE_ONLY_DATASET_ID,
                                  options={"shape": IMAGE_SHAPE, **DCE_OPTIONS})
    with monkeypatch.context() as planning:
        planning_in_process(planning)
        planning.setenv("nnUNet_n_proc_DA", "1")  # nnU-Net's planner calls set_num_threads with it; 0 crashes
        with quiet():
            plan_and_preprocess([DCE_DATASET_ID, PRE_ONLY_DATASET_ID], PLANNER, CONFIGURATIONS)
    datasets = {}
    for key, raw in (("dce", dce_raw), ("pre_only", pre_raw)):
        dataset = ConformanceDataset(raw.name, raw, preprocessed_root / raw.name)
        plans = dataset.plans
        for configuration in CONFIGURATIONS:
            plans["configurations"][configuration].update(patch_size=TINY_PATCH_SIZE[configuration],
                                                          batch_size=BATCH_SIZE)
        (dataset.preprocessed / f"{PLANS}.json").write_text(json.dumps(plans, indent=2))
        datasets[key] = dataset
    return datasets


# --- trainers -----------------------------------------------------------------------------------------------------

def create_trainer(cls: type[nnUNetTrainer], dataset: ConformanceDataset, configuration: str) -> nnUNetTrainer:
    """A trainer exactly as ``nnUNetv2_train`` creates it (``run_training.get_trainer_from_args``)."""
    plans = dataset.plans
    plans["continue_training"] = False
    with quiet():
        return cls(plans=plans, configuration=configuration, fold=FOLD, dataset_json=dataset.dataset_json,
                   device=DEVICE)


def unwrapped_network(trainer: nnUNetTrainer) -> torch.nn.Module:
    from nnunet_ext.training.base import unwrap_network

    return unwrap_network(trainer.network)


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@dataclass
class ConformanceRun:
    """One trainer after ``initialize``, ``on_train_start`` and one ``train_step``, checkpointed."""

    trainer: nnUNetTrainer
    dataset: ConformanceDataset
    configuration: str
    loss: np.ndarray
    weights_before_step: dict[str, torch.Tensor]
    frozen_parameters: set[str]           # names of parameters with requires_grad=False
    checkpoint: Path                      # fold_<FOLD>/checkpoint_final.pth in the nnU-Net results layout


class ConformanceSession:
    """Datasets plus a cache of conformance runs, shared by every test of the module.

    A failed run is cached too: the trainer's later checks fail at once with the same cause instead of retrying.
    """

    def __init__(self, datasets: dict[str, ConformanceDataset], monkeypatch, weights_folder: Path):
        self.datasets = datasets
        self.monkeypatch = monkeypatch
        self._runs: dict[tuple[type, str], ConformanceRun | Exception] = {}
        self.weights_folder = weights_folder  # stand-in pretrained files (random SAM weights)

    def dataset_for(self, cls: type[nnUNetTrainer]) -> ConformanceDataset:
        return self.datasets[conformance_dataset(cls)]

    @contextlib.contextmanager
    def prerequisites(self, cls: type[nnUNetTrainer], configuration: str) -> Iterator[None]:
        """Point the trainer's prerequisite variables at the conformance checkpoints of the trainers they name."""
        paths = {variable: self.run(provider, configuration).checkpoint if isinstance(provider, type)
                 else provider(self.weights_folder) for variable, provider in pretrained_prerequisites(cls).items()}
        with self.monkeypatch.context() as patch:
            for variable, path in paths.items():
                patch.setenv(variable, str(path))
            yield

    def run(self, cls: type[nnUNetTrainer], configuration: str) -> ConformanceRun:
        key = (cls, configuration)
        if key not in self._runs:
            try:
                self._runs[key] = self._run(cls, configuration)
            except Exception as error:  # cached for the trainer's later checks, and raised now
                self._runs[key] = error
                raise
        result = self._runs[key]
        if isinstance(result, Exception):
            raise RuntimeError(f"the conformance run of {cls.__name__} ({configuration}) failed earlier: "
                               f"{type(result).__name__}: {result}") from result
        return result

    def _run(self, cls: type[nnUNetTrainer], configuration: str) -> ConformanceRun:
        dataset = self.dataset_for(cls)
        with self.prerequisites(cls, configuration):
            trainer = create_trainer(cls, dataset, configuration)
            with quiet():
                trainer.initialize()
                trainer.on_train_start()   # dataloaders (in-process), deep supervision switch, plans.json copies
                trainer.on_epoch_start()
                trainer.on_train_epoch_start()
            network = unwrapped_network(trainer)
            weights_before_step = clone_state(network)
            frozen = {name for name, p in network.named_parameters() if not p.requires_grad}
            batch = next(trainer.dataloader_train)
            loss = trainer.train_step(batch)["loss"]
            checkpoint = Path(trainer.output_folder) / "checkpoint_final.pth"
            trainer.save_checkpoint(str(checkpoint))
        return ConformanceRun(trainer, dataset, configuration, np.asarray(loss), weights_before_step, frozen,
                              checkpoint)

    def fresh_trainer(self, cls: type[nnUNetTrainer], configuration: str) -> nnUNetTrainer:
        """A second, independent instance of the trainer, initialized (prerequisites in place)."""
        with self.prerequisites(cls, configuration):
            trainer = create_trainer(cls, self.dataset_for(cls), configuration)
            with quiet():
                trainer.initialize()
        return trainer


# --- comparisons --------------------------------------------------------------------------------------------------

def assert_bit_identical(expected: Any, actual: Any, where: str = "") -> None:
    """Recursive equality of nested dicts/lists/tuples of tensors and plain values; tensors must match in dtype,
    shape and every bit (``torch.equal``)."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), f"{where}: tensor expected, got {type(actual).__name__}"
        assert expected.dtype == actual.dtype and expected.shape == actual.shape, \
            f"{where}: {expected.dtype}{tuple(expected.shape)} != {actual.dtype}{tuple(actual.shape)}"
        assert torch.equal(expected.cpu(), actual.cpu()), f"{where}: values differ"
    elif isinstance(expected, Mapping):
        assert isinstance(actual, Mapping) and set(expected) == set(actual), \
            f"{where}: keys differ: {sorted(map(str, set(expected) ^ set(actual)))}"
        for key in expected:
            assert_bit_identical(expected[key], actual[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(expected) == len(actual), f"{where}: lengths differ"
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_bit_identical(e, a, f"{where}[{i}]")
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"
