"""Export one bundle as a MONAI model-zoo bundle that runs without this repository.

The zip holds one folder, ``<bundle>/``::

    configs/       the bundle's configs, ``shared`` renamed ``scripts``, the weights' recipe baked in
    docs/          README (and any other docs), LICENSE beside them
    models/        the weights and the statistics inference reads (scaler, normaliser, grid ...)
    scripts/       the run-time code the configs reach (:mod:`shared.export.runtime_code`)
    large_files.yml  every file under models/ with its sha256

"Recipe baked in": weights trained with a preset (``science``) and overrides do not load into the
paper-size defaults, so the preset's values and the overrides are written into the top-level
keys of the exported configs; ``python -m monai.bundle run --config_file configs/inference.yaml``
then builds the networks the weights were trained with. Path values of the preset (``ckpt_dir``,
``datalist`` ...) are left at the bundle's own defaults, which lie inside the bundle.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from shared.export.runtime_code import (
    bundle_config_files,
    check_runtime_closure,
    runtime_modules,
    third_party_imports,
    vendor_runtime,
    vendored_text,
)
from shared.io import InputError, read_json, sha256_of

#: Packages with their own keys in metadata.json (not under ``required_packages_version``).
_OWN_KEYS = {"torch": "pytorch_version", "monai": "monai_version", "numpy": "numpy_version"}
#: Import names whose distribution has another name, where ``packages_distributions`` may not say.
_DISTRIBUTIONS = {"skimage": "scikit-image", "ignite": "pytorch-ignite", "yaml": "PyYAML", "PIL": "pillow"}
_FIXED_ZIP_TIME = (2026, 1, 1, 0, 0, 0)
#: Folders of a bundle copied as they are, when present (the segmenter's MONAI Label app).
EXTRA_FOLDERS = ("monailabel_app",)


def read_recipe(models_dir: Path) -> dict[str, Any]:
    """``{"preset": name or None, "values": {...}}`` from a starter ``manifest.json`` (empty recipe if none).

    Values are the overrides, then each continuation's over them (the last run's settings win).
    """
    manifest = models_dir / "manifest.json"
    if not manifest.is_file():
        return {"preset": None, "values": {}}
    data = read_json(manifest)
    values = dict(data.get("overrides") or {})
    for step in data.get("continuations") or []:
        values.update(step)
    return {"preset": data.get("preset"), "values": values}


def _preset_values(bundle_dir: Path, preset: str | None) -> dict[str, Any]:
    if not preset:
        return {}
    path = bundle_dir / "configs" / "presets" / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (bundle_dir / "configs" / "presets").glob("*.yaml"))
        raise InputError(f"preset {preset!r}: no {path} (known: {', '.join(known)})")
    values = yaml.safe_load(path.read_text()) or {}
    return {key: value for key, value in values.items() if not (isinstance(value, str) and "@bundle_root" in value)}


def bake_values(config_dir: Path, values: Mapping[str, Any], note: str) -> dict[str, list[str]]:
    """Write ``values`` into the top-level keys of the configs in ``config_dir`` (presets excluded).

    Each key is replaced in every file that defines it on one line; returns ``{key: [files]}``.
    Raises ``InputError`` for a key no config defines, or one defined over several lines.
    """
    files = sorted(p for p in config_dir.glob("*.yaml"))
    texts = {path: path.read_text() for path in files}
    where: dict[str, list[str]] = {}
    for key, value in values.items():
        line = re.compile(rf"^{re.escape(key)}:(?P<rest>.*)$", re.MULTILINE)
        for path, text in texts.items():
            match = line.search(text)
            if match is None:
                continue
            if not match.group("rest").split("#")[0].strip():
                raise InputError(f"{path.name}: {key} spans several lines; cannot bake the recipe's value into it")
            texts[path] = text[: match.start()] + f"{key}: {json.dumps(value)}  # {note}" + text[match.end() :]
            where.setdefault(key, []).append(path.name)
        if key not in where:
            raise InputError(f"recipe value {key}: no config of the bundle defines it")
    for path, text in texts.items():
        path.write_text(text)
    return where


def _distribution_versions(import_names: set[str]) -> dict[str, str]:
    """``{distribution: version}`` of the installed packages behind top-level import names."""
    mapping = importlib.metadata.packages_distributions()
    versions = {}
    for name in sorted(import_names):
        if name in _OWN_KEYS:
            continue
        for dist in mapping.get(name, [_DISTRIBUTIONS.get(name, name)]):
            try:
                versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                raise InputError(f"the bundle imports {name}, but no installed distribution provides it") from None
    return versions


def _write_metadata(
    source: Path, destination: Path, packages: dict[str, str], updates: Mapping[str, Any] | None = None
) -> None:
    metadata = {**read_json(source), **(updates or {})}
    for import_name, key in _OWN_KEYS.items():
        metadata[key] = importlib.metadata.version(import_name)
    metadata["required_packages_version"] = {**metadata.get("required_packages_version", {}), **packages}
    metadata["required_packages_version"] = dict(sorted(metadata["required_packages_version"].items()))
    destination.write_text(vendored_text(json.dumps(metadata, indent=4)) + "\n")


def _write_large_files(bundle: Path) -> None:
    lines = ["large_files:"]
    for path in sorted((bundle / "models").rglob("*")):
        if path.is_file():
            relative = path.relative_to(bundle).as_posix()
            lines += [
                f'  - path: "{relative}"',
                '    url: ""',
                f'    hash_val: "{sha256_of(path)}"',
                '    hash_type: "sha256"',
            ]
    (bundle / "large_files.yml").write_text("\n".join(lines) + "\n")


def _zip_folder(folder: Path, output: Path) -> None:
    """Zip ``folder`` (as its own top-level folder) with sorted entries and fixed times, atomically."""
    partial = output.with_name(output.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo(path.relative_to(folder.parent).as_posix(), date_time=_FIXED_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, path.read_bytes())
    os.replace(partial, output)


def export_bundle(
    bundle_dir: str | os.PathLike,
    models_dir: str | os.PathLike,
    output: str | os.PathLike,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    metadata_updates: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the model-zoo zip of ``bundle_dir`` with the weights in ``models_dir``; returns a summary.

    Args:
        bundle_dir: ``bundles/<name>`` (with ``configs/metadata.json``).
        models_dir: the trained models folder (or a ``starter/`` folder, whose manifest gives the recipe).
        output: the ``.zip`` to write (replaced atomically).
        preset: the preset the weights were trained with; default: the manifest's, else none.
        overrides: config values over the preset; default: the manifest's (continuations included).
        metadata_updates: top-level ``metadata.json`` fields to replace (labels of an exported model ...).

    Raises:
        InputError: before anything is written, for a missing bundle, models folder or preset, a
            run-time closure that reaches project code, or a recipe value no config defines.
    """
    bundle_dir, models_dir, output = Path(bundle_dir), Path(models_dir), Path(output)
    if not (bundle_dir / "configs" / "metadata.json").is_file():
        raise InputError(f"{bundle_dir}: not a bundle (no configs/metadata.json)")
    if not models_dir.is_dir() or not any(models_dir.glob("*.pt")):
        raise InputError(f"--models {models_dir}: no folder with .pt weights")
    if output.suffix != ".zip":
        raise InputError(f"--output {output}: expected a .zip path")
    recipe = read_recipe(models_dir)
    preset = recipe["preset"] if preset is None else preset
    values = {**_preset_values(bundle_dir, preset), **(recipe["values"] if overrides is None else dict(overrides))}
    graph = runtime_modules(bundle_config_files(bundle_dir))
    check_runtime_closure(graph, bundle_dir.name)

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export_") as staging:
        bundle = Path(staging) / bundle_dir.name
        for path in bundle_config_files(bundle_dir) + sorted((bundle_dir / "configs").glob("*.conf")):
            target = bundle / path.relative_to(bundle_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(vendored_text(path.read_text()))
        baked = bake_values(bundle / "configs", values, f"exported recipe (preset {preset})") if values else {}
        for path in sorted((bundle_dir / "docs").rglob("*")):
            if path.is_file():
                target = bundle / path.relative_to(bundle_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                if path.suffix == ".md":
                    target.write_text(vendored_text(path.read_text()))
                else:
                    shutil.copyfile(path, target)
        shutil.copyfile(bundle_dir / "LICENSE", bundle / "LICENSE")
        for name in EXTRA_FOLDERS:
            if (bundle_dir / name).is_dir():
                shutil.copytree(bundle_dir / name, bundle / name, ignore=shutil.ignore_patterns("__pycache__"))
        (bundle / "models").mkdir()
        for path in sorted(models_dir.iterdir()):
            if path.is_file():
                shutil.copyfile(path, bundle / "models" / path.name)
        code = vendor_runtime(graph, bundle / "scripts")
        packages = _distribution_versions(third_party_imports(code))
        _write_metadata(
            bundle_dir / "configs" / "metadata.json", bundle / "configs" / "metadata.json", packages, metadata_updates
        )
        _write_large_files(bundle)
        _zip_folder(bundle, output)
    return {"output": str(output), "modules": len(graph), "preset": preset, "baked": baked, "packages": packages}
