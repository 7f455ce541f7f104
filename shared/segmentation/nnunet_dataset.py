"""nnU-Net v2 raw datasets from real and synthetic image/label pairs (docs/method.md, section 5).

A dataset is assembled in one of three variants:

- ``real``: every real training pair;
- ``synthetic``: synthetic pairs only (all of them, or ``n_synthetic``);
- ``augmented``: every real pair plus ``round(ratio * n_real)`` synthetic pairs.

Labels are remapped to a small consecutive label set (binary ventricles, whole tumour, or a
user mapping, see :func:`label_mapping`); a hold-out set goes to ``imagesTs`` / ``labelsTs``.
Each dataset folder holds nnU-Net's ``dataset.json`` and a ``provenance.csv`` (case, origin,
split, source files, foreground volume, the generator's conditions). The folder is built
under a hidden temporary name and renamed into place at the end, so an interrupted run never
leaves a half-written dataset where nnU-Net would find it.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.bounds import Count, DatasetId, NonNegative
from shared.io import (
    InputError,
    item_subject,
    list_volumes,
    load_pair,
    read_csv,
    read_datalist,
    read_json,
    save_volume,
    write_csv,
    write_json,
)
from shared.labels import VENTRICLE_LABEL_IDS
from shared.processes import die_with_parent

logger = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("real", "synthetic", "augmented")
#: Built-in label mappings: output label name -> source label ids (``None``: every label > 0).
BUILTIN_MAPPINGS: dict[str, dict[str, list[int] | None]] = {
    "ventricles": {"ventricles": list(VENTRICLE_LABEL_IDS)},
    "whole_tumour": {"whole_tumour": None},
    "binary": {"foreground": None},
}
FILE_ENDING = ".nii.gz"
PROVENANCE_COLUMNS = ("case", "origin", "split", "image_source", "label_source", "foreground_ml")


@dataclass(frozen=True)
class PairSource:
    """One image/label pair to copy into a dataset.

    Attributes:
        image: image file (any 3D NIfTI/MGZ).
        label: its label map, on the same grid.
        origin: ``"real"`` or ``"synthetic"``.
        conditions: generator conditions (manifest columns) kept for the provenance table.
    """

    image: Path
    label: Path
    origin: str
    conditions: dict[str, str] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        """The case name: its ``case`` (manifest column or datalist field), else the label file name without suffix."""
        if self.conditions.get("case"):
            return str(self.conditions["case"])
        name = self.label.name
        for suffix in (".nii.gz", ".nii", ".mgz"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name


def label_mapping(labels: str | Mapping[str, Sequence[int] | None] | os.PathLike) -> dict[str, list[int] | None]:
    """The remapping as ``{output name: source ids}``; output ids are 1, 2, ... in that order.

    Args:
        labels: ``"ventricles"`` (FreeSurfer ventricle ids -> 1), ``"whole_tumour"`` or
            ``"binary"`` (every label > 0 -> 1), a mapping such as
            ``{"ventricles": [4, 43, 5, 44, 14, 15], "hippocampus": [17, 53]}`` (``None`` as ids:
            every label > 0), or the path of a JSON file holding such a mapping. Source labels
            not listed become background.
    """
    if isinstance(labels, str) and labels in BUILTIN_MAPPINGS:
        return dict(BUILTIN_MAPPINGS[labels])
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if path.suffix.lower() != ".json":
            raise InputError(
                f"{labels}: unknown label mapping; use one of {', '.join(BUILTIN_MAPPINGS)} or a JSON file"
            )
        labels = read_json(path)
        origin = str(path)
    else:
        origin = "label mapping"
    if not isinstance(labels, Mapping) or not labels:
        raise InputError(f"{origin}: label mapping must be a non-empty object of name -> list of label ids")
    mapping: dict[str, list[int] | None] = {}
    for name, ids in labels.items():
        if name == "background":
            raise InputError(f"{origin}: 'background' is label 0 and cannot be mapped")
        if ids is not None and (
            isinstance(ids, (str, bytes)) or not all(isinstance(i, (int, np.integer)) and i > 0 for i in ids)
        ):
            raise InputError(f"{origin}: label '{name}' must list positive integer ids (or be null for all > 0)")
        mapping[str(name)] = None if ids is None else [int(i) for i in ids]
    return mapping


def remap_labels(label_map: np.ndarray, mapping: Mapping[str, Sequence[int] | None]) -> np.ndarray:
    """``(X, Y, Z)`` int label map -> ``(X, Y, Z)`` uint8 map with values 0..len(mapping)."""
    out = np.zeros(label_map.shape, dtype=np.uint8)
    for target, ids in enumerate(mapping.values(), start=1):
        out[(label_map > 0) if ids is None else np.isin(label_map, list(ids))] = target
    return out


def _item_names(item: Mapping[str, Any]) -> dict[str, str]:
    """A datalist item's subject, and its ``case`` when it has one (the nnU-Net case name, see :class:`PairSource`)."""
    names = {"subject": item_subject(item)}
    if item.get("case"):
        names["case"] = str(item["case"])
    return names


