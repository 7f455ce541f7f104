"""Running the project's command lines: strict arguments, one-line errors, known exit codes.

Exit codes: 0 done; 2 bad input (a flag, a value, a file: the line names it); 1 an internal
error (one line with its type; ``--verbose`` shows the traceback); 130 interrupted.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from shared.cli.arguments import bind_arguments
from shared.cli.command_help import command_help, commands_help
from shared.errors import BAD_INPUT, INTERNAL_ERROR, failure_line
from shared.io import InputError


def _print_result(result: Any) -> None:
    """Print a command's return value as fire would: one value, or ``key: value`` lines."""
    if result is None:
        return
    if isinstance(result, Mapping):
        for key, value in result.items():
            print(f"{key}: {value}")
    elif isinstance(result, (list, tuple)):
        for value in result:
            print(value)
    else:
        print(result)


def _split_verbose(argv: Sequence[str]) -> tuple[list[str], bool]:
    words = list(argv)
    verbose = "--verbose" in words
    return [w for w in words if w != "--verbose"], verbose


def run_cli(
    component: Callable | Mapping[str, Callable], name: str | None = None, argv: Sequence[str] | None = None
) -> None:
    """Run one command line: check every argument, call the function, print its result, exit.

    Args:
        component: the function of a one-command tool, or ``{command: function}``.
        name: the program's name in messages (default: the script's file name).
        argv: the words after the program (default: ``sys.argv[1:]``).

    The whole argument list is checked (see :mod:`shared.cli.arguments`) before the
    function runs. Log messages (warnings, progress notes) go to stderr at INFO level.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("shared").setLevel(logging.INFO)
    words, verbose = _split_verbose(sys.argv[1:] if argv is None else argv)
    prog = name or Path(sys.argv[0]).name
    try:
        function, words, prog = _choose_command(component, words, prog)
        if function is None:
            return
        if "--help" in words or "-h" in words:
            print(command_help(prog, function))
            return
        call = bind_arguments(function, words)
        _print_result(call())
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; run the same command again to go on", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except BaseException as error:
        line, code = failure_line(error)
        if verbose:
            traceback.print_exc()
        elif code == INTERNAL_ERROR:
            line += " (run again with --verbose for the traceback)"
        print(line, file=sys.stderr)
        sys.exit(code)


def _choose_command(
    component: Callable | Mapping[str, Callable], words: list[str], prog: str
) -> tuple[Callable | None, list[str], str]:
    """The function a command line asks for (``None`` after printing the tool's help), its words and name."""
    if not isinstance(component, Mapping):
        return component, words, prog
    if not words or words[0] in ("--help", "-h"):
        print(commands_help(prog, component), file=sys.stdout if words else sys.stderr)
        if not words:
            sys.exit(BAD_INPUT)
        return None, words, prog
    command = words[0]
    if command not in component:
        import difflib

        close = difflib.get_close_matches(command, list(component), n=1)
        hint = f"; did you mean {close[0]}?" if close else f", expected one of {', '.join(component)}"
        raise InputError(f"{command}: unknown command{hint}")
    return component[command], words[1:], f"{prog} {command}"
