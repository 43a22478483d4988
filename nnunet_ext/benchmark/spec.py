"""The benchmark spec: a YAML file naming datasets, rows, folds, seeds, metrics, a baseline and the table layout.

The schema is documented for users in ``benchmarks/README.md``. :func:`load_spec` checks everything a run needs
before anything is written; a problem raises :class:`~nnunet_ext.errors.UserInputError` with one line naming the
key path (``rows[2].trainer``, ``datasets[0].cases``, ``summary.dkm_f34_dice.row``).

Rows refer to datasets by nnU-Net dataset id (a synth entry with ``pre_only_id`` declares two ids) and to each other
by label (``requires``, ``baseline``, ``summary``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnunet_ext.errors import UserInputError

#: Metrics of ``nnunet-ext evaluate`` the table can show.
METRICS = ("Dice", "IoU", "PPV", "SEN", "HD95", "ASD")
#: Metrics of every training job (seconds of ``nnUNetv2_train`` / ``nnUNetv2_predict``) and of every command job.
TIMING_METRICS = ("train_seconds", "predict_seconds", "seconds")
#: ``summary`` statistics of one row and metric (see :mod:`nnunet_ext.benchmark.report`).
ROW_STATS = ("mean", "std", "median", "ci", "seed_mean", "seed_std", "n_cases", "n_undefined", "diff_mean",
             "paired_ci", "wilcoxon_p", "value")
#: ``summary`` statistics of the whole study.
STUDY_STATS = ("n_seeds", "n_jobs", "n_finished", "n_failed")
ROW_KINDS = ("train", "command")
DEVICES = ("cpu", "cuda", "mps")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Variables a row cannot set through ``env``: the harness owns them (schedule and seed have their own keys).
RESERVED_ENV = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_ext_seed", "nnUNet_ext_epochs", "nnUNet_ext_iters",
                "nnUNet_ext_val_iters")


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of ``datasets``: where the raw dataset comes from and how it is planned."""

    path: str                         # key path for messages, e.g. "datasets[0]"
    source: str                       # "synth", "convert", "derive" or "existing"
    id: int
    pre_only_id: int | None
    planner: str
    configurations: tuple[str, ...]
    synth: dict | None = None         # synthesize()'s arguments (kind, cases, test_cases, seed, ...)
    convert: str | None = None        # converter name for ``nnunet-ext convert NAME``
    args: tuple[str, ...] = ()        # converter arguments
    raw: str | None = None            # existing: the nnU-Net raw folder holding the dataset
    test_images: str | None = None
    test_labels: str | None = None
    definition: dict = field(default_factory=dict)  # the mapping as written (part of job keys)
    command: str | None = None        # derive: the command that writes dataset ``id`` from datasets ``inputs``
    inputs: tuple[int, ...] = ()      # derive: the datasets (earlier in the spec) the command reads

    @property
    def ids(self) -> tuple[int, ...]:
        return (self.id,) if self.pre_only_id is None else (self.id, self.pre_only_id)


@dataclass(frozen=True)
class RowSpec:
    """One entry of ``rows``: a training row (train -> predict -> evaluate) or a command row."""

    path: str
    label: str
    kind: str
    folds: tuple
    seeds: tuple[int, ...]
    requires: tuple[str, ...]
    env: dict
    ensemble: bool
    definition: dict                  # the mapping as written, with the study defaults it inherits (job keys)
    trainer: str | None = None
    dataset: int | None = None
    configuration: str = "3d_fullres"
    plans: str | None = None
    schedule: dict = field(default_factory=dict)
    test_images: str | None = None
    test_labels: str | None = None
    command: str | None = None
    setup: str | None = None
    teardown: str | None = None
    cwd: str | None = None
    extract: dict = field(default_factory=dict)
    json: str | None = None
    timeout_min: float | None = None
    predict: bool = True              # train rows: False = train only (e.g. a prerequisite model such as the DKM DM)
    evaluate: str = "test"            # train rows: "test" (predict the test images) or "validation" (the fold's
                                      # nnU-Net validation predictions vs labelsTr: cross-validation) or "none"
                                      # (predict the test images for a later row, e.g. a merge; no metrics)
    hc18_csv: str | None = None       # train rows: HC18 CSV -> per-case HC_abs_diff_mm and HD95_px
    predict_args: tuple[str, ...] = ()  # train rows: extra nnUNetv2_predict arguments (e.g. --save_probabilities)
    regions: str | None = None        # train rows: evaluate regions (``nnunet-ext evaluate --regions``), not labels


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    datasets: tuple[DatasetSpec, ...]
    rows: tuple[RowSpec, ...]
    seeds: tuple[int, ...]
    metrics: tuple[str, ...]
    labels: tuple[int, ...] | None
    baseline: str | None
    table: dict
    summary: dict
    bootstrap: dict
    slurm: dict
    device: str | None
    deterministic: bool
    source: dict                      # the whole YAML mapping (summary ``spec:`` look-ups)
    file: str | None = None

    def row(self, label: str) -> RowSpec:
        return next(r for r in self.rows if r.label == label)

    def dataset(self, dataset_id: int) -> DatasetSpec:
        return next(d for d in self.datasets if dataset_id in d.ids)