def _manifest_conditions(row: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in row.items() if key not in ("image", "label")}


def read_pair_sources(
    source: str | os.PathLike, origin: str, sections: Sequence[str] | None = None
) -> list[PairSource]:
    """Image/label pairs named by ``source``, in a stable order.

    Args:
        source: a datalist JSON (items with ``image`` and ``label``), a ``manifest.csv`` of
            generated pairs (``image``, ``label`` relative to it, other columns kept as
            conditions; rows that quality control did not accept, ``qc_status`` other than
            ``accepted``, are skipped), or a folder holding ``images/`` and ``labels/`` (matched by
            file name) or a ``manifest.csv``.
        origin: ``"real"`` or ``"synthetic"``, recorded per case.
        sections: datalist sections to read (default: all).
    """
    source = Path(source)
    if source.is_dir() and (source / "manifest.csv").is_file():
        source = source / "manifest.csv"
    if source.is_file() and source.suffix.lower() == ".csv":
        rows = read_csv(source)
        if rows and not {"image", "label"} <= set(rows[0]):
            raise InputError(f"{source}: manifest needs 'image' and 'label' columns")
        pairs = [
            PairSource(source.parent / r["image"], source.parent / r["label"], origin, _manifest_conditions(r))
            for r in rows
            if r.get("qc_status", "accepted") == "accepted"
        ]
    elif source.is_file() and source.suffix.lower() == ".json":
        items = read_datalist(source, sections)
        missing = [i for i, item in enumerate(items) if "image" not in item or "label" not in item]
        if missing:
            raise InputError(f"{source}: datalist item {missing[0]} lacks 'image' or 'label'")
        pairs = [PairSource(Path(item["image"]), Path(item["label"]), origin, _item_names(item)) for item in items]
    elif source.is_dir():
        images, labels = source / "images", source / "labels"
        if not images.is_dir() or not labels.is_dir():
            raise InputError(f"{source}: expected images/ and labels/ folders, a manifest.csv or a datalist")
        label_files = {p.name: p for p in list_volumes(labels)}
        image_files = {p.name: p for p in list_volumes(images)}
        unmatched = sorted(set(label_files) ^ set(image_files))
        if unmatched:
            raise InputError(f"{source}: images/ and labels/ do not match (e.g. {unmatched[0]})")
        pairs = [PairSource(image_files[name], label_files[name], origin) for name in sorted(label_files)]
    elif not source.exists():
        raise InputError(f"{source}: no such file or folder")
    else:
        raise InputError(f"{source}: expected a folder, a manifest.csv or a datalist JSON")
    if not pairs:
        raise InputError(f"{source}: no image/label pairs")
    for pair in pairs:
        for path in (pair.image, pair.label):
            if not path.is_file():
                raise InputError(f"{path}: no such file (listed in {source})")
    return pairs


