"""A study file: one YAML that declares a whole study on the user's own data (or the built-in demo's).

::

    defaults: study              # the scale (shared.workflow.settings.SCALES) that fills what is not given
    studies: [ventricles]        # ventricles, tumours, or both
    settings:                    # any key of the scale, e.g. generators_from, nnunet_seeds, samplers, device
      generators_from: real
      nnunet_seeds: 3
    data:                        # per study; a study without data uses the scale's demo data
      ventricles:
        real: /data/subjects     # the small labelled training set (folder, datalist .json or .csv)
        holdout: /data/holdout   # subjects no model may see; evaluated on the working grid
        pool: /data/more         # optional: the generators learn from it (generators_from pool)
        layout: auto             # brats, freesurfer, synthseg, datalist, csv or auto
        grid: {shape: [32, 32, 32], spacing: [6, 6, 6]}   # optional when every image shares one grid
        skip_bad: false
        validation_fraction: 0.2
      tumours:
        ...
        tumour_ids: [1, 2, 4]    # segmentation ids of the whole tumour (BraTS 2021; 2023: 1, 2, 3)
    generators:                  # optional, per bundle: weights in the starter layout, or the recipe it trains with
      ventricle_mask_ldm: {weights: /models/mask_ldm}
      spade_mri_ldm: {preset: paper}                  # trained in the run at the paper's sizes (a GPU)
      slice_based_ldm_brats: {preset: science, overrides: {diffusion_epochs: 400}}

Relative paths are read from the study file's folder. :func:`load_study` checks the whole file
before anything is written: unknown keys, wrong types, missing folders, empty sets, training and
hold-out sets that share subjects, tumour ids in no label map, brains without ventricle labels,
images of several grids without a working grid, starter weights on another grid, a preset a
bundle lacks, a recipe for a generator that is not trained in the run. Each problem is
one line naming the key or the file. :func:`resolved_study` is the file with every default
filled in, which the run writes beside its report (``study.yaml``), so a study reruns exactly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm.auto import tqdm

from shared.io import InputError
from shared.workflow.chaining import PAPER_PRESET, ROOT
from shared.workflow.design import STUDY_GENERATORS
from shared.workflow.settings import SCALES, STUDIES, StudySettings, resolve_settings
from shared.workflow.user_sets import UserSet

TOP_KEYS = ("defaults", "studies", "settings", "data", "generators")
GENERATOR_KEYS = ("weights", "preset", "overrides")
DATA_KEYS = ("real", "holdout", "pool", "layout", "grid", "skip_bad", "validation_fraction", "tumour_ids")
#: The sets of one study's data and whether each must be given.
SET_ROLES = {"real": True, "holdout": True, "pool": False}
BUNDLE_ROOT = ROOT / "bundles"
#: The study files shipped with the project: one per scale (the main command's ``--scale``).
SHIPPED_STUDIES = ROOT / "scripts" / "studies"
#: The generator bundles whose weights a study file may name, per study.
GENERATOR_BUNDLES = {study: tuple(bundle for bundle, _ in named) for study, named in STUDY_GENERATORS.items()}
#: Settings that follow from the data when a study names its own (the demo data's grid and counts).
DATA_SETTINGS = {"ventricles": ("n_brains", "shape", "spacing", "brain_enlargement", "ventricle_holdout"),
                 "tumours": ("n_tumours", "tumour_shape", "tumour_working_shape", "tumour_holdout")}  # fmt: skip


@dataclass(frozen=True)
class Study:
    """A loaded study file.

    Attributes:
        settings: the resolved settings (user sets in place of the demo recipes where data is given).
        studies: the studies to run, in pipeline order.
        resolved: :func:`resolved_study`'s mapping (written beside the report).
        path: the study file.
    """

    settings: StudySettings
    studies: tuple[str, ...]
    resolved: dict[str, Any]
    path: Path


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: expected a mapping of keys to values, got {type(value).__name__}")
    return dict(value)


def _unknown(keys: Any, allowed: Sequence[str], where: str) -> None:
    unknown = [k for k in keys if k not in allowed]
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}, expected some of {', '.join(allowed)}")


def read_study_file(path: str | os.PathLike) -> dict[str, Any]:
    """The study file as a mapping (one line on a missing file, bad YAML or a non-mapping)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: study file not found")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{path}: not valid YAML{where}") from None
    if not isinstance(content, Mapping):
        raise InputError(f"{path}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    return dict(content)


def _path(value: Any, base: Path, where: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise InputError(f"{where}: expected a path, got {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise InputError(f"{where}: {path} does not exist")
    return str(path.resolve())


def _triple(value: Any, where: str, kind: type) -> tuple[Any, Any, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and kind is float:
        value = [value] * 3
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        raise InputError(f"{where}: expected three numbers, got {value!r}")
    try:
        numbers = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected three numbers, got {value!r}") from None
    return numbers  # type: ignore[return-value]


def source_grid(files: Sequence[Path], where: str) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """The one grid (shape, spacing) all ``files`` share, read from their headers.

    Raises:
        InputError: the images are on several grids (a working grid must then be given).
    """
    import nibabel as nib

    grids = {}
    for path in files:
        try:
            header = nib.load(str(path)).header
        except Exception as error:  # nibabel raises many types on a bad file
            raise InputError(f"{path}: cannot read its header ({type(error).__name__})") from None
        shape = tuple(int(n) for n in header.get_data_shape()[:3])
        spacing = tuple(round(float(s), 4) for s in header.get_zooms()[:3])
        grids.setdefault((shape, spacing), path)
    if len(grids) > 1:
        (a, first), (b, second) = list(grids.items())[:2]
        raise InputError(
            f"{where}: images on several grids ({first.name}: {a[0]} at {a[1]} mm, {second.name}: {b[0]} at "
            f"{b[1]} mm); give grid: {{shape: [...], spacing: [...]}}"
        )
    return next(iter(grids))  # type: ignore[return-value]


def _label_ids(files: Sequence[Path], desc: str) -> set[int]:
    """Every label id in ``files`` (each label map read once)."""
    import nibabel as nib

    ids: set[int] = set()
    for path in tqdm(files, desc=desc, unit="map", disable=None):
        try:
            ids |= {int(v) for v in np.unique(np.asanyarray(nib.load(str(path)).dataobj))}
        except Exception as error:  # nibabel raises many types on a bad file
            raise InputError(f"{path}: cannot read the label map ({type(error).__name__})") from None
    return ids


#: aseg / SynthSeg ids of the left and right lateral ventricles: a brain label map has both (a tumour
#: segmentation's 4 alone is not one).
LATERAL_VENTRICLE_IDS = (4, 43)


def check_label_ids(user_set: UserSet, where: str) -> None:
    """Tumours: some declared tumour id is in some label map; brains: both lateral ventricles' ids are.

    Raises:
        InputError: naming the ids and the set.
    """
    labels = [case.label for case in user_set.discovery.cases]
    found = _label_ids(labels, f"check label ids of {Path(user_set.source).name}")
    if user_set.kind == "tumours":
        missing = [i for i in user_set.tumour_ids if i not in found]
        if len(missing) == len(user_set.tumour_ids):
            raise InputError(
                f"{where}.tumour_ids: none of {list(user_set.tumour_ids)} is in any label map of {user_set.source} "
                f"(ids found: {sorted(found)})"
            )
    elif not set(LATERAL_VENTRICLE_IDS) <= found:
        raise InputError(
            f"{where}: no ventricle id pair {list(LATERAL_VENTRICLE_IDS)} (left and right lateral ventricles) in the "
            f"label maps of {user_set.source} (ids found: {sorted(found)[:12]}); the ventricle study needs aseg / "
            "SynthSeg label maps"
        )


def _user_sets(study: str, data: dict[str, Any], base: Path, working_shape: tuple[int, int, int] | None) -> dict:
    """The study's :class:`UserSet` per role, checked (paths, grid, cases, label ids)."""
    where = f"data.{study}"
    _unknown(data, DATA_KEYS, where)
    if "tumour_ids" in data and study != "tumours":
        raise InputError(f"{where}.tumour_ids: only the tumour study has tumour ids")
    for role, required in SET_ROLES.items():
        if required and data.get(role) is None:
            raise InputError(f"{where}.{role}: missing (the {role} set is required)")
    sources = {role: _path(data[role], base, f"{where}.{role}") for role in SET_ROLES if data.get(role) is not None}
    kind = "brains" if study == "ventricles" else "tumours"
    layout = data.get("layout", "auto")
    skip_bad = data.get("skip_bad", False)
    if not isinstance(skip_bad, bool):
        raise InputError(f"{where}.skip_bad: expected true or false, got {skip_bad!r}")
    fraction = data.get("validation_fraction", 0.2)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise InputError(f"{where}.validation_fraction: expected a number in [0, 1), got {fraction!r}")
    tumour_ids = data.get("tumour_ids", (1, 2, 3, 4))
    if isinstance(tumour_ids, int):
        tumour_ids = [tumour_ids]
    if (
        not isinstance(tumour_ids, Sequence)
        or not tumour_ids
        or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in tumour_ids)
    ):
        raise InputError(f"{where}.tumour_ids: expected positive label ids, got {tumour_ids!r}")
    grid = _mapping(data.get("grid"), f"{where}.grid")
    _unknown(grid, ("shape", "spacing"), f"{where}.grid")
    if grid and set(grid) != {"shape", "spacing"}:
        raise InputError(f"{where}.grid: give both shape and spacing")
    sets: dict[str, UserSet] = {}
    found = {}
    for role, source in sources.items():
        found[role] = UserSet(kind, source, (8, 8, 8), (1.0, 1.0, 1.0), layout, skip_bad=skip_bad)
        try:
            found[role].discovery  # noqa: B018 - finds the cases (raises on a bad or empty source)
        except InputError as error:
            raise InputError(f"{where}.{role}: {error}") from None
    if grid:
        shape, spacing = (
            _triple(grid["shape"], f"{where}.grid.shape", int),
            _triple(grid["spacing"], f"{where}.grid.spacing", float),
        )
    else:
        images = [case.image for user_set in found.values() for case in user_set.discovery.cases]
        shape, spacing = source_grid(images, where)
    if working_shape is not None and tuple(shape) != tuple(working_shape):
        raise InputError(
            f"{where}.grid.shape: {list(shape)}, but the slice LDM works on settings.tumour_working_shape "
            f"{list(working_shape)}; give that shape (with the spacing you want) or change both"
        )
    for role, user_set in found.items():
        sets[role] = replace(
            user_set, shape=shape, spacing=spacing, tumour_ids=tuple(tumour_ids),
            validation_fraction=float(fraction) if role != "holdout" else 0.0,
            prepared_shape=tuple(shape) if kind == "tumours" else None,
            prepared_validation_fraction=0.1 if role != "holdout" else 0.0,
        )  # fmt: skip
    for role, user_set in sets.items():
        check_label_ids(user_set, f"{where}.{role}")
    holdout = set(sets["holdout"].all_subjects())
    for role in ("real", "pool"):
        if role in sets:
            shared = sorted(holdout & set(sets[role].all_subjects()))
            if shared:
                raise InputError(
                    f"{where}: the {role} and holdout sets share {len(shared)} subject(s), e.g. {shared[0]!r}; "
                    "hold-out subjects must be unseen"
                )
    return sets


def _preset_names(bundle: str) -> list[str]:
    return [PAPER_PRESET, *sorted(p.stem for p in (BUNDLE_ROOT / bundle / "configs" / "presets").glob("*.yaml"))]


def _config_keys(bundle: str) -> set[str]:
    """The top-level keys of a bundle's training and inference configs (the values a recipe may set)."""
    keys: set[str] = set()
    for name in ("train_autoencoder", "train_diffusion", "inference"):
        config = BUNDLE_ROOT / bundle / "configs" / f"{name}.yaml"
        keys.update(yaml.safe_load(config.read_text()) or {})
    return keys


def _generators(value: Any, studies: Sequence[str], base: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """``(weights, recipes)``: per bundle, a folder of weights or the recipe it trains with in the run."""
    generators = _mapping(value, "generators")
    allowed = [bundle for study in studies for bundle in GENERATOR_BUNDLES[study]]
    _unknown(generators, allowed, "generators")
    weights, recipes = {}, {}
    for bundle, entry in generators.items():
        where = f"generators.{bundle}"
        entry = _mapping(entry, where)
        _unknown(entry, GENERATOR_KEYS, where)
        if "weights" in entry and len(entry) > 1:
            raise InputError(f"{where}: weights carry their own recipe (their manifest.json); give weights or "
                             "preset/overrides, not both")  # fmt: skip
        if "weights" in entry:
            folder = _path(entry["weights"], base, f"{where}.weights")
            if not (Path(folder) / "manifest.json").is_file():
                raise InputError(f"{where}.weights: {folder} holds no manifest.json (the starter layout)")
            weights[bundle] = folder
            continue
        if "preset" not in entry:
            raise InputError(f"{where}: give weights: <folder in the starter layout> or preset: <name>")
        presets = _preset_names(bundle)
        if entry["preset"] not in presets:
            raise InputError(f"{where}.preset: {entry['preset']!r} is not a preset of {bundle}, expected one of "
                             f"{', '.join(presets)}")  # fmt: skip
        overrides = _mapping(entry.get("overrides"), f"{where}.overrides")
        unknown = sorted(set(overrides) - _config_keys(bundle))
        if unknown:
            raise InputError(f"{where}.overrides: unknown key {unknown[0]!r}: no training or inference config of "
                             f"{bundle} sets it")  # fmt: skip
        recipes[bundle] = {"preset": entry["preset"], "overrides": overrides}
    return weights, recipes


def _check_trained(settings: StudySettings, studies: Sequence[str]) -> None:
    """A recipe is for a generator trained in the run; starter weights keep their own."""
    from shared.workflow.design import generator_source

    for study in studies:
        for bundle in GENERATOR_BUNDLES[study]:
            if bundle in settings.generator_recipes and generator_source(settings, study, bundle) == "starter":
                raise InputError(
                    f"generators.{bundle}.preset: {bundle} is not trained in this run (its starter weights are "
                    f"used); give data.{study}.pool or generators_from: real to train it"
                )


def scale_study_file(scale: str) -> Path:
    """The shipped study file of a scale (``--scale demo`` runs ``scripts/studies/demo.yaml``)."""
    if scale not in SCALES:
        raise InputError(f"--scale {scale!r}: expected one of {', '.join(SCALES)}")
    return SHIPPED_STUDIES / f"{scale}.yaml"


def load_study(
    path: str | os.PathLike, settings: Mapping[str, Any] | None = None, studies: Sequence[str] | None = None
) -> Study:
    """Read and check a study file as a whole (see the module docstring); nothing is written.

    Args:
        path: the study file.
        settings: values over the file's ``settings`` (the main command's flags over a shipped file).
        studies: the studies to run in place of the file's ``studies`` (``[]``: the data only).

    Raises:
        InputError: one line naming the key or file at fault.
    """
    path = Path(path).resolve()
    content = read_study_file(path)
    _unknown(content, TOP_KEYS, str(path.name))
    scale = content.get("defaults", "demo")
    if scale not in SCALES:
        raise InputError(f"defaults: {scale!r} is not a scale, expected one of {', '.join(SCALES)}")
    studies = content.get("studies", list(STUDIES)) if studies is None else studies
    studies = [studies] if isinstance(studies, str) else studies
    if not isinstance(studies, Sequence) or any(s not in STUDIES for s in studies):
        raise InputError(f"studies: expected some of {', '.join(STUDIES)} ([]: the data only), got {studies!r}")
    studies = [s for s in STUDIES if s in studies]
    flags = {**_mapping(content.get("settings"), "settings"), **(settings or {})}
    _unknown(flags, list(SCALES[scale]), "settings")
    data = _mapping(content.get("data"), "data")
    _unknown(data, studies, "data")
    for study in data:
        overlap = [key for key in DATA_SETTINGS[study] if key in flags]
        if overlap:
            raise InputError(f"settings.{overlap[0]}: set by data.{study} (its grid and sets), not a setting here")
    base = path.parent
    named = _mapping(content.get("generators"), "generators")
    with_weights = [bundle for bundle, entry in named.items() if isinstance(entry, Mapping) and "weights" in entry]
    if with_weights and flags.get("generators_from", SCALES[scale]["generators_from"]) == "real":
        raise InputError(
            f"generators.{with_weights[0]}: named weights, but generators_from real trains every generator "
            "on the real set; remove one of the two"
        )
    weights, recipes = _generators(named, studies, base)
    try:
        settings = resolve_settings(scale, **flags)
    except InputError as error:
        raise InputError(f"settings: {error}".replace("settings: --", "settings.")) from None
    user = {}
    for study, entries in data.items():
        working = settings.tumours.prepared_shape if study == "tumours" else None
        user[study] = _user_sets(study, _mapping(entries, f"data.{study}"), base, working)
    settings = replace(with_user_data(settings, user, weights), generator_recipes=recipes)
    _check_trained(settings, studies)
    from shared.workflow.design import plan_study
    from shared.workflow.ledger import check_unseen

    for study in studies:  # no hold-out subject in any ledger the design gives (the weights' included)
        plan = plan_study(settings, study)
        check_unseen(plan.holdout, plan.ledgers(), f"data.{study}.holdout")
    resolved = resolved_study(scale, studies, flags, user, weights, recipes, settings)
    return Study(settings, tuple(studies), resolved, path)


def with_user_data(
    settings: StudySettings, user: Mapping[str, Mapping[str, UserSet]], weights: Mapping[str, str]
) -> StudySettings:
    """``settings`` with the user's sets in place of the demo recipes, and the named generator weights."""
    changes: dict[str, Any] = {"generator_weights": dict(weights)}
    pools = {}
    if "ventricles" in user:
        sets = user["ventricles"]
        changes.update(brains=sets["real"], ventricle_holdout=(sets["holdout"],))
        if "pool" in sets:
            pools["ventricles"] = sets["pool"]
    if "tumours" in user:
        sets = user["tumours"]
        changes.update(tumours=sets["real"], tumour_holdout=(sets["holdout"],))
        if "pool" in sets:
            pools["tumours"] = sets["pool"]
    return replace(settings, pools=pools, **changes)


def _plain(value: Any) -> Any:
    """Tuples as lists, mappings as dicts (YAML-friendly)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def resolved_study(
    scale: str, studies: Sequence[str], flags: Mapping[str, Any], user: Mapping[str, Mapping[str, UserSet]],
    weights: Mapping[str, str], recipes: Mapping[str, Mapping[str, Any]], settings: StudySettings,
) -> dict[str, Any]:  # fmt: skip
    """The study file with every default filled in (absolute paths, the grid found from the images)."""
    values = {key: value for key, value in {**SCALES[scale], **flags}.items()}
    for study in user:
        for key in DATA_SETTINGS[study]:
            values.pop(key, None)
    data = {}
    for study, sets in user.items():
        real = sets["real"]
        entry: dict[str, Any] = {role: user_set.source for role, user_set in sets.items()}
        entry.update(layout=real.layout, grid={"shape": list(real.shape), "spacing": list(real.spacing)},
                     skip_bad=real.skip_bad, validation_fraction=real.validation_fraction)  # fmt: skip
        if study == "tumours":
            entry["tumour_ids"] = list(real.tumour_ids)
        data[study] = entry
    resolved: dict[str, Any] = {"defaults": scale, "studies": list(studies), "settings": _plain(values)}
    if data:
        resolved["data"] = data
    generators = {**{bundle: {"weights": folder} for bundle, folder in weights.items()}, **_plain(recipes)}
    if generators:
        resolved["generators"] = generators
    return resolved


def write_resolved(study: Study, output_dir: Path) -> Path:
    """``<output_dir>/study.yaml``: the study as run (a study file itself)."""
    from shared.io import atomic_path

    target = output_dir / "study.yaml"
    header = f"# {study.path}, with every default filled in: rerun with --study {target}\n"
    with atomic_path(target) as temporary:
        temporary.write_text(header + yaml.safe_dump(study.resolved, sort_keys=False))
    return target
