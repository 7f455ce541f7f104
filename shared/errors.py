"""One line per failure: what a command line or a bundle run prints when it fails.

Bad input (an :class:`~shared.io.InputError`, a permission or path problem, memory too small
for the request) exits 2 with ``error: <file or value>: <problem>``; anything else exits 1 with
``error: internal: <type>: <message>``. The traceback is shown only when asked for (``--verbose``
for the scripts, ``SHARED_VERBOSE=1`` for bundle runs).

MONAI wraps a failing config expression in ``RuntimeError("Failed to evaluate ...")``; the cause
is found by following the exception's ``__cause__`` / ``__context__`` chain.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Any

#: Exit code of bad input (a flag, a value, an input file), as argparse uses.
BAD_INPUT = 2
#: Exit code of a failure that is not the input's fault.
INTERNAL_ERROR = 1
#: Environment variable that brings back full tracebacks in bundle runs.
VERBOSE_VARIABLE = "SHARED_VERBOSE"

_OS_PROBLEMS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOTDIR: "a part of this path is a file, expected a folder",
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "already exists",
}


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from, outermost first."""
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def root_cause(error: BaseException) -> BaseException:
    """The first bad-input error of the chain, else the innermost exception."""
    from shared.io import InputError

    chain = _chain(error)
    for candidate in chain:
        if isinstance(candidate, (InputError, MemoryError)) or (
            isinstance(candidate, OSError) and candidate.errno is not None
        ):
            return candidate
    return chain[-1]


def failure_line(error: BaseException) -> tuple[str, int]:
    """The one line (``error: ...``) and exit code of a failure."""
    from shared.io import InputError

    cause = root_cause(error)
    if isinstance(cause, InputError):
        return f"error: {cause}", BAD_INPUT
    if isinstance(cause, OSError) and cause.errno is not None:
        what = _OS_PROBLEMS.get(cause.errno, cause.strerror or type(cause).__name__)
        name = cause.filename if cause.filename is not None else "(path)"
        return f"error: {name}: {what}", BAD_INPUT
    if isinstance(cause, MemoryError):
        return "error: out of memory (a grid, batch or set too large for this machine); use a smaller one", BAD_INPUT
    message = " ".join(str(cause).split()) or "(no message)"
    if len(message) > 300:
        message = message[:297] + "..."
    return f"error: internal: {type(cause).__name__}: {message}", INTERNAL_ERROR


def _bundle_excepthook(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    """``sys.excepthook`` of bundle runs: one line, exit 2 for bad input, 1 otherwise."""
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted: finished outputs are kept; run the same command again to go on", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)
    line, code = failure_line(error)
    if os.environ.get(VERBOSE_VARIABLE):
        traceback.print_exception(kind, error, tb)
    hint = "" if os.environ.get(VERBOSE_VARIABLE) else f" ({VERBOSE_VARIABLE}=1 for the traceback)"
    print(line + (hint if code == INTERNAL_ERROR else ""), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the interpreter would exit 1 whatever the cause


def running_a_bundle() -> bool:
    """Is this process ``python -m monai.bundle ...`` (or a torchrun worker of it)?"""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", "") in ("monai.bundle.__main__", "monai.bundle")


def install_bundle_error_lines() -> None:
    """Make an uncaught failure of a bundle run print one line (see the module docstring)."""
    if running_a_bundle() and sys.excepthook is sys.__excepthook__:
        sys.excepthook = _bundle_excepthook