def select_training_pairs(
    variant: str,
    real: Sequence[PairSource],
    synthetic: Sequence[PairSource],
    ratio: float = 1.0,
    n_synthetic: int | None = None,
) -> list[PairSource]:
    """The training pairs of one variant (synthetic pairs are taken in their listed order).

    Raises:
        InputError: an unknown variant, a missing source, or too few synthetic pairs.
    """
    if variant not in VARIANTS:
        raise InputError(f"variant '{variant}': expected one of {', '.join(VARIANTS)}")
    if variant in ("real", "augmented") and not real:
        raise InputError(f"variant '{variant}' needs real pairs (--real)")
    if variant in ("synthetic", "augmented") and not synthetic:
        raise InputError(f"variant '{variant}' needs synthetic pairs (--synthetic)")
    if variant == "real":
        return list(real)
    wanted = len(synthetic) if variant == "synthetic" and n_synthetic is None else n_synthetic
    if variant == "augmented" and n_synthetic is None:
        if ratio < 0:
            raise InputError(f"ratio {ratio}: must be >= 0")
        wanted = int(round(ratio * len(real)))
    if wanted > len(synthetic):
        raise InputError(f"variant '{variant}' needs {wanted} synthetic pairs, only {len(synthetic)} given")
    chosen = list(synthetic[:wanted])
    return list(real) + chosen if variant == "augmented" else chosen


def _write_case(job: tuple[PairSource, str, str, Path, dict[str, list[int] | None]]) -> dict[str, Any]:
    """Validate one pair, remap its labels and write it; returns its provenance row (runs in a worker)."""
    pair, case, split, folder, mapping = job
    image, label = load_pair(pair.image, pair.label)
    remapped = remap_labels(label.array, mapping)
    images_dir, labels_dir = ("imagesTr", "labelsTr") if split == "train" else ("imagesTs", "labelsTs")
    save_volume(folder / images_dir / f"{case}_0000{FILE_ENDING}", image.array.astype(np.float32), image.affine)
    save_volume(folder / labels_dir / f"{case}{FILE_ENDING}", remapped, label.affine, dtype=np.uint8)
    foreground_ml = float(np.count_nonzero(remapped)) * label.voxel_volume_mm3 / 1000.0
    return {
        "case": case,
        "origin": pair.origin,
        "split": split,
        "image_source": str(pair.image),
        "label_source": str(pair.label),
        "foreground_ml": round(foreground_ml, 3),
        **{key: value for key, value in pair.conditions.items() if key != "case"},  # the case is named above
    }


def dataset_folder(nnunet_raw: str | os.PathLike, dataset_id: int, name: str) -> Path:
    """nnU-Net's folder for a dataset: ``<nnunet_raw>/Dataset<id, 3 digits>_<name>``."""
    return Path(nnunet_raw) / f"Dataset{int(dataset_id):03d}_{name}"


def dataset_id_of(folder: str | os.PathLike) -> int:
    """The id of a ``Dataset<id>_<name>`` folder."""
    return int(Path(folder).name[len("Dataset") : len("Dataset") + 3])


def variant_name(name: str, variant: str) -> str:
    """The dataset name of one variant: ``name`` + the variant in CamelCase (``DemoVentricles`` + ``pool_augmented``
    -> ``DemoVentriclesPoolAugmented``). The one naming rule of variant sets, here and in the studies."""
    return name + "".join(part.capitalize() for part in variant.split("_"))


def variant_datasets(dataset_id: int, name: str, variants: Sequence[str] = VARIANTS) -> dict[str, tuple[int, str]]:
    """``{variant: (id, name)}`` of :func:`assemble_variants`: consecutive ids, names :func:`variant_name`."""
    return {v: (int(dataset_id) + i, variant_name(name, v)) for i, v in enumerate(variants)}


def existing_dataset_folders(nnunet_raw: Path, dataset_id: int) -> list[Path]:
    """Folders of ``nnunet_raw`` that nnU-Net would take for ``dataset_id`` (``DatasetXXX_*``)."""
    if not nnunet_raw.is_dir():
        return []
    return sorted(p for p in nnunet_raw.iterdir() if p.is_dir() and p.name.startswith(f"Dataset{dataset_id:03d}_"))


