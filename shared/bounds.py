"""Bounds of numeric values, declared where the value is declared: a flag in a signature, a field of a dataclass.

A bound is :class:`Range` metadata in ``typing.Annotated``; the common ones have names::

    def prepare(n_cases: Count = 20, validation_fraction: Fraction = 0.2, steps: list[Positive] = (10,)) -> None: ...

The command-line framework (``shared.cli.arguments``) reads them from the signature, checks every
value given on a command line (each item of a list) and shows them in ``--help``;
:func:`check_fields` checks a dataclass's fields against theirs. A numeric flag without a bound
is refused by the tests, so a new flag cannot be left unbounded by accident.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from shared.io import InputError


@dataclass(frozen=True)
class Range:
    """Allowed interval of a number; ``None`` leaves that side open.

    Attributes:
        low, high: the ends (``high`` always included).
        low_open: ``True`` excludes ``low`` itself (``> 0`` rather than ``>= 0``).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def check(self, name: str, value: float) -> None:
        """Raise :class:`InputError` naming ``name`` when ``value`` is not finite or lies outside the interval."""
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{name}: {value} is not a finite number")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and value > self.high
        if too_low or too_high:
            raise InputError(f"{name}: {value} is out of range, expected {self.describe()}")

    def describe(self) -> str:
        """``">= 0"``, ``"> 0"``, ``"in [1, 999]"``."""
        low = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is None:
            return low
        if self.low is None:
            return f"<= {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


#: A count: cases, samples, workers, seeds (``>= 0``).
Count = Annotated[int, Range(0)]
#: At least one: steps, epochs, iterations, runs, processes (``>= 1``).
Positive = Annotated[int, Range(1)]
#: A size that must be above zero: a learning rate, a width factor, millimetres (``> 0``).
PositiveFloat = Annotated[float, Range(0, low_open=True)]
#: A weight or scale that may be zero: guidance, a ratio (``>= 0``).
NonNegative = Annotated[float, Range(0)]
#: A share of something (``[0, 1]``).
Fraction = Annotated[float, Range(0, 1)]
#: nnU-Net's dataset ids (``[1, 999]``).
DatasetId = Annotated[int, Range(1, 999)]


def split_annotated(hint: Any) -> tuple[Any, list[Range]]:
    """``Annotated[T, Range(...), ...]`` -> ``(T, [ranges])``; any other hint -> ``(hint, [])``."""
    if typing.get_origin(hint) is Annotated:
        base, *metadata = typing.get_args(hint)
        return base, [m for m in metadata if isinstance(m, Range)]
    return hint, []


def ranges_in(hint: Any) -> Iterator[Range]:
    """Every :class:`Range` a hint declares: its own, its union members' and its items' (``list[Positive]``)."""
    base, ranges = split_annotated(hint)
    yield from ranges
    origin = typing.get_origin(base)
    if origin in (typing.Union, types.UnionType) or (origin is not None and origin is not typing.Literal):
        for argument in typing.get_args(base):
            if argument is not Ellipsis:
                yield from ranges_in(argument)


def check_value(name: str, value: Any, ranges: list[Range]) -> None:
    """Check ``value`` (a number, or each number of a list or tuple) against ``ranges``; ``None`` passes."""
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            for bound in ranges:
                bound.check(name, item)


def check_fields(instance: Any) -> None:
    """Check every field of a dataclass instance against the :class:`Range` of its annotation.

    Raises:
        InputError: the first field out of its range (named ``--<field>``, as the flag it usually comes from).
    """
    hints = typing.get_type_hints(type(instance), include_extras=True)
    for field in dataclasses.fields(instance):
        check_value(f"--{field.name}", getattr(instance, field.name), list(ranges_in(hints.get(field.name))))
