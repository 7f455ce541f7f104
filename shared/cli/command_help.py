"""``--help`` of a command, from its signature and the ``Args:`` section of its docstring.

Every flag gets one line: its name, type, default and description (fire's own help drops the
words of flags it cannot parse from a docstring and cuts long ones short).
"""

from __future__ import annotations

import inspect
import re
import shutil
import textwrap
from collections.abc import Callable, Mapping

from shared.bounds import ranges_in
from shared.cli.arguments import signature_hints, type_name

_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Example|Examples|Note|Notes):\s*$")
_ENTRY = re.compile(r"^(\*{0,2})(\w+)(\s*\([^)]*\))?:\s*(.*)$")


def parameter_descriptions(function: Callable) -> dict[str, str]:
    """``{name: one-line description}`` from the Google-style ``Args:`` section of the docstring."""
    lines = (inspect.getdoc(inspect.unwrap(function)) or "").splitlines()
    descriptions: dict[str, str] = {}
    in_args, current, entry_indent = False, None, None
    for line in lines:
        stripped = line.strip()
        if _SECTION.match(stripped) and (len(line) - len(line.lstrip())) == 0:
            in_args, current = stripped.rstrip(":") in ("Args", "Arguments", "Parameters"), None
            continue
        if not in_args or not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:  # back to the docstring's body
            in_args, current = False, None
            continue
        match = _ENTRY.match(stripped)
        if match and (entry_indent is None or indent <= entry_indent):
            entry_indent, current = indent, match.group(2)
            descriptions[current] = match.group(4)
        elif current is not None:
            descriptions[current] = f"{descriptions[current]} {stripped}".strip()
    return descriptions


def summary(function: Callable) -> str:
    """The first paragraph of the docstring, as one line."""
    doc = inspect.getdoc(inspect.unwrap(function)) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _default(parameter: inspect.Parameter) -> str:
    if parameter.default is parameter.empty:
        return "required"
    value = parameter.default
    if isinstance(value, (tuple, list)):
        return "default " + (",".join(str(v) for v in value) if value else "none")
    return f"default {value}"


def command_help(prog: str, function: Callable) -> str:
    """The help text of one command: usage, summary and one entry per flag."""
    signature, hints = signature_hints(function)
    words = parameter_descriptions(function)
    width = min(shutil.get_terminal_size((100, 20)).columns, 120)
    required = [
        p.name for p in signature.parameters.values() if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    usage = " ".join([f"usage: {prog}", *(n.upper() for n in required), "[--flag VALUE ...]"])
    out = [usage, "", textwrap.fill(summary(function), width), "", "flags (also given positionally, in this order):"]
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            continue
        if parameter.kind is parameter.VAR_KEYWORD:
            head = f"  --<name> VALUE  ({type_name(hints.get(parameter.name))})"
        else:
            hint = hints.get(parameter.name, parameter.empty)
            kind = type_name(hint)
            limits = list(dict.fromkeys(limit.describe() for limit in ranges_in(hint)))
            kind += "".join(f", {limit}" for limit in limits)
            head = f"  --{parameter.name}  ({kind}; {_default(parameter)})"
        text = words.get(parameter.name, "")
        out.append(head)
        out.append(
            textwrap.fill(text or "(no description)", width, initial_indent=" " * 6, subsequent_indent=" " * 6,
                          break_on_hyphens=False, break_long_words=False)
        )  # fmt: skip
    out += ["", "  --verbose  show the full traceback of a failure (default: one line)", "  --help  this text"]
    return "\n".join(out)


def commands_help(prog: str, commands: Mapping[str, Callable]) -> str:
    """The help text of a tool with several commands: one line per command."""
    width = max(len(name) for name in commands) + 2
    lines = [f"usage: {prog} COMMAND [ARGUMENTS ...]   ({prog} COMMAND --help for a command's flags)", "", "commands:"]
    lines += [f"  {name:<{width}}{summary(function)}" for name, function in commands.items()]
    return "\n".join(lines)
