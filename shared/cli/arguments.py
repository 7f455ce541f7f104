"""Strict reading of a command line against a function's signature, before any work is done.

``fire`` runs a command with its defaults before it notices a misspelt flag, reads ``"007"`` as
the number 7 and a one-word list as its letters. :func:`bind_arguments` reads the whole argument
list first, with fire's syntax (``--name value``, ``--name=value``, ``--flag`` / ``--noflag``,
``-`` or ``_`` in names, positional values in signature order, values as Python literals), and:

- refuses unknown flags with a did-you-mean, missing required values and repeated flags;
- checks every value against the parameter's type hint (``int``, ``float``, ``bool``, ``str``,
  unions, ``Optional``, sequences, fixed-length tuples, mappings): ``1.5`` is not an ``int``;
- reads a sequence given as one word as a one-item list (``--variants real`` is ``["real"]``)
  and a comma-separated word as its items (``--labels 1,2``);
- keeps a ``str`` parameter's word as typed (``--fold 007`` stays ``"007"``);
- applies the bounds each flag declares in its signature (``Annotated`` with a
  :class:`shared.bounds.Range`, e.g. ``n_cases: Count``; each item of a list is checked);
- checks ``--device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``; CUDA only where there is one).

Every problem is an :class:`~shared.io.InputError` of one line naming the flag.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import os
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fire.parser import DefaultParseValue

from shared.bounds import check_value, split_annotated
from shared.io import InputError

_DEVICE = re.compile(r"(cpu|mps|cuda(:\d+)?)")


def check_device(flag: str, value: str) -> None:
    """``cpu``, ``mps``, ``cuda`` or ``cuda:N``; CUDA (and device N) must exist on this machine."""
    if not _DEVICE.fullmatch(value):
        raise InputError(f"{flag}: unknown device {value!r}, expected cpu, cuda, cuda:N or mps")
    if value.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(value.partition(":")[2] or 0)
        if index >= count:
            found = f"{count} CUDA device(s)" if count else "no CUDA device (torch reports none)"
            raise InputError(f"{flag}: {value} asked for, but this machine has {found}")


def flag_of(name: str) -> str:
    """``output_dir`` -> ``--output_dir``."""
    return f"--{name}"


def _plain(hint: Any) -> Any:
    """The hint without its ``Annotated`` bounds."""
    return split_annotated(hint)[0]


def type_name(hint: Any) -> str:
    """Short readable name of a type hint (``int``, ``list of str``, ``str or None``), for messages and ``--help``."""
    hint = _plain(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return "value"
    if origin in (typing.Union, types.UnionType):
        names = dict.fromkeys(type_name(a) for a in args if a is not type(None))
        return " or ".join(names) + (" or None" if type(None) in args else "")
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (tuple,) and args and args[-1] is not Ellipsis:
        return f"{len(args)} of {type_name(args[0])}"
    if _is_sequence(hint):
        return f"list of {type_name(args[0]) if args else 'value'}"
    if _is_mapping(hint):
        return "dict"
    if hint is os.PathLike or origin is os.PathLike:
        return "path"
    return getattr(hint, "__name__", str(hint))


def _is_sequence(hint: Any) -> bool:
    hint = _plain(hint)
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and issubclass(origin, collections.abc.Sequence) and origin is not str


def _is_mapping(hint: Any) -> bool:
    hint = _plain(hint)
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and issubclass(origin, collections.abc.Mapping)


def _accepts_str(hint: Any) -> bool:
    """Does the hint take a plain word as it is (``str``, ``PathLike``, ``Any``)?"""
    hint = _plain(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_str(a) for a in args)
    return hint in (str, Any, inspect.Parameter.empty) or hint is os.PathLike or origin is os.PathLike


def _scalar_items(hint: Any) -> bool:
    """A scalar hint, or a sequence of scalars (``int``, ``list of float`` ...), whose own messages name the value."""
    hint = _plain(hint)
    if _is_sequence(hint):
        args = [_plain(a) for a in typing.get_args(hint) if a is not Ellipsis]
        return all(a in (int, float, str, bool) for a in args)
    return hint in (int, float, str, bool)


def _words(raw: str) -> list[Any]:
    """A comma-separated word's items, each read as a literal (``"1,2"`` -> ``[1, 2]``)."""
    return [DefaultParseValue(part.strip()) for part in raw.split(",") if part.strip()]


