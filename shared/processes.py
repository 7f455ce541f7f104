"""Child processes that end with their parent."""

from __future__ import annotations

import signal
import sys


def die_with_parent() -> None:
    """End this process (SIGTERM) when its parent dies, on Linux (``prctl(PR_SET_PDEATHSIG)``).

    Used as the initializer of worker pools and the ``preexec_fn`` of child commands, so that a
    killed command leaves no workers running. A no-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass
