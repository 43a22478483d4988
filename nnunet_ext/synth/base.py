"""Phantom registry and the writer that turns phantom cases into an nnU-Net raw dataset.

Every phantom kind registers a :class:`PhantomKind`. Case ``i`` of a split is drawn from its own random stream
``default_rng([seed, split, i])``, so a case does not change when the number of cases changes.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from nnunet_ext.atomic import atomic_output_dirs
from nnunet_ext.errors import UserInputError
from nnunet_ext.imageio import write_image
from nnunet_ext.synth.options import Option, validate

FILE_ENDING = ".nii.gz"
TRAIN, TEST = 0, 1


@dataclass
class PhantomCase:
    """One synthetic case. Arrays are (z, y, x) for 3D or (y, x) for 2D; ``spacing`` uses the same axis order.

    ``extras`` holds additional per-case arrays (e.g. a ground-truth deformation) written to
    ``<dataset>/extras<Tr|Ts>/<case>_<key>.nii.gz`` (nnU-Net ignores that folder).
    """

    images: list[np.ndarray]
    label: np.ndarray
    spacing: tuple[float, ...]
    extras: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class PhantomKind:
    """A registered phantom kind.

    ``option_specs`` declare every option ``make_case`` accepts (``shape`` included); :meth:`validate_options`
    checks user options against them once, before any case is generated, so ``make_case`` receives only valid,
    complete options. ``check_relations`` refuses combinations of valid values the specs cannot express.
    """

    name: str                      # CLI name, e.g. "breast_dce"
    dataset_name: str              # default nnU-Net dataset name suffix, e.g. "BreastDCE"
    channel_names: dict[str, str]  # dataset.json channel_names
    labels: dict[str, int | list[int]]  # dataset.json labels (a list of values: an nnU-Net region)
    make_case: Callable[..., PhantomCase]  # make_case(rng, **options) -> PhantomCase
    description: str
    option_specs: Sequence[Option] = ()
    check_relations: Callable[[dict], None] | None = None  # raises UserInputError
    # labels that depend on the options (e.g. the ultrasound scene); None: ``labels`` always
    labels_for: Callable[[dict], dict[str, int | list[int]]] | None = None
    # channels that depend on the options (e.g. brain_pairs' layout); None: ``channel_names`` always
    channel_names_for: Callable[[dict], dict[str, str]] | None = None
    # dataset.json regions_class_order for options whose labels are regions (nnU-Net needs it then); None: no regions
    regions_class_order_for: Callable[[dict], list[int] | None] | None = None

    def validate_options(self, options: Mapping[str, object] | None) -> dict[str, object]:
        """Every declared option (given or default), checked and normalised; UserInputError for bad input."""
        return validate(self.name, self.option_specs, options, self.check_relations)

    def labels_with(self, options: Mapping[str, object] | None) -> dict[str, int]:
        return self.labels_for(self.validate_options(options)) if self.labels_for else self.labels

    def channel_names_with(self, options: Mapping[str, object] | None) -> dict[str, str]:
        return self.channel_names_for(self.validate_options(options)) if self.channel_names_for else self.channel_names

    def regions_class_order_with(self, options: Mapping[str, object] | None) -> list[int] | None:
        return self.regions_class_order_for(self.validate_options(options)) if self.regions_class_order_for else None


REGISTRY: dict[str, PhantomKind] = {}


def register(kind: PhantomKind) -> PhantomKind:
    REGISTRY[kind.name] = kind
    return kind


def case_rng(seed: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, split, index])


def case_identifier(split: int, index: int) -> str:
    return f"{'case' if split == TRAIN else 'test'}_{index:04d}"


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise UserInputError(f"dataset id must be in 1..999, got {dataset_id}")
    return f"Dataset{dataset_id:03d}_{name}"


def existing_dataset_with_id(raw_root: Path, dataset_id: int) -> Path | None:
    prefix = f"Dataset{dataset_id:03d}_"
    if raw_root.is_dir():
        for p in sorted(raw_root.iterdir()):
            if p.name.startswith(prefix) and p.is_dir():
                return p
    return None


@dataclass
class RawDatasetSpec:
    """One nnU-Net raw dataset to write from phantom cases.

    Args:
        channels: subset of image channels to write (e.g. ``[0]`` for a pre-contrast-only copy); default all.
        extra_json: additional dataset.json keys (nnU-Net ignores unknown keys).
        unlabeled: training case ids whose label is withheld: nnU-Net needs a label file per training case, so they
            get an all-background placeholder, and dataset.json lists them under ``unlabeled_cases``.
        regions_class_order: dataset.json ``regions_class_order``, required when ``labels`` holds regions (lists of
            label values): the label value each region writes, in the order of the regions.
    """

    dataset_id: int
    name: str
    channel_names: dict[str, str]
    labels: dict[str, int | list[int]]
    train: Sequence[tuple[str, PhantomCase]]
    test: Sequence[tuple[str, PhantomCase]]
    channels: Sequence[int] | None = None
    extra_json: dict | None = None
    unlabeled: Sequence[str] = ()
    regions_class_order: Sequence[int] | None = None


def _check_spec(spec: RawDatasetSpec) -> None:
    if not spec.train:
        raise UserInputError("a dataset needs at least one training case")
    for identifier, case in list(spec.train) + list(spec.test):
        if len(case.images) != len(spec.channel_names):
            raise UserInputError(f"case {identifier} has {len(case.images)} image channels but the dataset names "
                                 f"{len(spec.channel_names)} ({', '.join(spec.channel_names.values())})")
    unknown = set(spec.unlabeled) - {identifier for identifier, _ in spec.train}
    if unknown:
        raise UserInputError(f"unlabeled cases {sorted(unknown)} are not training cases of {spec.name}")
    regions = [name for name, value in spec.labels.items() if isinstance(value, (list, tuple))]
    if regions and spec.regions_class_order is None:
        raise UserInputError(f"{spec.name}: region labels ({', '.join(regions)}) need a regions_class_order")


def _write_dataset_files(folder: Path, spec: RawDatasetSpec) -> None:
    channels = list(range(len(spec.train[0][1].images))) if spec.channels is None else list(spec.channels)
    unlabeled = set(spec.unlabeled)
    for split_name, cases in (("Tr", spec.train), ("Ts", spec.test)):
        (folder / f"images{split_name}").mkdir()
        (folder / f"labels{split_name}").mkdir()
        for identifier, case in cases:
            for out_channel, c in enumerate(channels):
                write_image(folder / f"images{split_name}" / f"{identifier}_{out_channel:04d}{FILE_ENDING}",
                            case.images[c].astype(np.float32), case.spacing)
            label = np.zeros_like(case.label) if identifier in unlabeled else case.label
            write_image(folder / f"labels{split_name}" / f"{identifier}{FILE_ENDING}", label.astype(np.uint8),
                        case.spacing)
            for key, arr in case.extras.items():
                (folder / f"extras{split_name}").mkdir(exist_ok=True)
                arr = np.asarray(arr)
                # integer maps (e.g. a moving label) stay integer; fields are float32
                arr = arr.astype(np.uint8 if arr.dtype.kind in "iub" and arr.max(initial=0) < 256 else np.float32)
                write_image(folder / f"extras{split_name}" / f"{identifier}_{key}{FILE_ENDING}", arr, case.spacing,
                            is_vector=arr.ndim == case.label.ndim + 1)
    dataset_json = {
        "channel_names": {str(i): spec.channel_names[str(c)] for i, c in enumerate(channels)},
        "labels": spec.labels,
        **({"regions_class_order": list(spec.regions_class_order)} if spec.regions_class_order is not None else {}),
        "numTraining": len(spec.train),
        "file_ending": FILE_ENDING,
        "name": spec.name,
        "description": "synthetic phantom written by nnunet-ext synth (deterministic per seed)",
        "reference": "nnunet-ext synthetic data",
        "licence": "CC0 (synthetic)",
    }
    if unlabeled:
        dataset_json["unlabeled_cases"] = sorted(unlabeled)
        dataset_json["unlabeled_cases_note"] = ("labelsTr files of these cases are all-background placeholders "
                                                "(nnU-Net needs one per case); do not train segmentation on them")
    dataset_json.update(spec.extra_json or {})
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))


def write_raw_datasets(raw_root: str | os.PathLike, specs: Sequence[RawDatasetSpec], overwrite: bool = False,
                       written_by: str = "nnunet-ext synth") -> list[Path]:
    """Write several nnU-Net raw datasets in one atomic step (all appear together, or none) and return their folders.

    An existing dataset with the same id (under any name) is replaced only with ``overwrite`` and only if nnunet-ext
    wrote it (:mod:`nnunet_ext.atomic`); it is removed after the new datasets are in place.
    """
    raw_root = Path(raw_root)
    folders, retire = [], []
    for spec in specs:
        folder = raw_root / dataset_folder_name(spec.dataset_id, spec.name)
        clash = existing_dataset_with_id(raw_root, spec.dataset_id)
        if clash is not None and not overwrite:
            raise UserInputError(f"dataset id {spec.dataset_id} already exists at {clash} (pass --overwrite to "
                                 f"replace it)")
        if clash is not None and clash != folder:
            retire.append(clash)
        _check_spec(spec)
        folders.append(folder)
    if len({s.dataset_id for s in specs}) != len(specs):
        raise UserInputError(f"dataset ids must differ, got {[s.dataset_id for s in specs]}")
    with atomic_output_dirs(folders, overwrite=overwrite, written_by=written_by, retire=retire) as tmps:
        for tmp, spec in zip(tmps, specs):
            _write_dataset_files(tmp, spec)
    return folders


def write_raw_dataset(raw_root: str | os.PathLike, dataset_id: int, dataset_name: str,
                      channel_names: dict[str, str], labels: dict[str, int],
                      train: Sequence[tuple[str, PhantomCase]], test: Sequence[tuple[str, PhantomCase]],
                      overwrite: bool = False, channels: Sequence[int] | None = None,
                      extra_json: dict | None = None) -> Path:
    """Write one nnU-Net raw dataset atomically (see :func:`write_raw_datasets`) and return its folder."""
    spec = RawDatasetSpec(dataset_id, dataset_name, channel_names, labels, train, test, channels, extra_json)
    return write_raw_datasets(raw_root, [spec], overwrite)[0]


def generate_cases(kind: PhantomKind, n: int, split: int, seed: int,
                   options: Mapping[str, object] | None = None) -> list[tuple[str, PhantomCase]]:
    opts = kind.validate_options(options)
    return [(case_identifier(split, i), kind.make_case(case_rng(seed, split, i), **opts)) for i in range(n)]