def dataset_json(mapping: Mapping[str, Any], channel_name: str, num_training: int, **extra: Any) -> dict[str, Any]:
    """nnU-Net v2 ``dataset.json`` content for one image channel and the remapped labels."""
    return {
        "channel_names": {"0": channel_name},
        "labels": {"background": 0, **{name: i for i, name in enumerate(mapping, start=1)}},
        "numTraining": num_training,
        "file_ending": FILE_ENDING,
        **extra,
    }


def assemble_dataset(
    variant: str,
    dataset_id: DatasetId,
    name: str,
    real: str | os.PathLike | None = None,
    synthetic: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
    ratio: NonNegative = 1.0,
    n_synthetic: Count | None = None,
    labels: str | Mapping[str, Sequence[int] | None] = "binary",
    channel_name: str = "FLAIR",
    nnunet_raw: str | os.PathLike | None = None,
    real_sections: Sequence[str] | None = None,
    overwrite: bool = False,
    num_workers: Count = 2,
    progress: bool = True,
) -> Path:
    """Write ``<nnunet_raw>/Dataset<id>_<name>``; returns its folder.

    Args:
        variant: ``real``, ``synthetic`` or ``augmented``.
        dataset_id: nnU-Net dataset id (1-999).
        name: dataset name (letters, digits, ``_`` or ``-``).
        real: real training pairs (see :func:`read_pair_sources`).
        synthetic: synthetic pairs, e.g. a generation folder with its ``manifest.csv``.
        test: hold-out pairs for ``imagesTs`` / ``labelsTs`` (never used for training).
        ratio: synthetic:real ratio of the ``augmented`` variant.
        n_synthetic: exact number of synthetic pairs (overrides ``ratio``).
        labels: label remapping (:func:`label_mapping`).
        channel_name: the image channel's name in ``dataset.json``.
        nnunet_raw: nnU-Net's raw folder (default: the ``nnUNet_raw`` environment variable).
        real_sections: datalist sections of ``real`` to use (default: all).
        overwrite: replace an existing dataset with this id; otherwise refuse.
        num_workers: processes that validate and write cases.
        progress: show a progress bar.
    """
    plan = plan_dataset(
        variant, dataset_id, name, real, synthetic, test, ratio, n_synthetic, labels, channel_name, nnunet_raw,
        real_sections, overwrite,
    )  # fmt: skip
    build_partial(plan, num_workers, progress)
    commit_datasets([plan])
    return plan.folder


@dataclass
class DatasetPlan:
    """Everything checked about one dataset before a file of it is written.

    Attributes:
        folder: ``<nnunet_raw>/Dataset<id>_<name>``, written last by a rename.
        partial: the hidden folder it is built in.
        existing: folders with the same id that ``overwrite`` replaces.
        jobs: ``(pair, case name, split)`` of every case.
    """

    variant: str
    name: str
    channel_name: str
    folder: Path
    partial: Path
    existing: list[Path]
    mapping: dict[str, list[int] | None]
    training: list[PairSource]
    test_pairs: list[PairSource]
    jobs: list[tuple[PairSource, str, str]]


