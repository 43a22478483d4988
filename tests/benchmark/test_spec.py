"""Spec validation: every problem is one line naming the key path; the committed specs are valid."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from nnunet_ext.benchmark.spec import ENSEMBLE_SUFFIX, load_spec, lookup_spec, parse_spec
from nnunet_ext.errors import UserInputError

from .conftest import write_spec

SPECS = Path(__file__).resolve().parents[2] / "benchmarks" / "specs"

BASE = {
    "name": "t",
    "datasets": [{"synth": "breast_dce", "id": 601, "cases": 5, "test_cases": 2, "shape": [16, 32, 32],
                  "pre_only_id": 602, "labeled_cases": 3}],
    "folds": [0, 1],
    "seeds": [0, 1],
    "metrics": ["Dice", "HD95"],
    "baseline": "A",
    "rows": [
        {"label": "A", "trainer": "TinyTrainer", "dataset": 601},
        {"label": "B", "trainer": "TinyTrainer", "dataset": 602, "ensemble": True, "requires": ["C"]},
        {"label": "C", "kind": "command", "command": "echo x=1", "extract": {"x": "x=(\\d)"}},
    ],
    "summary": {"a_dice": {"row": "A", "metric": "Dice"},
                "b_minus_a": {"row": "B", "metric": "Dice", "stat": "paired_ci"},
                "n": {"stat": "n_seeds"}, "cases": {"spec": "datasets[0].cases"}},
}


def _set(data: dict, path: str, value) -> dict:
    """Copy of ``data`` with the value at a key path set (``_delete`` removes it)."""
    data = copy.deepcopy(data)
    parts = re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)
    target = data
    for name, index in parts[:-1]:
        target = target[int(index)] if index else target[name]
    name, index = parts[-1]
    key = int(index) if index else name
    if value == "_delete":
        del target[key]
    else:
        target[key] = value
    return data


def test_base_spec_is_valid():
    spec = parse_spec(copy.deepcopy(BASE))
    assert [r.label for r in spec.rows] == ["A", "B", "C"]
    assert spec.row("B").ensemble and not spec.row("A").ensemble
    assert spec.row("C").folds == (None,) and spec.row("A").folds == (0, 1)
    assert spec.dataset(602).id == 601 and spec.dataset(601).ids == (601, 602)
    assert spec.summary["b_minus_a"]["vs"] == "A"


@pytest.mark.parametrize("path, value, message", [
    ("colour", "red", r"^colour: unknown key"),
    ("name", "_delete", r"^name is missing"),
    ("name", "a b", r"^name must be letters"),
    ("seeds", [0, "x"], r"^seeds\[1\] must be a non-negative integer"),
    ("folds", [0, 7], r"^rows\[0\]\.folds: fold 7 does not exist"),
    ("metrics", ["Dice", "Hausdorff"], r"^metrics\[1\]: unknown metric 'Hausdorff'"),
    ("baseline", "Z", r"^baseline: no row labelled 'Z'"),
    ("datasets[0].cases", "many", r"^datasets\[0\]\.cases must be an integer"),
    ("datasets[0].cases", 0, r"^datasets\[0\]\.cases must be >= 1"),
    ("datasets[0].synth", "lung_ct", r"^datasets\[0\]\.synth: unknown kind 'lung_ct'"),
    ("datasets[0].id", 1000, r"^datasets\[0\]\.id must be an nnU-Net dataset id"),
    ("datasets[0].pre_only_id", 601, r"^datasets\[0\]\.pre_only_id must differ"),
    ("datasets[0].labeled_cases", 9, r"^datasets\[0\]\.labeled_cases must be in 1\.\.5"),
    ("datasets[0].planer", "CPUPlanner", r"^datasets\[0\]\.planer: unknown key"),
    ("datasets[0].shape", [16, -1], r"^datasets\[0\]\.shape must be a list of positive integers"),
    ("rows[0].trainer", "_delete", r"^rows\[0\]\.trainer is missing"),
    ("rows[0].trainer", 3, r"^rows\[0\]\.trainer must be a string"),
    ("rows[0].dataset", 700, r"^rows\[0\]\.dataset: no dataset with id 700"),
    ("rows[0].configuration", "2d", r"^rows\[0\]\.configuration: dataset 601 is planned for 3d_fullres only"),
    ("rows[0].kind", "eval", r"^rows\[0\]\.kind must be one of train, command"),
    ("rows[0].schedule", {"epochs": 0}, r"^rows\[0\]\.schedule\.epochs must be >= 1"),
    ("rows[0].schedule", {"epoch": 2}, r"^rows\[0\]\.schedule\.epoch: unknown key"),
    ("rows[0].env", {"nnUNet_ext_seed": "3"}, r"^rows\[0\]\.env\.nnUNet_ext_seed: set by the harness"),
    ("rows[0].env", {"1BAD": "3"}, r"^rows\[0\]\.env\.1BAD: not a valid environment variable name"),
    ("rows[0].ensemble", True, None),  # folds 0 and 1: fine
    ("rows[1].label", "A", r"^rows\[1\]\.label 'A' is used twice"),
    ("rows[1].label", "X" + ENSEMBLE_SUFFIX, r"^rows\[1\]\.label must not end with"),
    ("rows[1].requires", ["Q"], r"^rows\[1\]\.requires\[0\]: no row labelled 'Q'"),
    ("rows[1].requires", ["B"], r"^rows\[1\]\.requires\[0\]: a row cannot require itself"),
    ("rows[1].folds", [0], r"^rows\[1\]\.ensemble needs at least two numbered folds"),
    ("rows[2].command", "_delete", r"^rows\[2\]\.command is missing"),
    ("rows[2].trainer", "X", r"^rows\[2\]\.trainer: unknown key"),
    ("rows[2].extract", {"x": "x=\\d"}, r"^rows\[2\]\.extract\.x needs one group"),
    ("rows[2].extract", {"x": "x=(\\d"}, r"^rows\[2\]\.extract\.x: not a regular expression"),
    ("rows[2].folds", [0], r"^rows\[2\]\.folds: command rows have no folds"),
    ("rows[2].seeds", [0], r"^rows\[1\]\.requires\[0\]: 'C' does not run seed\(s\) \[1\]"),
    ("rows", [], r"^rows must list at least one row"),
    ("summary.a_dice.row", "Z", r"^summary\.a_dice\.row: no row labelled 'Z'"),
    ("summary.a_dice.stat", "mode", r"^summary\.a_dice\.stat: unknown stat 'mode'"),
    ("summary.a_dice.metric", "_delete", r"^summary\.a_dice\.metric is missing"),
    ("summary.cases.spec", "datasets[3].cases", r"^summary\.cases\.spec: the spec has no value at"),
    ("summary.commit", {"stat": "n_seeds"}, r"^summary\.commit: 'commit' is always written"),
    ("table", {"groups": [{"title": "x", "metrics": ["IoU"]}]}, r"^table\.groups\[0\]\.metrics\[0\]: 'IoU' is not"),
    ("table", {"rows": ["Z"]}, r"^table\.rows\[0\]: no row labelled 'Z'"),
    ("bootstrap", {"confidence": 1.5}, r"^bootstrap\.confidence must be in \(0, 1\)"),
    ("slurm", {"cpus_per_task": "two"}, r"^slurm\.cpus_per_task must be an integer"),
    ("device", "tpu", r"^device must be one of cpu, cuda, mps"),
    ("rows[0].evaluate", "train", r"^rows\[0\]\.evaluate must be one of test, validation"),
    ("rows[0].evaluate", "validation", None),  # folds 0 and 1: cross-validation
    ("rows[1].evaluate", "validation", r"^rows\[1\]\.evaluate: validation rows are cross-validated, not ensembled"),
    ("rows[0].hc18_csv", 3, r"^rows\[0\]\.hc18_csv must be a string"),
    ("rows[0].evaluate", "none", None),  # predict only, for a later row
    ("rows[1].evaluate", "none", r"^rows\[1\]\.evaluate: none has no metrics to ensemble"),
    ("rows[0].predict_args", ["--save_probabilities"], None),
    ("rows[0].predict_args", "--save_probabilities", r"^rows\[0\]\.predict_args must be a list"),
])
def test_bad_spec_is_one_line_naming_the_key(path, value, message):
    data = _set(BASE, path, value)
    if message is None:
        parse_spec(data)
        return
    with pytest.raises(UserInputError) as info:
        parse_spec(data)
    text = str(info.value)
    assert "\n" not in text
    assert re.search(message, text), text


def test_requires_cycle_is_named():
    data = _set(BASE, "rows[2]", {"label": "C", "trainer": "TinyTrainer", "dataset": 601, "requires": ["B"]})
    with pytest.raises(UserInputError, match=r"requires: cycle"):
        parse_spec(data)


def test_paired_stat_without_baseline_is_refused():
    data = _set(BASE, "baseline", "_delete")
    with pytest.raises(UserInputError, match=r"^summary\.b_minus_a: stat 'paired_ci' needs a baseline"):
        parse_spec(data)


@pytest.mark.parametrize("text, message", [
    ("name: [unclosed", r"not valid YAML"),
    ("", r"the spec must be a mapping"),
    ("- a\n- b\n", r"the spec must be a mapping"),
])
def test_load_spec_file_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserInputError, match=message) as info:
        load_spec(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(UserInputError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["dkm", "foundation", "slurm_local", "ffpn", "bhsd", "bhsd_release"])
def test_committed_specs_are_valid(name):
    spec = load_spec(SPECS / f"{name}.yaml")
    assert spec.name == {"foundation": "demo"}.get(name, name)


@pytest.mark.parametrize("name", ["bhsd", "bhsd_release"])
def test_bhsd_specs_have_the_four_tables_of_the_issue(name):
    spec = load_spec(SPECS / f"{name}.yaml")
    classes = ("EDH", "IPH", "IVH", "SAH", "SDH", "mean")
    for model in ("nnunet", "unetr", "swin_unetr"):
        assert all(f"table1.{model}.{c}" in spec.summary for c in classes), model
    counts = {key.split(".")[1] for key in spec.summary if key.startswith("table2.")}
    assert "0" in counts and len(counts) >= 2
    assert all(f"table2.{n}.{k}" in spec.summary for n in counts for k in (*classes, "fp"))
    for model in ("multi_class", "merged_single_class"):
        assert all(f"table3.{model}.{c}" in spec.summary for c in classes), model
    assert {"table4.suponly.dice", "table4.cps.dice"} <= set(spec.summary)
    merge = next(r for r in spec.rows if r.label == "5class merge")
    assert set(merge.requires) == {f"1class {c}" for c in classes[:5]}
    assert {r.trainer for r in spec.rows} >= {"BHSDTrainer", "CPSTrainer", "SupOnlyTrainer"}


@pytest.mark.parametrize("key, message", [
    ("x.", r"^summary\.x\.: empty part in a dotted key"),
    ("a_dice.unet", r"^summary\.a_dice\.unet: 'a_dice' is both a figure and an object"),
    ("commit.x", r"^summary\.commit\.x: 'commit' is always written"),
])
def test_bad_dotted_summary_keys(key, message):
    data = copy.deepcopy(BASE)
    data["summary"][key] = {"stat": "n_seeds"}
    with pytest.raises(UserInputError, match=message):
        parse_spec(data)


def test_validation_rows_need_numbered_folds():
    data = _set(_set(BASE, "rows[0].evaluate", "validation"), "rows[0].folds", "all")
    with pytest.raises(UserInputError, match=r"^rows\[0\]\.evaluate: validation needs numbered folds"):
        parse_spec(data)


def test_ffpn_spec_has_the_result_keys_of_issue_8():
    """ffpn.json must hold hc18_dice, hc18_hc_abs_diff_mm, cpu_images_per_s, cpu_peak_mem_mb and camus_like_dice,
    each an object with unet, ffpn and ffpn_r (dotted summary keys nest)."""
    spec = load_spec(SPECS / "ffpn.yaml")
    for key in ("hc18_dice", "hc18_hc_abs_diff_mm", "cpu_images_per_s", "cpu_peak_mem_mb", "camus_like_dice"):
        for model in ("unet", "ffpn", "ffpn_r"):
            assert any(k == f"{key}.{model}" or k.startswith(f"{key}.{model}.") for k in spec.summary), (key, model)
    cv_rows = [r for r in spec.rows if r.label.startswith("HC18")]
    assert {r.evaluate for r in cv_rows} == {"validation"} and all(r.folds == (0, 1, 2, 3, 4) for r in cv_rows)


def test_dkm_spec_has_the_keys_other_tooling_reads():
    spec = load_spec(SPECS / "dkm.yaml")
    for key in ("baseline_pre_dice", "prepost_dice", "dkm_f34_dice", "nocode_dice", "dkm_minus_baseline_ci",
                "n_seeds", "n_dm_cases", "n_labeled_cases", "n_test_cases", "lesion_enhancement_corr"):
        assert key in spec.summary, key
    assert spec.summary["dkm_minus_baseline_ci"]["stat"] == "paired_ci"
    assert len(spec.seeds) >= 3 and spec.source["datasets"][0]["cases"] >= 40
    assert spec.source["datasets"][0]["test_cases"] >= 40 and spec.source["datasets"][0]["labeled_cases"] == 10


def test_foundation_spec_has_the_demo_keys():
    spec = load_spec(SPECS / "foundation.yaml")
    assert {"demo_seconds", "demo_dice", "test_seconds", "bad_input_cases", "conformance_trainers"} <= set(spec.summary)


def test_lookup_spec_paths(tmp_path):
    data = {"datasets": [{"cases": 40}], "name": "x"}
    assert lookup_spec(data, "datasets[0].cases") == 40 and lookup_spec(data, "name") == "x"
    spec = load_spec(write_spec(tmp_path, {**copy.deepcopy(BASE)}))
    assert spec.file.endswith("spec.yaml")


def test_target_names_earlier_figures_with_an_operator():
    data = copy.deepcopy(BASE)
    data["summary"]["met"] = {"target": [["a_dice", ">=", 0.5], ["b_minus_a[0]", ">", 0]]}
    assert parse_spec(data).summary["met"] == {"target": [["a_dice", ">=", 0.5], ["b_minus_a[0]", ">", 0]]}


@pytest.mark.parametrize("target, message", [
    ([["a_dice", "=>", 0.5]], r"summary\.met\.target\[0\] must be \[KEY, OP, NUMBER\]"),
    ([["later", ">", 0]], r"summary\.met\.target\[0\]: 'later' is no summary figure listed before met"),
    ([["a_dice", ">", "x"]], r"summary\.met\.target\[0\] must be"),
])
def test_bad_targets(target, message):
    data = copy.deepcopy(BASE)
    data["summary"]["met"] = {"target": target}
    data["summary"]["later"] = {"stat": "n_seeds"}
    with pytest.raises(UserInputError, match=message):
        parse_spec(data)
