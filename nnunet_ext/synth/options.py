"""Declarative phantom options: what ``nnunet-ext synth KIND --option KEY=VALUE`` accepts, checked in one place.

Each phantom kind declares its options as :class:`Option` rows (name, value type, default, one-line doc). The value
types below describe the shape of a value (number, integer, flag, string choice, ``[low, high]`` range, list of N
numbers, image shape) and its allowed range; :func:`validate` checks a whole options dict against the rows before any
case is generated and turns every problem into one :class:`~nnunet_ext.errors.UserInputError` line naming the kind,
the option, the value given and what is expected.

Values arrive JSON-parsed from the command line (``[16, 40, 40]`` is a list, ``null`` is None, ``true`` a bool) or as
Python objects from the API (tuples); validated values are normalised (floats, ints, tuples).
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from nnunet_ext.errors import UserInputError


class _Invalid(Exception):
    """A value does not fit its type; the caller reports it with the type's ``expected`` text."""


def _is_real(value: Any) -> bool:
    # bool is an int in Python but never a sensible number here (``--option snr=true``)
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple))


@dataclass(frozen=True)
class Number:
    """A finite real number, optionally bounded (``exclusive_minimum``: the minimum itself is not allowed)."""

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    noun, plural = "a number", "numbers"

    def bounds(self) -> str:
        low = "(" if self.exclusive_minimum else "["
        if self.minimum is not None and self.maximum is not None:
            return f"in {low}{self.minimum:g}, {self.maximum:g}]"
        if self.minimum is not None:
            return f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}"
        return f"<= {self.maximum:g}" if self.maximum is not None else ""

    def expected(self) -> str:
        return f"{self.noun} {self.bounds()}".strip()

    def parse(self, value: Any) -> float:
        if not _is_real(value):
            raise _Invalid
        value = float(value)
        if self.minimum is not None and (value < self.minimum or self.exclusive_minimum and value == self.minimum):
            raise _Invalid
        if self.maximum is not None and value > self.maximum:
            raise _Invalid
        return value


@dataclass(frozen=True)
class Integer:
    """A whole number (``3``, not ``3.0`` nor ``true``), optionally bounded (inclusive)."""

    minimum: int | None = None
    maximum: int | None = None
    noun, plural = "an integer", "integers"

    def bounds(self) -> str:
        if self.minimum is not None and self.minimum == self.maximum:
            return f"equal to {self.minimum}"
        if self.minimum is not None and self.maximum is not None:
            return f"in {self.minimum}..{self.maximum}"
        if self.minimum is not None:
            return f">= {self.minimum}"
        return f"<= {self.maximum}" if self.maximum is not None else ""

    def expected(self) -> str:
        return f"{self.noun} {self.bounds()}".strip()

    def parse(self, value: Any) -> int:
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise _Invalid
        if self.minimum is not None and value < self.minimum or self.maximum is not None and value > self.maximum:
            raise _Invalid
        return int(value)