def plan_dataset(
    variant: str,
    dataset_id: int,
    name: str,
    real: str | os.PathLike | None = None,
    synthetic: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
    ratio: float = 1.0,
    n_synthetic: int | None = None,
    labels: str | Mapping[str, Sequence[int] | None] = "binary",
    channel_name: str = "FLAIR",
    nnunet_raw: str | os.PathLike | None = None,
    real_sections: Sequence[str] | None = None,
    overwrite: bool = False,
) -> DatasetPlan:
    """Check the arguments and inputs of :func:`assemble_dataset` and list its cases; writes nothing."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, (int, np.integer)) or not 1 <= dataset_id <= 999:
        raise InputError(f"dataset id {dataset_id!r}: must be a whole number between 1 and 999")
    if not name or not all(ch.isalnum() or ch in "_-" for ch in name):
        raise InputError(f"dataset name '{name}': use letters, digits, '_' or '-'")
    if n_synthetic is not None and n_synthetic < 0:
        raise InputError(f"--n_synthetic {n_synthetic}: must be >= 0")
    raw_root = nnunet_raw if nnunet_raw is not None else os.environ.get("nnUNet_raw")  # noqa: SIM112 (nnU-Net's own name)
    if not raw_root:
        raise InputError("nnUNet_raw: not set; pass --nnunet_raw or set the environment variable")
    raw_root = Path(raw_root)
    if raw_root.exists() and not raw_root.is_dir():
        raise InputError(f"{raw_root}: is a file, expected the nnU-Net raw folder")
    mapping = label_mapping(labels)
    real_pairs = read_pair_sources(real, "real", real_sections) if real is not None else []
    synthetic_pairs = read_pair_sources(synthetic, "synthetic") if synthetic is not None else []
    training = select_training_pairs(variant, real_pairs, synthetic_pairs, ratio, n_synthetic)
    if not training:
        raise InputError(f"variant '{variant}': no training pairs selected (n_synthetic {n_synthetic}, ratio {ratio})")
    test_pairs = read_pair_sources(test, "real") if test is not None else []

    folder = dataset_folder(raw_root, int(dataset_id), name)
    existing = existing_dataset_folders(raw_root, int(dataset_id))
    if existing and not overwrite:
        raise InputError(f"{existing[0]}: dataset id {dataset_id} exists already; pass --overwrite to replace it")

    jobs = []
    for split, pairs in (("train", training), ("test", test_pairs)):
        seen: set[str] = set()
        for pair in pairs:
            prefix = "test" if split == "test" else {"synthetic": "syn"}.get(pair.origin, pair.origin)
            case = f"{prefix}_{pair.stem}"
            if case in seen:
                raise InputError(f"{pair.label}: case name '{case}' appears twice in the {split} pairs")
            seen.add(case)
            jobs.append((pair, case, split))
    partial = raw_root / f".{folder.name}.partial"
    return DatasetPlan(variant, name, channel_name, folder, partial, existing, mapping, training, test_pairs, jobs)


def build_partial(plan: DatasetPlan, num_workers: int = 2, progress: bool = True) -> None:
    """Write every case of ``plan`` into its hidden partial folder (removed again on any failure).

    Raises:
        InputError: a pair is unreadable, or the label mapping leaves every training label map empty.
    """
    shutil.rmtree(plan.partial, ignore_errors=True)  # left by an interrupted run
    try:
        rows = _write_partial_dataset(
            plan.partial, plan.jobs, plan.mapping, plan.variant, plan.name, plan.channel_name, plan.training,
            plan.test_pairs, num_workers, progress,
        )  # fmt: skip
        if not any(float(row["foreground_ml"]) > 0 for row in rows if row["split"] == "train"):
            raise InputError(
                f"--labels {dict(plan.mapping)}: no voxel of any training label map has these labels "
                f"(every case would be background only)"
            )
    except BaseException:  # Ctrl-C included: nothing half-written stays behind
        shutil.rmtree(plan.partial, ignore_errors=True)
        raise


def commit_datasets(plans: Sequence[DatasetPlan]) -> None:
    """Rename built partial folders into place, replacing the folders they overwrite."""
    for plan in plans:
        for old in plan.existing:
            shutil.rmtree(old)
            logger.info("replaced %s", old)
        plan.partial.rename(plan.folder)
        logger.info("%s: %d training and %d test cases", plan.folder, len(plan.training), len(plan.test_pairs))


def _write_partial_dataset(
    partial: Path,
    jobs: Sequence[tuple[PairSource, str, str]],
    mapping: dict[str, list[int] | None],
    variant: str,
    name: str,
    channel_name: str,
    training: Sequence[PairSource],
    test_pairs: Sequence[PairSource],
    num_workers: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """Cases, ``dataset.json`` and ``provenance.csv`` into the temporary dataset folder ``partial``."""
    for sub in ("imagesTr", "labelsTr") + (("imagesTs", "labelsTs") if test_pairs else ()):
        (partial / sub).mkdir(parents=True, exist_ok=True)
    rows = _run_jobs([(pair, case, split, partial, mapping) for pair, case, split in jobs], num_workers, progress, name)
    n_real = sum(pair.origin == "real" for pair in training)
    write_json(
        partial / "dataset.json",
        dataset_json(
            mapping,
            channel_name,
            len(training),
            name=name,
            description=f"{variant} variant: {n_real} real + {len(training) - n_real} synthetic training pairs",
            numTest=len(test_pairs),
            variant=variant,
            label_sources=dict(mapping),
        ),
    )
    columns = list(PROVENANCE_COLUMNS) + sorted({k for r in rows for k in r} - set(PROVENANCE_COLUMNS))
    write_csv(partial / "provenance.csv", rows, columns)
    return rows


def _run_jobs(jobs: list[tuple], num_workers: int, progress: bool, description: str) -> list[dict[str, Any]]:
    """:func:`_write_case` over ``jobs`` in ``num_workers`` processes (in order), with a progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=description, unit="case", disable=not progress)
    try:
        if num_workers <= 1:
            rows = []
            for job in jobs:
                rows.append(_write_case(job))
                bar.update()
            return rows
        with ProcessPoolExecutor(max_workers=num_workers, initializer=die_with_parent) as pool:
            rows = []
            for row in pool.map(_write_case, jobs, chunksize=1):
                rows.append(row)
                bar.update()
            return rows
    finally:
        bar.close()


