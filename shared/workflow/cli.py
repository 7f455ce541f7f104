"""Running ``fire`` command lines with one-line errors for bad input."""

from __future__ import annotations

import logging
import sys
from typing import Any

import fire

from shared.io import InputError


def run_cli(component: Any, name: str | None = None) -> None:
    """``fire.Fire(component)``; an :class:`InputError` prints ``error: <file>: <problem>`` and exits 2.

    Ctrl-C prints one line (no traceback) and exits 130, the shell's code for an interrupt.

    Log messages (warnings, progress notes) go to stderr at INFO level.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("shared").setLevel(logging.INFO)
    try:
        fire.Fire(component, name=name)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; run the same command again to go on", file=sys.stderr)
        sys.exit(130)