@dataclass(frozen=True)
class Flag:
    """``true`` or ``false``."""

    def expected(self) -> str:
        return "true or false"

    def parse(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _Invalid
        return value


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def expected(self) -> str:
        return f"one of {', '.join(self.values)}"

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.values:
            raise _Invalid
        return value


@dataclass(frozen=True)
class RangePair:
    """A ``[low, high]`` range (``low <= high``) of ``element`` values, from which a case draws its value;
    ``single``: a lone value is accepted too (kept as it is: every case uses it)."""

    element: Number | Integer
    single: bool = False

    def expected(self) -> str:
        bounds = self.element.bounds()
        pair = f"a range [low, high] of {self.element.plural}{' ' + bounds if bounds else ''} with low <= high"
        return f"{self.element.expected()} or {pair}" if self.single else pair

    def parse(self, value: Any) -> Any:
        if self.single and not _is_sequence(value):
            return self.element.parse(value)
        if not _is_sequence(value) or len(value) != 2:
            raise _Invalid
        low, high = (self.element.parse(v) for v in value)
        if low > high:
            raise _Invalid
        return low, high


@dataclass(frozen=True)
class Numbers:
    """A list of exactly ``length`` ``element`` values (``length`` to ``max_length`` when that is given);
    ``increasing``: strictly increasing; ``axes`` names them in messages (e.g. ``"z y x"``)."""

    length: int
    element: Number | Integer
    increasing: bool = False
    axes: str = ""
    max_length: int | None = None

    def expected(self) -> str:
        bounds = self.element.bounds()
        count = f"{self.length}-{self.max_length}" if self.max_length else f"{self.length}"
        text = f"{count} {'increasing ' if self.increasing else ''}{self.element.plural}"
        text += f" each {bounds}" if bounds else ""
        return f"{text} ({self.axes})" if self.axes else text

    def parse(self, value: Any) -> tuple:
        if not _is_sequence(value) or not self.length <= len(value) <= (self.max_length or self.length):
            raise _Invalid
        parsed = tuple(self.element.parse(v) for v in value)
        if self.increasing and any(b <= a for a, b in zip(parsed, parsed[1:])):
            raise _Invalid
        return parsed


def Shape(ndim: int, minimum: int) -> Numbers:  # noqa: N802 (reads like the other type constructors)
    """An image shape: ``ndim`` integers ``>= minimum`` in the array axis order."""
    return Numbers(ndim, Integer(minimum=minimum), axes="z y x" if ndim == 3 else "y x")


ValueType = Number | Integer | Flag | Choice | RangePair | Numbers


@dataclass(frozen=True)
class Option:
    """One option of a phantom kind.

    Args:
        name: the KEY of ``--option KEY=VALUE`` and the keyword of the kind's ``make_case``.
        type: the value type and its allowed range.
        default: the value used when the option is not given (must equal the ``make_case`` default).
        doc: one line for ``--list_options``.
        optional: ``null`` (None) is allowed as well; its meaning is in ``doc``.
    """

    name: str
    type: ValueType
    default: Any
    doc: str
    optional: bool = False

    def expected(self) -> str:
        return f"null or {self.type.expected()}" if self.optional else self.type.expected()

    def parse(self, value: Any) -> Any:
        # "None" is what a Python user types; JSON's null arrives as None
        if self.optional and (value is None or isinstance(value, str) and value == "None"):
            return None
        return self.type.parse(value)


def _shown(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return repr(value)


def validate(kind: str, specs: Sequence[Option], options: Mapping[str, Any] | None,
             relations: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Check ``options`` against ``specs``; return every declared option (given or default), normalised.

    Raises:
        UserInputError: an unknown key, a value of the wrong type or out of range, or (``relations``) a combination
            of values the kind refuses; one line naming the kind, the option, the value and what is expected.
    """
    by_name = {spec.name: spec for spec in specs}
    given = dict(options or {})
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise UserInputError(f"{kind}: unknown option {', '.join(unknown)} (options: {', '.join(by_name) or 'none'};"
                             f" see nnunet-ext synth {kind} --list_options)")
    values = {}
    for name, spec in by_name.items():
        if name not in given:
            values[name] = spec.default
            continue
        try:
            values[name] = spec.parse(given[name])
        except _Invalid:
            raise UserInputError(f"{kind}: option {name}={_shown(given[name])} is invalid: expected "
                                 f"{spec.expected()}") from None
    if relations is not None:
        relations(values)
    return values


def describe(kind: str, specs: Sequence[Option]) -> str:
    """The table ``nnunet-ext synth KIND --list_options`` prints: name, default, allowed values, doc."""
    lines = [f"options of {kind} (--option KEY=VALUE, VALUE as JSON; --shape sets shape):"]
    for spec in specs:
        lines.append(f"  {spec.name} (default {_shown(spec.default)}): {spec.doc}")
        lines.append(f"      {spec.expected()}")
    return "\n".join(lines)
