"""``nnunet-ext synth KIND -d ID --cases N --seed S``: write a phantom as an nnU-Net raw dataset."""
from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

from nnunet_ext.atomic import check_replaceable
from nnunet_ext.errors import UserInputError
from nnunet_ext.synth.base import (REGISTRY, TEST, TRAIN, RawDatasetSpec, dataset_folder_name,
                                   existing_dataset_with_id, generate_cases, write_raw_datasets)

# flags that are shorthands for ``--option NAME=true`` (refused, like any option, by a kind that lacks it)
OPTION_FLAGS = {
    "subtraction": "append a channel SUB = post1 - pre from the raw intensities (as --option subtraction=true)",
    "subregions": "label the tumour's subregions, with nnU-Net regions in dataset.json (as --option subregions=true)",
}

KIND_MODULES = {
    "breast_dce": "nnunet_ext.synth.breast_dce",
    "head_ct_ich": "nnunet_ext.synth.head_ct_ich",
    "ultrasound_2d": "nnunet_ext.synth.ultrasound_2d",
    "mammo_2d": "nnunet_ext.synth.mammo_2d",
    "brain_pairs": "nnunet_ext.synth.brain_pairs",
}


def get_kind(name: str):
    if name not in KIND_MODULES:
        raise UserInputError(f"unknown synth kind '{name}' (choose from {', '.join(KIND_MODULES)})")
    importlib.import_module(KIND_MODULES[name])
    return REGISTRY[name]


def raw_root_from(raw: str | None) -> Path:
    raw = raw or os.environ.get("nnUNet_raw")
    if not raw:
        raise UserInputError("no output folder: set nnUNet_raw (eval \"$(nnunet-ext env)\") or pass --raw DIR")
    return Path(raw)