# --- small typed readers: each raises a one-line UserInputError naming the key path -------------------------------

def _type_name(expected: tuple[type, ...]) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping"}
    return " or ".join(names.get(t, t.__name__) for t in expected)


def _is(value: Any, expected: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in expected
    if float in expected and isinstance(value, int):
        return True
    return isinstance(value, expected)


def _get(mapping: dict, key: str, path: str, expected: tuple[type, ...], required: bool = False,
         default: Any = None) -> Any:
    if key not in mapping or mapping[key] is None:
        if required:
            raise UserInputError(f"{path}.{key} is missing" if path else f"{key} is missing")
        return default
    value = mapping[key]
    if not _is(value, expected):
        where = f"{path}.{key}" if path else key
        raise UserInputError(f"{where} must be {_type_name(expected)}, got {type(value).__name__} {value!r}")
    return value


def _check_keys(mapping: Any, path: str, allowed: set[str], what: str) -> dict:
    if not isinstance(mapping, dict):
        raise UserInputError(f"{path or 'the spec'} must be a mapping ({what}), got {type(mapping).__name__}")
    for key in mapping:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise UserInputError(f"{where}: unknown key (allowed: {', '.join(sorted(allowed))})")
    return mapping


def _int_list(value: Any, path: str, allow_all: bool = False) -> tuple:
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(value, list) else path
        if allow_all and item == "all":
            out.append("all")
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            out.append(item)
        else:
            raise UserInputError(f"{where} must be a non-negative integer{' or all' if allow_all else ''}, "
                                 f"got {item!r}")
    if not out:
        raise UserInputError(f"{path} must not be empty")
    if len(set(map(str, out))) != len(out):
        raise UserInputError(f"{path} lists a value twice: {value!r}")
    return tuple(out)


def _str_list(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                              for v in value):
        raise UserInputError(f"{path} must be a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def _env(value: Any, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserInputError(f"{path} must be a mapping of environment variables, got {type(value).__name__}")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise UserInputError(f"{path}.{key}: not a valid environment variable name")
        if key in RESERVED_ENV:
            raise UserInputError(f"{path}.{key}: set by the harness (use seeds/schedule/datasets instead)")
        if not isinstance(item, (str, int, float)) or isinstance(item, bool):
            raise UserInputError(f"{path}.{key} must be a string or number, got {item!r}")
        out[key] = str(item)
    return out


_SCHEDULE_KEYS = {"epochs", "iterations", "val_iterations"}


def _schedule(value: Any, path: str) -> dict:
    if value is None:
        return {}
    _check_keys(value, path, _SCHEDULE_KEYS, "epochs, iterations, val_iterations")
    out = {}
    for key in sorted(value):
        item = _get(value, key, path, (int,))
        if item is not None:
            if item < 1:
                raise UserInputError(f"{path}.{key} must be >= 1, got {item}")
            out[key] = item
    return out


# --- sections ------------------------------------------------------------------------------------------------------

_DATASET_COMMON = {"planner", "configurations", "test_images", "test_labels"}
_SYNTH_KEYS = {"synth", "id", "cases", "test_cases", "seed", "shape", "options", "pre_only_id", "labeled_cases",
               "name"} | _DATASET_COMMON
_CONVERT_KEYS = {"convert", "id", "pre_only_id", "args"} | _DATASET_COMMON
_EXISTING_KEYS = {"existing", "raw"} | _DATASET_COMMON
_DERIVE_KEYS = {"derive", "id", "from"} | _DATASET_COMMON


def _dataset(entry: Any, path: str) -> DatasetSpec:
    if not isinstance(entry, dict):
        raise UserInputError(f"{path} must be a mapping, got {type(entry).__name__}")
    sources = [s for s in ("synth", "convert", "derive", "existing") if s in entry]
    if len(sources) != 1:
        raise UserInputError(f"{path} needs exactly one of synth, convert, derive, existing (got "
                             f"{', '.join(sources) or 'none'})")
    source = sources[0]
    allowed = {"synth": _SYNTH_KEYS, "convert": _CONVERT_KEYS, "derive": _DERIVE_KEYS,
               "existing": _EXISTING_KEYS}[source]
    _check_keys(entry, path, allowed, f"a {source} dataset")
    planner = _get(entry, "planner", path, (str,), default="CPUPlanner")
    configurations = _get(entry, "configurations", path, (list, str), default=["3d_fullres"])
    configurations = _str_list(configurations if isinstance(configurations, list) else [configurations],
                               f"{path}.configurations")
    common = dict(planner=planner, configurations=configurations,
                  test_images=_get(entry, "test_images", path, (str,)),
                  test_labels=_get(entry, "test_labels", path, (str,)), definition=dict(entry))
    if source == "existing":
        dataset_id = _get(entry, "existing", path, (int,), required=True)
        _check_id(dataset_id, f"{path}.existing")
        return DatasetSpec(path, source, dataset_id, None, raw=_get(entry, "raw", path, (str,)), **common)
    dataset_id = _get(entry, "id", path, (int,), required=True)
    _check_id(dataset_id, f"{path}.id")
    pre_only_id = _get(entry, "pre_only_id", path, (int,))
    if pre_only_id is not None:
        _check_id(pre_only_id, f"{path}.pre_only_id")
        if pre_only_id == dataset_id:
            raise UserInputError(f"{path}.pre_only_id must differ from {path}.id")
    if source == "derive":
        command = _get(entry, "derive", path, (str,), required=True)
        if "{id}" not in command:
            raise UserInputError(f"{path}.derive must write dataset {{id}} (the command names no {{id}})")
        inputs = _get(entry, "from", path, (list,), default=[])
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in inputs):
            raise UserInputError(f"{path}.from must list dataset ids, got {inputs!r}")
        return DatasetSpec(path, source, dataset_id, None, command=command, inputs=tuple(inputs), **common)
    if source == "convert":
        name = _get(entry, "convert", path, (str,), required=True)
        args = _str_list(_get(entry, "args", path, (list,), default=[]), f"{path}.args")
        return DatasetSpec(path, source, dataset_id, pre_only_id, convert=name, args=args, **common)
    from nnunet_ext.synth.cli import KIND_MODULES

    kind = _get(entry, "synth", path, (str,), required=True)
    if kind not in KIND_MODULES:
        raise UserInputError(f"{path}.synth: unknown kind '{kind}' (choose from {', '.join(KIND_MODULES)})")
    cases = _get(entry, "cases", path, (int,), required=True)
    if cases < 1:
        raise UserInputError(f"{path}.cases must be >= 1, got {cases}")
    test_cases = _get(entry, "test_cases", path, (int,), default=2)
    if test_cases < 0:
        raise UserInputError(f"{path}.test_cases must be >= 0, got {test_cases}")
    labeled = _get(entry, "labeled_cases", path, (int,))
    if labeled is not None and not 1 <= labeled <= cases:
        raise UserInputError(f"{path}.labeled_cases must be in 1..{cases}, got {labeled}")
    options = dict(_get(entry, "options", path, (dict,), default={}))
    shape = _get(entry, "shape", path, (list,))
    if shape is not None:
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise UserInputError(f"{path}.shape must be a list of positive integers, got {shape!r}")
        if "shape" in options:
            raise UserInputError(f"{path}.shape is given twice (shape and options.shape)")
        options["shape"] = list(shape)
    synth = {"kind": kind, "cases": cases, "test_cases": test_cases,
             "seed": _get(entry, "seed", path, (int,), default=0), "options": options or None,
             "pre_only_id": pre_only_id, "labeled_cases": labeled, "name": _get(entry, "name", path, (str,))}
    return DatasetSpec(path, source, dataset_id, pre_only_id, synth=synth, **common)


def _check_id(value: int, path: str) -> None:
    if not 1 <= value <= 999:
        raise UserInputError(f"{path} must be an nnU-Net dataset id in 1..999, got {value}")


_ROW_COMMON = {"label", "kind", "folds", "seeds", "requires", "env"}
_TRAIN_KEYS = _ROW_COMMON | {"trainer", "dataset", "configuration", "plans", "schedule", "ensemble", "test_images",
                             "test_labels", "predict", "evaluate", "hc18_csv", "predict_args", "regions"}
EVALUATE_SETS = ("test", "validation", "none")
_COMMAND_KEYS = _ROW_COMMON | {"command", "setup", "teardown", "cwd", "extract", "json", "timeout_min"}


def _row(entry: Any, path: str, defaults: dict) -> RowSpec:
    if not isinstance(entry, dict):
        raise UserInputError(f"{path} must be a mapping, got {type(entry).__name__}")
    kind = _get(entry, "kind", path, (str,), default="train")
    if kind not in ROW_KINDS:
        raise UserInputError(f"{path}.kind must be one of {', '.join(ROW_KINDS)}, got '{kind}'")
    _check_keys(entry, path, _TRAIN_KEYS if kind == "train" else _COMMAND_KEYS, f"a {kind} row")
    label = _get(entry, "label", path, (str,), required=True)
    if not label.strip() or "/" in label:
        raise UserInputError(f"{path}.label must be a non-empty string without '/', got {label!r}")
    seeds = _int_list(entry["seeds"], f"{path}.seeds") if entry.get("seeds") is not None else defaults["seeds"]
    requires = entry.get("requires") or []
    requires = _str_list(requires if isinstance(requires, list) else [requires], f"{path}.requires")
    env = {**defaults["env"], **_env(entry.get("env"), f"{path}.env")}
    definition = {k: v for k, v in entry.items() if k != "label"}
    common = dict(path=path, label=label, kind=kind, seeds=seeds, requires=requires, env=env)
    if kind == "command":
        command = _get(entry, "command", path, (str,), required=True)
        extract = _get(entry, "extract", path, (dict,), default={})
        for name, pattern in extract.items():
            if not isinstance(pattern, str):
                raise UserInputError(f"{path}.extract.{name} must be a regular expression string")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise UserInputError(f"{path}.extract.{name}: not a regular expression ({exc})") from None
            if compiled.groups < 1:
                raise UserInputError(f"{path}.extract.{name} needs one group around the number, e.g. 'x=([0-9.]+)'")
        timeout = _get(entry, "timeout_min", path, (float,))
        if timeout is not None and timeout <= 0:
            raise UserInputError(f"{path}.timeout_min must be > 0, got {timeout}")
        if entry.get("folds") is not None:
            raise UserInputError(f"{path}.folds: command rows have no folds")
        definition = {**definition, "env": env, "seeds": list(seeds)}
        return RowSpec(folds=(None,), ensemble=False, definition=definition, command=command,
                       setup=_get(entry, "setup", path, (str,)), teardown=_get(entry, "teardown", path, (str,)),
                       cwd=_get(entry, "cwd", path, (str,)), extract=dict(extract),
                       json=_get(entry, "json", path, (str,)), timeout_min=timeout, **common)
    trainer = _get(entry, "trainer", path, (str,), required=True)
    dataset = _get(entry, "dataset", path, (int,), required=True)
    folds = _int_list(entry["folds"], f"{path}.folds", allow_all=True) if entry.get("folds") is not None \
        else defaults["folds"]
    for i, fold in enumerate(folds):
        if fold != "all" and fold > 4:
            raise UserInputError(f"{path}.folds: fold {fold} does not exist (nnU-Net's folds are 0..4 and all)")
    schedule = {**defaults["schedule"], **_schedule(entry.get("schedule"), f"{path}.schedule")}
    ensemble = _get(entry, "ensemble", path, (bool,), default=defaults["ensemble"])
    numeric = [f for f in folds if f != "all"]
    predict = _get(entry, "predict", path, (bool,), default=True)
    if entry.get("ensemble") and not predict:
        raise UserInputError(f"{path}.ensemble needs predictions; the row has predict: false")
    ensemble = ensemble and predict
    evaluate = _get(entry, "evaluate", path, (str,), default="test")
    if evaluate not in EVALUATE_SETS:
        raise UserInputError(f"{path}.evaluate must be one of {', '.join(EVALUATE_SETS)}, got '{evaluate}'")
    if evaluate == "validation":
        if "all" in folds:
            raise UserInputError(f"{path}.evaluate: validation needs numbered folds (fold all has no validation "
                                 f"cases)")
        if entry.get("ensemble"):
            raise UserInputError(f"{path}.evaluate: validation rows are cross-validated, not ensembled")
        ensemble = False
    if evaluate == "none":
        if entry.get("ensemble"):
            raise UserInputError(f"{path}.evaluate: none has no metrics to ensemble")
        ensemble = False
    if entry.get("ensemble") and len(numeric) < 2:
        raise UserInputError(f"{path}.ensemble needs at least two numbered folds, the row has {list(folds)}")
    regions = _get(entry, "regions", path, (str,))
    if regions is not None:
        from nnunet_ext.metrics.evaluate import parse_regions

        try:
            parse_regions(regions)
        except UserInputError as exc:
            raise UserInputError(f"{path}.regions: {exc}") from None
    definition = {**definition, "env": env, "schedule": schedule, "folds": [str(f) for f in folds],
                  "configuration": _get(entry, "configuration", path, (str,), default="3d_fullres")}
    return RowSpec(folds=folds, ensemble=ensemble and len(numeric) >= 2, definition=definition, trainer=trainer,
                   dataset=dataset, configuration=definition["configuration"], plans=_get(entry, "plans", path, (str,)),
                   schedule=schedule, test_images=_get(entry, "test_images", path, (str,)),
                   test_labels=_get(entry, "test_labels", path, (str,)), predict=predict, evaluate=evaluate,
                   hc18_csv=_get(entry, "hc18_csv", path, (str,)),
                   predict_args=tuple(_str_list(entry.get("predict_args") or [], f"{path}.predict_args")),
                   regions=regions, **common)


def _row_regions(data: dict, label: str) -> list[str]:
    """Region names of the row labelled ``label`` (its ``regions:``), [] for rows evaluated by labels."""
    from nnunet_ext.metrics.evaluate import parse_regions

    for entry in data.get("rows") or []:
        if isinstance(entry, dict) and entry.get("label") == label and isinstance(entry.get("regions"), str):
            return list(parse_regions(entry["regions"]))
    return []


_TOP_KEYS = {"name", "description", "datasets", "rows", "folds", "seeds", "metrics", "labels", "baseline",
             "ensemble", "table", "summary", "bootstrap", "schedule", "env", "slurm", "device", "deterministic"}
_TABLE_KEYS = {"per_class", "groups", "rows", "timings", "label_names"}
_SLURM_KEYS = {"partition", "time_min", "gpus_per_node", "cpus_per_task", "mem_gb", "array_parallelism",
               "additional"}
_BOOTSTRAP_KEYS = {"n_resamples", "confidence", "seed"}
_SUMMARY_KEYS = {"row", "metric", "stat", "label", "vs", "spec", "command", "target"}


def parse_spec(data: Any, file: str | None = None) -> Spec:
    """Validate a spec mapping (already parsed from YAML) and return it as a :class:`Spec`."""
    _check_keys(data, "", _TOP_KEYS, "the benchmark spec")
    name = _get(data, "name", "", (str,), required=True)
    if not _NAME.match(name):
        raise UserInputError(f"name must be letters, digits, '_', '.', '-' (it names the results files), got {name!r}")
    seeds = _int_list(data["seeds"], "seeds") if data.get("seeds") is not None else (0,)
    folds = _int_list(data["folds"], "folds", allow_all=True) if data.get("folds") is not None else (0,)
    device = _get(data, "device", "", (str,))
    if device is not None and device not in DEVICES:
        raise UserInputError(f"device must be one of {', '.join(DEVICES)}, got '{device}'")
    metrics = _str_list(_get(data, "metrics", "", (list,), default=["Dice"]), "metrics")
    for i, metric in enumerate(metrics):
        if metric not in METRICS:
            raise UserInputError(f"metrics[{i}]: unknown metric '{metric}' (choose from {', '.join(METRICS)})")
    labels = _get(data, "labels", "", (list,))
    labels = tuple(int(v) for v in _int_list(labels, "labels")) if labels is not None else None
    if labels is not None and 0 in labels:
        raise UserInputError("labels: 0 is the background; list foreground labels")

    datasets_raw = _get(data, "datasets", "", (list,), default=[])
    datasets = tuple(_dataset(entry, f"datasets[{i}]") for i, entry in enumerate(datasets_raw))
    seen: dict[int, str] = {}
    for d in datasets:
        missing = [i for i in d.inputs if i not in seen]
        if missing:  # a derived dataset reads datasets written before it
            raise UserInputError(f"{d.path}.from: dataset(s) {', '.join(map(str, missing))} must be declared "
                                 "earlier in datasets")
        for i in d.ids:
            if i in seen:
                raise UserInputError(f"{d.path}: dataset id {i} is also declared by {seen[i]}")
            seen[i] = d.path

    defaults = {"seeds": seeds, "folds": folds, "env": _env(data.get("env"), "env"),
                "schedule": _schedule(data.get("schedule"), "schedule"),
                "ensemble": _get(data, "ensemble", "", (bool,), default=False)}
    rows_raw = _get(data, "rows", "", (list,), required=True)
    if not rows_raw:
        raise UserInputError("rows must list at least one row")
    rows = tuple(_row(entry, f"rows[{i}]", defaults) for i, entry in enumerate(rows_raw))
    labels_seen: dict[str, str] = {}
    for row in rows:
        if row.label in labels_seen or row.label.endswith(ENSEMBLE_SUFFIX):
            raise UserInputError(f"{row.path}.label '{row.label}' is used twice" if row.label in labels_seen else
                                 f"{row.path}.label must not end with '{ENSEMBLE_SUFFIX}' (ensemble rows are named "
                                 f"so)")
        labels_seen[row.label] = row.path
    by_label = {r.label: r for r in rows}
    for row in rows:
        if row.kind == "train" and row.dataset not in seen:
            raise UserInputError(f"{row.path}.dataset: no dataset with id {row.dataset} in datasets "
                                 f"(declared: {', '.join(map(str, sorted(seen))) or 'none'})")
        if row.kind == "train":
            planned = next(d for d in datasets if row.dataset in d.ids).configurations
            if row.configuration not in planned:
                raise UserInputError(f"{row.path}.configuration: dataset {row.dataset} is planned for "
                                     f"{', '.join(planned)} only, not '{row.configuration}'")
        for j, required in enumerate(row.requires):
            if required not in by_label:
                raise UserInputError(f"{row.path}.requires[{j}]: no row labelled '{required}'")
            if required == row.label:
                raise UserInputError(f"{row.path}.requires[{j}]: a row cannot require itself")
            other = by_label[required]
            missing = [s for s in row.seeds if s not in other.seeds]
            if missing:
                raise UserInputError(f"{row.path}.requires[{j}]: '{required}' does not run seed(s) {missing}")
            if len(other.folds) > 1 and row.kind == "train" and not set(row.folds) <= set(other.folds):
                raise UserInputError(f"{row.path}.requires[{j}]: '{required}' has folds {list(other.folds)}; a "
                                     f"required row needs one fold or the same folds")
    _check_acyclic(rows)

    all_labels = list(by_label) + [r.label + ENSEMBLE_SUFFIX for r in rows if r.ensemble]
    baseline = _get(data, "baseline", "", (str,))
    if baseline is not None and baseline not in all_labels:
        raise UserInputError(f"baseline: no row labelled '{baseline}' (rows: {', '.join(all_labels)})")
    table = _check_keys(data.get("table") or {}, "table", _TABLE_KEYS, "the table layout")
    _check_table(table, metrics, all_labels)
    bootstrap = _check_keys(data.get("bootstrap") or {}, "bootstrap", _BOOTSTRAP_KEYS, "bootstrap settings")
    bootstrap = {"n_resamples": _get(bootstrap, "n_resamples", "bootstrap", (int,), default=10000),
                 "confidence": _get(bootstrap, "confidence", "bootstrap", (float,), default=0.95),
                 "seed": _get(bootstrap, "seed", "bootstrap", (int,), default=0)}
    if bootstrap["n_resamples"] < 100:
        raise UserInputError(f"bootstrap.n_resamples must be >= 100, got {bootstrap['n_resamples']}")
    if not 0 < bootstrap["confidence"] < 1:
        raise UserInputError(f"bootstrap.confidence must be in (0, 1), got {bootstrap['confidence']}")
    slurm = _check_keys(data.get("slurm") or {}, "slurm", _SLURM_KEYS, "SLURM resources")
    for key in _SLURM_KEYS - {"partition", "additional"}:
        _get(slurm, key, "slurm", (int,) if key != "mem_gb" else (float,))
    _get(slurm, "partition", "slurm", (str,))
    _get(slurm, "additional", "slurm", (dict,))
    summary = _check_summary(data.get("summary") or {}, all_labels, baseline, data)
    return Spec(name=name, description=_get(data, "description", "", (str,), default=""), datasets=datasets,
                rows=rows, seeds=seeds, metrics=metrics, labels=labels, baseline=baseline, table=dict(table),
                summary=summary, bootstrap=bootstrap, slurm=dict(slurm), device=device,
                deterministic=_get(data, "deterministic", "", (bool,), default=True), source=data, file=file)


#: Label suffix of the fold-ensemble row derived from a training row with ``ensemble: true``.
ENSEMBLE_SUFFIX = " (ensemble)"


def _check_acyclic(rows: tuple[RowSpec, ...]) -> None:
    by_label = {r.label: r for r in rows}
    state: dict[str, int] = {}

    def visit(label: str, trail: list[str]) -> None:
        if state.get(label) == 2:
            return
        if state.get(label) == 1:
            raise UserInputError(f"{by_label[trail[0]].path}.requires: cycle {' -> '.join(trail + [label])}")
        state[label] = 1
        for required in by_label[label].requires:
            visit(required, trail + [label])
        state[label] = 2

    for row in rows:
        visit(row.label, [])


def _check_table(table: dict, metrics: tuple[str, ...], labels: list[str]) -> None:
    _get(table, "per_class", "table", (bool,))
    _get(table, "timings", "table", (bool,))
    names = _get(table, "label_names", "table", (dict,), default={})
    for key, value in names.items():
        if not isinstance(value, str):
            raise UserInputError(f"table.label_names.{key} must be a string")
    order = _get(table, "rows", "table", (list,), default=[])
    for i, label in enumerate(order):
        if label not in labels:
            raise UserInputError(f"table.rows[{i}]: no row labelled '{label}'")
    for i, group in enumerate(_get(table, "groups", "table", (list,), default=[])):
        path = f"table.groups[{i}]"
        _check_keys(group, path, {"title", "metrics"}, "a column group")
        _get(group, "title", path, (str,), required=True)
        for j, metric in enumerate(_str_list(_get(group, "metrics", path, (list,), required=True),
                                             f"{path}.metrics")):
            if metric not in metrics and metric not in TIMING_METRICS:
                raise UserInputError(f"{path}.metrics[{j}]: '{metric}' is not in metrics ({', '.join(metrics)})")


def _check_summary(summary: dict, labels: list[str], baseline: str | None, data: dict) -> dict:
    if not isinstance(summary, dict):
        raise UserInputError(f"summary must be a mapping of result keys to figures, got {type(summary).__name__}")
    out = {}
    for key in summary:
        parts = str(key).split(".")
        if not all(parts):
            raise UserInputError(f"summary.{key}: empty part in a dotted key (dots nest result objects: a.b)")
        for i in range(1, len(parts)):
            if ".".join(parts[:i]) in summary:
                raise UserInputError(f"summary.{key}: '{'.'.join(parts[:i])}' is both a figure and an object")
    for key, entry in summary.items():
        path = f"summary.{key}"
        if key == "commit" or str(key).startswith("commit."):
            raise UserInputError(f"{path}: 'commit' is always written by the harness")
        _check_keys(entry, path, _SUMMARY_KEYS, "a figure: {row, metric, stat}, {spec: path}, {command: CMD}, "
                                                          "{target: [[KEY, OP, NUMBER], ...]} or {stat: n_seeds}")
        if "command" in entry:
            if len(entry) != 1:
                raise UserInputError(f"{path}: 'command' stands alone (its output, read when the report is written)")
            _get(entry, "command", path, (str,), required=True)
            out[key] = dict(entry)
            continue
        if "target" in entry:
            if len(entry) != 1:
                raise UserInputError(f"{path}: 'target' stands alone (conditions on other summary figures)")
            conditions = _get(entry, "target", path, (list,), required=True)
            for i, condition in enumerate(conditions):
                if not (isinstance(condition, list) and len(condition) == 3 and condition[1] in TARGET_OPERATORS
                        and isinstance(condition[2], (int, float)) and not isinstance(condition[2], bool)):
                    raise UserInputError(f"{path}.target[{i}] must be [KEY, OP, NUMBER] with OP one of "
                                         f"{', '.join(TARGET_OPERATORS)}, got {condition!r}")
                figure = TARGET_KEY.fullmatch(str(condition[0]))
                if not figure or figure.group(1) not in list(summary)[:list(summary).index(key)]:
                    raise UserInputError(f"{path}.target[{i}]: '{condition[0]}' is no summary figure listed before "
                                         f"{key} (KEY or KEY[INDEX])")
            out[key] = {"target": [list(c) for c in conditions]}
            continue
        if "spec" in entry:
            if len(entry) != 1:
                raise UserInputError(f"{path}: 'spec' stands alone (a value read from the spec)")
            lookup_spec(data, _get(entry, "spec", path, (str,), required=True), f"{path}.spec")
            out[key] = dict(entry)
            continue
        stat = _get(entry, "stat", path, (str,), default="mean")
        if "row" not in entry:
            if stat not in STUDY_STATS:
                raise UserInputError(f"{path}.row is missing (study-wide stats: {', '.join(STUDY_STATS)})")
            out[key] = {"stat": stat}
            continue
        row = _get(entry, "row", path, (str,), required=True)
        if row not in labels:
            raise UserInputError(f"{path}.row: no row labelled '{row}'")
        if stat not in ROW_STATS:
            raise UserInputError(f"{path}.stat: unknown stat '{stat}' (choose from {', '.join(ROW_STATS)})")
        metric = _get(entry, "metric", path, (str,), required=True)
        vs = _get(entry, "vs", path, (str,), default=baseline)
        if stat in ("diff_mean", "paired_ci", "wilcoxon_p"):
            if vs is None:
                raise UserInputError(f"{path}: stat '{stat}' needs a baseline (set baseline or {path}.vs)")
            if vs not in labels:
                raise UserInputError(f"{path}.vs: no row labelled '{vs}'")
        label = entry.get("label")
        if label is not None and not (isinstance(label, int) and not isinstance(label, bool)) and label != "mean" \
                and not (isinstance(label, str) and label in _row_regions(data, row)):
            raise UserInputError(f"{path}.label must be a label value (integer), 'mean' or a region of the row's "
                                 f"regions, got {label!r}")
        out[key] = {"row": row, "metric": metric, "stat": stat, "vs": vs,
                    "label": str(label) if label is not None else None}
    return out


#: comparisons of a summary ``target`` condition ``[KEY, OP, NUMBER]``
TARGET_OPERATORS = (">=", ">", "<=", "<")
TARGET_KEY = re.compile(r"([^\[\]]+)(?:\[(\d+)\])?")


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def lookup_spec(data: Any, path: str, where: str = "spec") -> Any:
    """Value at a key path such as ``datasets[0].cases`` in the spec mapping (UserInputError if absent)."""
    value = data
    for name, index in _PATH_PART.findall(path):
        try:
            value = value[int(index)] if index else value[name]
        except (KeyError, IndexError, TypeError):
            raise UserInputError(f"{where}: the spec has no value at '{path}'") from None
    return value


def load_spec(path: str | Path) -> Spec:
    """Read and validate a YAML spec file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"spec file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserInputError(f"{path}:{where}: not valid YAML ({problem})") from None
    try:
        return parse_spec(data, str(path))
    except UserInputError as exc:
        raise UserInputError(f"{path}: {exc}") from None
