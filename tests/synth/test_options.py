"""Tests of nnunet_ext.synth.options: value types, one-line messages, and every kind's declared options."""
import inspect
import math

import pytest

from nnunet_ext.errors import UserInputError
from nnunet_ext.synth.cli import KIND_MODULES, get_kind
from nnunet_ext.synth.options import (Choice, Flag, Integer, Number, Numbers, Option, RangePair, Shape, describe,
                                      validate)

# (type, value given, normalised value)
ACCEPTED = [
    (Number(0.0, 1.0), 1, 1.0),
    (Number(0.0, exclusive_minimum=True), 1e-9, 1e-9),
    (Integer(1, 4), 4, 4),
    (Flag(), False, False),
    (Choice(("CC", "MLO")), "MLO", "MLO"),
    (RangePair(Number(0.0)), [2, 3.5], (2.0, 3.5)),
    (RangePair(Number(0.0)), (3, 3), (3.0, 3.0)),
    (RangePair(Number(0.0), single=True), 7, 7.0),
    (RangePair(Integer(0, 20)), [0, 20], (0, 20)),
    (Numbers(2, Number(0.0), increasing=True), [1, 2], (1.0, 2.0)),
    (Shape(3, 8), [8, 9, 10], (8, 9, 10)),
]

# (type, value given, expected text)
REFUSED = [
    (Number(0.0, 1.0), 1.5, "a number in [0, 1]"),
    (Number(0.0, 1.0), "x", "a number in [0, 1]"),
    (Number(0.0, 1.0), True, "a number in [0, 1]"),
    (Number(0.0, 1.0), math.nan, "a number in [0, 1]"),
    (Number(0.0, exclusive_minimum=True), 0, "a number > 0"),
    (Number(maximum=3.0), 4, "a number <= 3"),
    (Integer(1, 4), 2.0, "an integer in 1..4"),
    (Integer(1, 4), 0, "an integer in 1..4"),
    (Integer(2, 2), 3, "an integer equal to 2"),
    (Flag(), 1, "true or false"),
    (Flag(), "yes", "true or false"),
    (Choice(("CC", "MLO")), "ML", "one of CC, MLO"),
    (Choice(("CC", "MLO")), ["CC"], "one of CC, MLO"),
    (RangePair(Number(0.0)), 5, "a range [low, high] of numbers >= 0 with low <= high"),
    (RangePair(Number(0.0)), [3, 2], "a range [low, high] of numbers >= 0 with low <= high"),
    (RangePair(Number(0.0)), [1, 2, 3], "a range [low, high] of numbers >= 0 with low <= high"),
    (RangePair(Number(0.0)), "ab", "a range [low, high] of numbers >= 0 with low <= high"),
    (RangePair(Number(0.0), single=True), -1, "a number >= 0 or a range [low, high] of numbers >= 0"),
    (RangePair(Integer(0, 20)), [1.5, 2], "a range [low, high] of integers in 0..20 with low <= high"),
    (Numbers(2, Number(0.0), increasing=True), [2, 2], "2 increasing numbers each >= 0"),
    (Numbers(2, Number(0.0), increasing=True), [1], "2 increasing numbers each >= 0"),
    (Shape(3, 8), [8, 8], "3 integers each >= 8 (z y x)"),
    (Shape(2, 16), [16, 15], "2 integers each >= 16 (y x)"),
    (Shape(2, 16), "16 16", "2 integers each >= 16 (y x)"),
]


@pytest.mark.parametrize("value_type, value, normalised", ACCEPTED)
def test_accepted_values_are_normalised(value_type, value, normalised):
    result = validate("k", [Option("x", value_type, None, "doc")], {"x": value})["x"]
    assert result == normalised and type(result) is type(normalised)


@pytest.mark.parametrize("value_type, value, expected", REFUSED)
def test_refused_values_give_one_line_naming_kind_option_value_and_expectation(value_type, value, expected):
    with pytest.raises(UserInputError) as info:
        validate("kind_x", [Option("opt", value_type, None, "doc")], {"opt": value})
    message = str(info.value)
    assert message.startswith("kind_x: option opt=") and "\n" not in message
    assert f" is invalid: expected {expected}" in message