def synthesize(kind_name: str, dataset_id: int, cases: int, seed: int = 0, test_cases: int = 2,
               raw: str | None = None, overwrite: bool = False, name: str | None = None,
               pre_only_id: int | None = None, labeled_cases: int | None = None,
               options: dict | None = None) -> list[Path]:
    """Python API behind the CLI; returns the written dataset folders."""
    kind = get_kind(kind_name)
    given = dict(options or {})
    options = kind.validate_options(given)  # every option, checked once before anything is generated
    if cases < 1:
        raise UserInputError(f"--cases must be >= 1, got {cases}")
    if test_cases < 0:
        raise UserInputError(f"--test_cases must be >= 0, got {test_cases}")
    raw_root = raw_root_from(raw)
    ids = [dataset_id] + ([pre_only_id] if pre_only_id is not None else [])
    if pre_only_id is not None:
        channel_count = len(kind.channel_names_with(options))
        if channel_count < 2:
            raise UserInputError(f"--pre_only_id needs a multi-channel kind; '{kind_name}' has "
                                 f"{channel_count} channel(s)")
        if pre_only_id == dataset_id:
            raise UserInputError("--pre_only_id must differ from -d")
    if labeled_cases is not None and not 1 <= labeled_cases <= cases:
        raise UserInputError(f"--labeled_cases must be in 1..{cases}, got {labeled_cases}")
    for i in ids:  # refuse before generating anything (checked again when writing)
        clash = existing_dataset_with_id(raw_root, i)
        if clash is not None and not overwrite:
            raise UserInputError(f"dataset id {i} already exists at {clash} (pass --overwrite to replace it)")
        if clash is not None:
            check_replaceable(clash, overwrite, what="dataset")

    name = name or kind.dataset_name
    train = generate_cases(kind, cases, TRAIN, seed, options)
    test = generate_cases(kind, test_cases, TEST, seed, options)
    labels = kind.labels_with(options)
    regions_class_order = kind.regions_class_order_with(options)
    channel_names = kind.channel_names_with(options)
    # the options the user chose (normalised), as a reader of dataset.json would want to repeat the call
    synth_record = {"kind": kind_name, "seed": seed, "cases": cases, "test_cases": test_cases,
                    "options": {k: list(options[k]) if isinstance(options[k], tuple) else options[k] for k in given}}
    if pre_only_id is None:
        # --labeled_cases alone: the cases beyond k keep their images and lose their labels (a semi-supervised pool)
        unlabeled = [identifier for identifier, _ in train[labeled_cases:]] if labeled_cases else []
        if labeled_cases:
            synth_record["labeled_cases"] = labeled_cases
        specs = [RawDatasetSpec(dataset_id, name, channel_names, labels, train, test,
                                extra_json={"synth": synth_record}, unlabeled=unlabeled,
                                regions_class_order=regions_class_order)]
    else:
        # The DKM pair: the DCE dataset (all channels, every case) trains the diffusion module, which uses no
        # labels; the pre-contrast-only copy keeps the first k cases with their labels. Cases beyond k are
        # unlabelled in the scenario, so the DCE dataset withholds their labels too.
        k = labeled_cases or cases
        pre_name = f"{name}PreOnly"
        specs = [
            RawDatasetSpec(dataset_id, name, channel_names, labels, train, test,
                           extra_json={"synth": synth_record, "pre_only_dataset": dataset_folder_name(pre_only_id,
                                                                                                       pre_name)},
                           unlabeled=[identifier for identifier, _ in train[k:]],
                           regions_class_order=regions_class_order),
            RawDatasetSpec(pre_only_id, pre_name, channel_names, labels, train[:k], test, channels=[0],
                           extra_json={"paired_dce_dataset": dataset_folder_name(dataset_id, name),
                                       "synth": {**synth_record, "labeled_cases": k, "channels": [0]}},
                           regions_class_order=regions_class_order),
        ]
    return write_raw_datasets(raw_root, specs, overwrite=overwrite)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", help=f"phantom kind: {', '.join(KIND_MODULES)}")
    p.add_argument("--list_options", action="store_true",
                   help="print the kind's --option keys (type, allowed values, default) and exit")
    # required unless --list_options; checked in run() so that listing needs no id
    p.add_argument("-d", dest="dataset_id", type=int, default=None, help="nnU-Net dataset id (1..999), required")
    p.add_argument("--cases", type=int, default=8, help="number of training cases (imagesTr/labelsTr)")
    p.add_argument("--test_cases", type=int, default=2, help="number of test cases (imagesTs/labelsTs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="dataset name suffix (default: per kind)")
    p.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset with the same id")
    p.add_argument("--pre_only_id", type=int, default=None,
                   help="also write a copy with channel 0 only (pre-contrast) under this id, same case ids")
    p.add_argument("--labeled_cases", type=int, default=None,
                   help="how many training cases keep their labels (default all); the others are written with an "
                        "all-background placeholder label and listed in dataset.json unlabeled_cases (with "
                        "--pre_only_id: how many cases the pre-only copy keeps)")
    p.add_argument("--shape", type=int, nargs="+", default=None, help="image shape (z y x, or y x for 2D kinds)")
    for flag, text in OPTION_FLAGS.items():
        p.add_argument(f"--{flag}", action="store_true", help=text)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="kind-specific option, repeatable; VALUE is parsed as JSON, else taken as a string "
                        "(e.g. --option scene=cardiac, --option snr=[20,40]); list a kind's options with "
                        "'nnunet-ext synth KIND --list_options'")


def parse_options(pairs: list[str]) -> dict:
    import json

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserInputError(f"--option expects KEY=VALUE, got '{pair}'")
        if key in options:
            raise UserInputError(f"--option {key} is given twice")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def run(args: argparse.Namespace) -> int:
    if args.list_options:
        from nnunet_ext.synth.options import describe

        kind = get_kind(args.kind)
        print(describe(kind.name, kind.option_specs))
        return 0
    if args.dataset_id is None:
        raise UserInputError("-d DATASET_ID is required")
    options = parse_options(args.option)
    if args.shape:
        if "shape" in options:
            raise UserInputError("shape is given twice (--shape and --option shape=...); use one")
        options["shape"] = list(args.shape)
    for flag in OPTION_FLAGS:
        if getattr(args, flag):
            if flag in options:
                raise UserInputError(f"{flag} is given twice (--{flag} and --option {flag}=...); use one")
            options[flag] = True  # a kind without this option refuses it when the options are validated
    options = options or None
    folders = synthesize(args.kind, args.dataset_id, args.cases, args.seed, args.test_cases, args.raw,
                         args.overwrite, args.name, args.pre_only_id, args.labeled_cases, options)
    for f in folders:
        print(f"wrote {f}")
    return 0