def assemble_variants(
    dataset_id: DatasetId,
    name: str,
    real: str | os.PathLike,
    synthetic: str | os.PathLike,
    test: str | os.PathLike | None = None,
    variants: Sequence[str] = VARIANTS,
    **kwargs: Any,
) -> dict[str, Path]:
    """Assemble several variants with consecutive ids (``dataset_id``, ``dataset_id + 1``, ...).

    Names are ``<name>Real``, ``<name>Synthetic``, ``<name>Augmented``. Every variant is checked
    before any is written, and all are renamed into place together at the end: a failure leaves
    no new dataset behind. Returns ``{variant: folder}``.

    Args:
        dataset_id: id of the first variant (1-999); the others take the next ids.
        name: dataset name prefix (letters, digits, ``_`` or ``-``).
        real: real training pairs (see :func:`read_pair_sources`).
        synthetic: synthetic pairs, e.g. a generation folder with its ``manifest.csv``.
        test: hold-out pairs for ``imagesTs`` / ``labelsTs`` of every variant.
        variants: which variants, in id order (``real``, ``synthetic``, ``augmented``).
        **kwargs: further flags of :func:`assemble_dataset` (``ratio``, ``labels``, ``nnunet_raw``,
            ``overwrite``, ``num_workers`` ...), the same for every variant.
    """
    if isinstance(variants, str):
        variants = [v.strip() for v in variants.split(",")]
    if len(set(variants)) != len(variants):
        raise InputError(f"--variants {','.join(variants)}: a variant is listed twice")
    building = {key: kwargs.pop(key) for key in ("num_workers", "progress") if key in kwargs}
    unknown = set(kwargs) - set(inspect.signature(plan_dataset).parameters)
    if unknown:
        raise InputError(f"--{sorted(unknown)[0]}: unknown flag of assemble_nnunet_dataset.py variants")
    plans = {
        variant: plan_dataset(variant, variant_id, variant_name, real, synthetic, test, **kwargs)
        for variant, (variant_id, variant_name) in variant_datasets(dataset_id, name, variants).items()
    }
    try:
        for plan in plans.values():
            build_partial(plan, **building)
    except BaseException:
        for plan in plans.values():
            shutil.rmtree(plan.partial, ignore_errors=True)
        raise
    commit_datasets(list(plans.values()))
    return {variant: plan.folder for variant, plan in plans.items()}