def test_optional_accepts_null_and_the_python_spelling():
    spec = Option("snr", Number(0.0), 30.0, "doc", optional=True)
    assert validate("k", [spec], {"snr": None}) == {"snr": None}
    assert validate("k", [spec], {"snr": "None"}) == {"snr": None}
    assert validate("k", [spec], {}) == {"snr": 30.0}
    with pytest.raises(UserInputError, match="expected null or a number >= 0"):
        validate("k", [spec], {"snr": "off"})


def test_unknown_key_lists_the_known_ones():
    specs = [Option("a", Flag(), False, "doc"), Option("b", Flag(), False, "doc")]
    with pytest.raises(UserInputError, match=r"^k: unknown option c, d \(options: a, b; see nnunet-ext synth k "
                                             r"--list_options\)$"):
        validate("k", specs, {"c": 1, "d": 2, "a": True})


def test_relations_see_the_complete_validated_options():
    seen = {}

    def relations(values):
        seen.update(values)
        if values["low"] > values["high"]:
            raise UserInputError("k: low must not exceed high")

    specs = [Option("low", Number(), 0.0, "doc"), Option("high", Number(), 1.0, "doc")]
    assert validate("k", specs, {"low": 1}, relations) == {"low": 1.0, "high": 1.0} == seen
    with pytest.raises(UserInputError, match="low must not exceed high"):
        validate("k", specs, {"low": 2}, relations)


KINDS = sorted(KIND_MODULES)


def _renderer_parameters(kind_name: str) -> dict[str, inspect.Parameter]:
    """Keyword parameters of the function that finally receives the options of a kind."""
    module = __import__(KIND_MODULES[kind_name], fromlist=["_"])
    names = {"breast_dce": ["make_case", "simulate"], "head_ct_ich": ["make_case", "render_head_ct"],
             "ultrasound_2d": ["render_ultrasound"], "mammo_2d": ["render_mammogram"],
             "brain_pairs": ["make_case", "render_brain_pair"]}[kind_name]
    functions = [getattr(module, name) for name in names]
    parameters = {}
    for function in functions:
        parameters.update({name: p for name, p in inspect.signature(function).parameters.items()
                           if name != "rng" and p.kind is not p.VAR_KEYWORD})
    return parameters


@pytest.mark.parametrize("kind_name", KINDS)
def test_declared_options_are_exactly_the_renderer_keywords_with_the_same_defaults(kind_name):
    kind = get_kind(kind_name)
    parameters = _renderer_parameters(kind_name)
    assert {spec.name for spec in kind.option_specs} == set(parameters)
    for spec in kind.option_specs:
        assert spec.default == parameters[spec.name].default, spec.name


@pytest.mark.parametrize("kind_name", KINDS)
def test_defaults_pass_their_own_specs_and_are_described(kind_name):
    kind = get_kind(kind_name)
    defaults = {spec.name: spec.default for spec in kind.option_specs}
    assert kind.validate_options({}) == defaults
    assert kind.validate_options(defaults) == defaults  # given explicitly, each default passes its own spec
    text = describe(kind.name, kind.option_specs)
    assert all(spec.doc in text and spec.expected() in text for spec in kind.option_specs)


@pytest.mark.parametrize("kind_name", KINDS)
def test_region_labels_come_with_their_class_order(kind_name):
    """nnU-Net needs ``regions_class_order`` for region labels (lists of values), one label value per region: so is
    it with the defaults and with every flag of a kind turned on (e.g. breast_dce's subregions)."""
    kind = get_kind(kind_name)
    flags = [spec.name for spec in kind.option_specs if isinstance(spec.type, Flag)]
    for options in [{}] + [{name: True} for name in flags]:
        labels, order = kind.labels_with(options), kind.regions_class_order_with(options)
        regions = [value for name, value in labels.items() if name != "background"]
        if any(isinstance(value, list) for value in regions):
            assert order is not None and len(order) == len(regions), options
            assert all(isinstance(value, list) and value for value in regions), options
        else:
            assert order is None, options
