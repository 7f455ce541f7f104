"""Which modules of ``shared`` a bundle needs at run time, and vendoring them as the bundle's ``scripts``.

A bundle's configs name functions and classes of the package (``$shared.io.read_datalist``,
``_target_: shared.networks.slice_stack.SliceStackAutoencoder``). :func:`runtime_modules` follows
those names and every ``import`` in the modules they reach (function-level imports included), so
the result is exactly the code a bundle runs. Project code (``shared.demo``, ``shared.segmentation``,
``shared.workflow``, ``shared.benchmarks``) must never be in it: :func:`check_runtime_closure`
refuses it, and the tests assert it for every bundle.

:func:`vendor_runtime` copies the modules into ``<bundle>/scripts`` with ``shared`` renamed
``scripts``, the model-zoo convention (configs then say ``$import scripts``).
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable
from pathlib import Path

from shared.io import InputError

PACKAGE = "shared"
PACKAGE_DIR = Path(__file__).resolve().parents[1]

#: Subpackages that hold project-only code (never imported by a bundle at run time).
PROJECT_SUBPACKAGES = ("demo", "segmentation", "evaluation", "cli", "export", "workflow", "benchmarks")

_DOTTED_NAME = re.compile(rf"(?<![\w.]){PACKAGE}(?:\.[A-Za-z_]\w*)+")
_VENDORED_NAME = re.compile(rf"(?<![\w./-]){PACKAGE}(?=\.[A-Za-z_])")
_VENDORED_IMPORT = re.compile(rf"\b(import|from) {PACKAGE}\b")


def module_file(module: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """``shared.io`` -> ``.../shared/io.py`` (``__init__.py`` for packages); None if no such module."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    path = package_dir.joinpath(*parts[1:])
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _longest_module(dotted: str, package_dir: Path) -> str | None:
    """The longest prefix of ``dotted`` that is a module (``shared.io.read_csv`` -> ``shared.io``)."""
    parts = dotted.split(".")
    while parts:
        name = ".".join(parts)
        if module_file(name, package_dir) is not None:
            return name
        parts.pop()
    return None


def imported_modules(path: Path, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """Modules of the package that the Python file ``path`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                module = _longest_module(name, package_dir)
                if module is not None:
                    found.add(module)
    return found


def config_modules(config_files: Iterable[Path], package_dir: Path = PACKAGE_DIR) -> set[str]:
    """Modules of the package named in bundle config files (``shared.x.y`` anywhere in their text)."""
    found = {PACKAGE}
    for path in config_files:
        for dotted in _DOTTED_NAME.findall(path.read_text()):
            module = _longest_module(dotted, package_dir)
            if module is None:
                raise InputError(f"{path}: names {dotted}, which is not a module of {PACKAGE}")
            found.add(module)
    return found


def runtime_modules(config_files: Iterable[Path], package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Every module a bundle's configs reach, with what each imports: ``{module: {imported modules}}``.

    Parent packages are included (``shared.sampling`` for ``shared.sampling.guidance``).
    """
    todo = sorted(config_modules(config_files, package_dir))
    graph: dict[str, set[str]] = {}
    while todo:
        module = todo.pop()
        if module in graph:
            continue
        path = module_file(module, package_dir)
        assert path is not None, module
        parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        graph[module] = imported_modules(path, package_dir)
        todo.extend(sorted((graph[module] | parents) - graph.keys()))
    return graph


def is_project_module(module: str) -> bool:
    """True for modules of the project-only subpackages (demo data, nnU-Net, workflow, benchmarks)."""
    parts = module.split(".")
    return len(parts) > 1 and parts[0] == PACKAGE and parts[1] in PROJECT_SUBPACKAGES


def check_runtime_closure(graph: dict[str, set[str]], bundle: str = "bundle") -> None:
    """Refuse a runtime closure that reaches project code, naming the importing module."""
    for module in sorted(graph):
        if is_project_module(module):
            importers = sorted(name for name, deps in graph.items() if module in deps) or ["the configs"]
            raise InputError(f"{bundle}: run-time code reaches project module {module} (from {', '.join(importers)})")


def vendored_text(text: str, package: str = "scripts") -> str:
    """Source or config text with the package renamed: ``shared.io`` -> ``scripts.io``, ``import shared``."""
    text = _VENDORED_IMPORT.sub(lambda match: f"{match.group(1)} {package}", text)
    return _VENDORED_NAME.sub(package, text)


def vendor_runtime(modules: Iterable[str], destination: Path, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Copy ``modules`` into ``destination`` (the bundle's ``scripts`` folder), renamed; returns the files."""
    written = []
    for module in sorted(modules):
        source = module_file(module, package_dir)
        assert source is not None, module
        target = destination / source.relative_to(package_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(vendored_text(source.read_text(), destination.name))
        written.append(target)
    return written


def third_party_imports(files: Iterable[Path]) -> set[str]:
    """Top-level names of the non-standard-library modules ``files`` import (``monai``, ``numpy`` ...)."""
    import sys

    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
    return {name for name in names if name not in sys.stdlib_module_names and name not in (PACKAGE, "scripts")}


def bundle_config_files(bundle_dir: str | os.PathLike) -> list[Path]:
    """The YAML/JSON configs of a bundle, presets included (``logging.conf`` has no code names)."""
    configs = Path(bundle_dir) / "configs"
    return sorted(p for p in configs.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