def convert(flag: str, raw: Any, hint: Any, from_text: bool) -> Any:
    """``raw`` (a command-line word when ``from_text``, else a value) checked and converted to ``hint``.

    Raises:
        InputError: the value does not fit the hint or lies outside its declared bounds; the message names ``flag``.
    """
    base, ranges = split_annotated(hint)
    if base is not hint:
        value = convert(flag, raw, base, from_text)
        check_value(flag, value, ranges)
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return DefaultParseValue(raw) if from_text else raw
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (raw is None or (from_text and raw == "None")):
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) == 1 and _scalar_items(members[0]):  # "X or None": X's message ('abc' is no number)
            return convert(flag, raw, members[0], from_text)
        # a word for a "str or list" flag stays one word unless it holds commas or brackets
        if from_text and any(_accepts_str(m) for m in members) and not re.search(r"[,\[\](){}]", raw):
            return raw
        # typed readings first, scalars before sequences: "1.5" for "float or list of float" is 1.5
        for member in sorted(members, key=lambda m: (_accepts_str(m), _is_sequence(m))):
            try:
                return convert(flag, raw, member, from_text)
            except InputError:
                pass
        raise InputError(f"{flag}: {_shown(raw)} is not a {type_name(hint)}")
    if hint is str or hint is os.PathLike or origin is os.PathLike:
        if from_text:
            return raw
        if isinstance(raw, (str, int, float, os.PathLike)) and not isinstance(raw, bool):
            return str(raw)
        raise InputError(f"{flag}: {_shown(raw)} is not a {type_name(hint)}")
    value = DefaultParseValue(raw) if from_text and isinstance(raw, str) else raw
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        if isinstance(value, bool):
            return value
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
        raise InputError(f"{flag}: {_shown(raw)} is not True or False")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{flag}: {_shown(raw)} is not a whole number")
        if isinstance(value, float) and not value.is_integer():
            raise InputError(f"{flag}: {_shown(raw)} is not a whole number")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{flag}: {_shown(raw)} is not a number")
        return float(value)
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"{flag}: {_shown(raw)} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if _is_mapping(hint):
        if not isinstance(value, collections.abc.Mapping):
            raise InputError(f"{flag}: {_shown(raw)} is not a dict (write it as \"{{'key': value}}\")")
        return dict(value)
    if _is_sequence(hint):
        if isinstance(value, str):
            items = _words(value) if from_text else [value]  # one word: a one-item list, never its letters
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        fixed = origin is tuple and args and args[-1] is not Ellipsis
        item_hints = list(args) if fixed else [args[0] if args else Any] * len(items)
        if fixed and len(items) != len(args):
            raise InputError(f"{flag}: {_shown(raw)} has {len(items)} values, expected {len(args)}")
        converted = [convert(flag, item, h, False) for item, h in zip(items, item_hints)]
        return tuple(converted) if origin is tuple else converted
    return value


def _shown(raw: Any) -> str:
    return repr(raw) if not isinstance(raw, str) else f"'{raw}'"


@dataclass
class BoundCall:
    """The checked keyword arguments of one call."""

    function: Callable
    kwargs: dict[str, Any]

    def __call__(self) -> Any:
        return self.function(**self.kwargs)


def _is_flag(token: str) -> bool:
    return token.startswith("--") and len(token) > 2


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if c.startswith(name) or name.startswith(c)][:1]
    return f"; did you mean {flag_of(close[0])}?" if close else ""


def signature_hints(function: Callable) -> tuple[inspect.Signature, dict[str, Any]]:
    """The signature of ``function`` and its resolved type hints (empty where they cannot be resolved)."""
    signature = inspect.signature(function)
    target = inspect.unwrap(function)
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:
        hints = {}
    return signature, hints


def bind_arguments(function: Callable, argv: Sequence[str]) -> BoundCall:
    """Read ``argv`` (the words after the command name) as a call of ``function``; nothing is run.

    Raises:
        InputError: unknown flag (with a did-you-mean), repeated flag, missing value or required
            argument, too many positional values, a value of the wrong type or out of range.
    """
    signature, hints = signature_hints(function)
    parameters = {p.name: p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    open_keywords = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    named: dict[str, str] = {}  # every value is a command-line word
    positional: list[str] = []
    tokens = list(argv)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token == "--":
            continue
        if not _is_flag(token):
            positional.append(token)
            continue
        name, has_value, value = token[2:].partition("=")
        name = name.replace("-", "_")
        bare = not has_value and (index >= len(tokens) or _is_flag(tokens[index]))
        if open_keywords and name not in parameters and bare:  # --flag / --noflag of the **keywords
            key = name[2:] if name.startswith("no") and len(name) > 2 else name
            named[key] = str(not name.startswith("no"))
            continue
        if name not in parameters and name.startswith("no") and name[2:] in parameters and not has_value:
            if _plain(hints.get(name[2:])) is not bool:
                raise InputError(f"{flag_of(name)}: {flag_of(name[2:])} is not an on/off flag")
            name, has_value, value = name[2:], True, "False"
        if name not in parameters and not open_keywords:
            raise InputError(f"{flag_of(name)}: unknown flag{_did_you_mean(name, list(parameters))}")
        if name in named:
            raise InputError(f"{flag_of(name)}: given twice")
        if not has_value:
            follows = tokens[index] if index < len(tokens) else None
            if _plain(hints.get(name)) is bool:  # a bare on/off flag; a word after it is its value
                if follows is not None and not _is_flag(follows):
                    value, index = follows, index + 1
                else:
                    value = "True"
            elif follows is None or _is_flag(follows):
                raise InputError(f"{flag_of(name)}: needs a value")
            else:
                value, index = follows, index + 1
        named[name] = value
    free = [name for name in parameters if name not in named]
    if len(positional) > len(free):
        extra = positional[len(free)]
        raise InputError(f"'{extra}': unexpected extra argument (there are only {len(parameters)} arguments)")
    named.update(zip(free, positional))
    missing = [name for name, p in parameters.items() if p.default is p.empty and name not in named]
    if missing:
        raise InputError(f"{flag_of(missing[0])}: required, not given (see --help)")
    kwargs: dict[str, Any] = {}
    for name, raw in named.items():
        flag = flag_of(name)
        value = convert(flag, raw, hints.get(name, Any), from_text=True)
        if name == "device" and isinstance(value, str):
            check_device(flag, value)
        kwargs[name] = value
    return BoundCall(function, kwargs)
