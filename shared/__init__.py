"""The project's package: what MONAI lacks for labelled brain-MRI synthesis.

Its top level is the bundles' run-time code, what their configs name (``io``, ``labels``,
``conditioning``, ``networks``, ``engines``, ``sampling`` ...); ``scripts/export_bundle.py`` vendors it
into an exported bundle as that bundle's own ``scripts`` package. The subpackages ``demo``,
``segmentation``, ``workflow`` and ``benchmarks`` are project code (demo data, nnU-Net, the
pipeline and studies, benchmarks), which no run-time module imports (``tests/test_bundle_export.py``).

Submodules load on first attribute access (``import shared; shared.io.read_datalist(...)``,
``shared.sampling.guidance...``), so bundle configs can write ``$import shared`` once and light
command-line tools do not pay for importing MONAI.

Importing the package in a ``python -m monai.bundle`` process makes an uncaught failure print
one line (``error: <file>: <problem>``, exit 2 for bad input; see :mod:`shared.errors`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType


def lazy_submodules(package: str) -> Callable[[str], ModuleType]:
    """A module-level ``__getattr__`` (PEP 562) that imports ``<package>.<name>`` on first access."""

    def __getattr__(name: str) -> ModuleType:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"{package}.{name}":
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from error
            raise

    return __getattr__


__getattr__ = lazy_submodules(__name__)


def _one_line_failures_in_bundle_runs() -> None:
    from shared.errors import install_bundle_error_lines

    install_bundle_error_lines()


_one_line_failures_in_bundle_runs()
