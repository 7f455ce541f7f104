"""Quality control of generated labelled pairs: on-target features and plausible anatomy.

Each pair of a generation manifest is checked against its request and against simple anatomy
rules; a pair that fails any check is *rejected* with every reason, separated by ``; ``:

- **ventricle pairs** (mask LDM + SPADE): achieved ``c`` within ``max_c_error`` of the
  requested one; ICV inside ``icv_range_ml``; the brain (every non-background voxel) one
  connected piece (its largest 26-connected component holds at least
  ``min_brain_component_fraction`` of it); both lateral ventricles present, each mostly one
  piece (``min_ventricle_component_fraction``).
- **tumour pairs** (slice-based LDM): a non-empty mask; at most ``max_tumour_components``
  pieces of at least ``min_piece_voxels``; achieved normalised volume within
  ``max_volume_error`` of the request and centre within ``max_centre_error`` (normalised units).
- **both**: the image holds a brain (:mod:`shared.evaluation.brain_shape`): its intensity brain
  mask within ``brain_ml_range``, no slice-to-slice jump above ``max_slice_jump``, a background
  no brighter than ``max_background`` (border over brain intensity). All three come from the
  real training images (:func:`with_brain_reference`); until they are set the check is off.

:func:`check_manifest` writes the verdicts into the manifest's rows (``qc_status``,
``qc_reason``); nnU-Net set assembly skips rejected rows. The tolerances are parameters
(``scripts/check_pairs.py`` flags).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from shared.io import InputError, load_label_map, read_csv, voxel_volume_mm3, write_csv

ACCEPTED, REJECTED = "accepted", "rejected"
QC_COLUMNS = ("qc_status", "qc_reason")
LATERAL_VENTRICLES = (4, 43)


@dataclass(frozen=True)
class BrainCheck:
    """The brain-shape check of a generated image (:mod:`shared.evaluation.brain_shape`), shared by both kinds of pair.

    Attributes:
        brain_ml_range: accepted volume (mL) of the image's intensity brain mask; set from the real
            images' range times ``brain_tolerance`` (:func:`with_brain_reference`); open until then.
        max_slice_jump: largest accepted slice-to-slice jump; the real images' largest times
            ``slice_jump_tolerance``.
        max_background: largest accepted border-over-brain intensity; the real images' largest times
            ``background_tolerance``.
        brain_tolerance: factors on the real images' smallest and largest brain volume.
        slice_jump_tolerance: factor on the real images' largest slice jump.
        background_tolerance: factor on the real images' largest background ratio.
    """

    brain_ml_range: tuple[float, float] = (0.0, float("inf"))
    max_slice_jump: float = float("inf")
    max_background: float = float("inf")
    brain_tolerance: tuple[float, float] = (0.8, 1.25)
    slice_jump_tolerance: float = 1.5
    background_tolerance: float = 2.0


@dataclass(frozen=True)
class VentricleQC(BrainCheck):
    """Tolerances of ventricle pairs.

    These defaults are the ones every command uses (``scripts/check_pairs.py``, the main
    command's QC rounds); a study scale overrides them only where it says so.

    Attributes:
        icv_range_ml: accepted intracranial volume (mL); the main command and
            ``check_pairs --reference_labels`` set it to ``icv_tolerance`` x the real brains' median.
        max_c_error: largest accepted ``|achieved c - requested c|``.
        min_brain_component_fraction: share of the ICV its largest connected piece must hold.
        min_ventricle_component_fraction: share of each lateral ventricle its largest piece must hold.
        icv_tolerance: factors on the real brains' median ICV that give ``icv_range_ml``.

    The brain-shape check's fields come from :class:`BrainCheck`.
    """

    icv_range_ml: tuple[float, float] = (0.0, float("inf"))
    max_c_error: float = 0.35
    min_brain_component_fraction: float = 0.95
    min_ventricle_component_fraction: float = 0.6
    icv_tolerance: tuple[float, float] = (0.7, 1.4)

    def __post_init__(self) -> None:
        low, high = self.icv_range_ml
        if not 0 <= low < high:
            raise InputError(f"icv_range_ml: need 0 <= low < high, got {self.icv_range_ml}")
        factor_low, factor_high = self.icv_tolerance
        if not 0 <= factor_low < factor_high:
            raise InputError(f"icv_tolerance: need 0 <= low < high, got {self.icv_tolerance}")
        if self.max_c_error < 0:
            raise InputError(f"max_c_error: must be >= 0, got {self.max_c_error}")
        for name in ("min_brain_component_fraction", "min_ventricle_component_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"{name}: must lie in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class TumourQC(BrainCheck):
    """Tolerances of tumour pairs (features in the normaliser's units, 0-1 over the training set).

    The defaults are the ones every command uses (``scripts/check_pairs.py``, the main command).

    Attributes:
        max_volume_error: largest accepted ``|achieved - requested|`` normalised volume.
        max_centre_error: largest accepted distance of the achieved from the requested centre.
        max_tumour_components: most pieces a whole-tumour mask may have.
        min_piece_voxels: pieces smaller than this are ignored when counting.

    The brain-shape check's fields come from :class:`BrainCheck`.
    """

    max_volume_error: float = 0.5
    max_centre_error: float = 0.5
    max_tumour_components: int = 2
    min_piece_voxels: int = 5

    def __post_init__(self) -> None:
        for name in ("max_volume_error", "max_centre_error"):
            if getattr(self, name) < 0:
                raise InputError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.max_tumour_components < 1:
            raise InputError(f"max_tumour_components: must be >= 1, got {self.max_tumour_components}")


QC = TypeVar("QC", "VentricleQC", "TumourQC")


def component_sizes(mask: np.ndarray) -> np.ndarray:
    """Voxel counts of the 26-connected components of a boolean mask, largest first."""
    from scipy import ndimage

    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.bincount(labelled.ravel())[1:])[::-1]


def largest_component_fraction(mask: np.ndarray) -> float:
    """Share of a mask's voxels in its largest connected piece (0 for an empty mask)."""
    sizes = component_sizes(mask)
    return float(sizes[0] / sizes.sum()) if sizes.size else 0.0


def with_brain_reference(qc: QC, images: Sequence[str | os.PathLike]) -> QC:
    """``qc`` with the brain-shape ranges of real ``images`` (their brain volumes and slice jumps, widened
    by ``qc``'s tolerances); see :mod:`shared.evaluation.brain_shape`."""
    from shared.evaluation.brain_shape import brain_reference, measure_brain
    from shared.io import load_image

    shapes = []
    for path in images:
        image = load_image(path)
        shapes.append(measure_brain(image.array, voxel_volume_mm3(image.affine) / 1000.0))
    reference = brain_reference(shapes, qc.brain_tolerance, qc.slice_jump_tolerance, qc.background_tolerance)
    return replace(
        qc,
        brain_ml_range=reference.brain_ml_range,
        max_slice_jump=reference.max_slice_jump,
        max_background=reference.max_background,
    )


def check_brain_image(image_path: Path, qc: QC) -> list[str]:
    """The brain-shape reasons to reject one image (none while ``qc``'s brain ranges are open)."""
    if qc.brain_ml_range == (0.0, float("inf")) and qc.max_slice_jump == qc.max_background == float("inf"):
        return []
    from shared.evaluation.brain_shape import BrainReference, check_brain, measure_brain
    from shared.io import load_image

    image = load_image(image_path)
    shape = measure_brain(image.array, voxel_volume_mm3(image.affine) / 1000.0)
    return check_brain(shape, BrainReference(tuple(qc.brain_ml_range), qc.max_slice_jump, qc.max_background))


def with_reference_icv(qc: VentricleQC, median_icv_ml: float) -> VentricleQC:
    """``qc`` with ``icv_range_ml`` = its ``icv_tolerance`` x the reference brains' median ICV."""
    low, high = qc.icv_tolerance
    return replace(qc, icv_range_ml=(low * float(median_icv_ml), high * float(median_icv_ml)))


def check_ventricle_label_map(
    label_map: np.ndarray, voxel_ml: float, requested_c: float, achieved_c: float, qc: VentricleQC
) -> list[str]:
    """Reasons to reject one generated label map ``(X, Y, Z)`` of FreeSurfer ids (empty: accepted)."""
    reasons = []
    if not abs(achieved_c - requested_c) <= qc.max_c_error:
        reasons.append(f"c {achieved_c:.2f} for requested {requested_c:.2f} (tolerance {qc.max_c_error:g})")
    brain = label_map != 0
    icv_ml = float(brain.sum()) * voxel_ml
    low, high = qc.icv_range_ml
    if not low <= icv_ml <= high:
        reasons.append(f"ICV {icv_ml:.0f} mL outside {low:.0f}-{high:.0f} mL")
    fraction = largest_component_fraction(brain)
    if brain.any() and fraction < qc.min_brain_component_fraction:
        reasons.append(f"brain in pieces (largest holds {fraction:.0%})")
    for label in LATERAL_VENTRICLES:
        ventricle = label_map == label
        if not ventricle.any():
            reasons.append(f"no lateral ventricle {label}")
            continue
        fraction = largest_component_fraction(ventricle)
        if fraction < qc.min_ventricle_component_fraction:
            reasons.append(f"lateral ventricle {label} in pieces (largest holds {fraction:.0%})")
    return reasons


def check_tumour_mask(
    mask: np.ndarray, requested: dict[str, float], achieved: dict[str, float], qc: TumourQC
) -> list[str]:
    """Reasons to reject one generated whole-tumour mask ``(X, Y, Z)`` (empty: accepted).

    ``requested`` / ``achieved``: normalised features by name (``volume``, ``centre_x`` ...).
    """
    mask = mask > 0
    if not mask.any():
        return ["empty mask"]
    reasons = []
    pieces = int((component_sizes(mask) >= qc.min_piece_voxels).sum())
    if pieces > qc.max_tumour_components:
        reasons.append(f"{pieces} tumour pieces (at most {qc.max_tumour_components})")
    volume_error = abs(achieved["volume"] - requested["volume"])
    if not volume_error <= qc.max_volume_error:
        reasons.append(
            f"volume {achieved['volume']:.2f} for requested {requested['volume']:.2f}"
            f" (tolerance {qc.max_volume_error:g})"
        )
    axes = ("centre_x", "centre_y", "centre_z")
    centre_error = float(np.linalg.norm([achieved[a] - requested[a] for a in axes]))
    if not centre_error <= qc.max_centre_error:
        reasons.append(f"centre {centre_error:.2f} from the requested one (tolerance {qc.max_centre_error:g})")
    return reasons


def _float(row: dict[str, str], column: str, manifest: Path) -> float:
    try:
        return float(row[column])
    except (KeyError, ValueError):
        raise InputError(f"{manifest}: row {row.get('label', '?')} has no number in column '{column}'") from None


def check_pair(manifest: Path, row: dict[str, str], kind: str, qc: VentricleQC | TumourQC) -> list[str]:
    """Reasons to reject the pair of one manifest row (paths relative to the manifest's folder)."""
    label = load_label_map(manifest.parent / row["label"])
    brain = check_brain_image(manifest.parent / row["image"], qc)
    if kind == "ventricles":
        assert isinstance(qc, VentricleQC)
        voxel_ml = voxel_volume_mm3(label.affine) / 1000.0
        requested, achieved = _float(row, "requested_c", manifest), _float(row, "achieved_c", manifest)
        return [*check_ventricle_label_map(label.array, voxel_ml, requested, achieved, qc), *brain]
    assert isinstance(qc, TumourQC)
    names = ("volume", "centre_x", "centre_y", "centre_z")
    requested = {n: _float(row, f"requested_{n}", manifest) for n in names}
    achieved = {n: _float(row, f"achieved_{n}", manifest) for n in names}
    return [*check_tumour_mask(label.array, requested, achieved, qc), *brain]


KINDS = ("ventricles", "tumours")


def check_manifest(
    manifest: str | os.PathLike, kind: str, qc: VentricleQC | TumourQC, output: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """QC every pair of a manifest; writes the rows with ``qc_status`` / ``qc_reason`` to ``output``.

    ``output`` defaults to the manifest itself (rewritten atomically). Returns the rows.
    """
    if kind not in KINDS:
        raise InputError(f"kind: unknown '{kind}', expected one of {', '.join(KINDS)}")
    manifest = Path(manifest)
    if manifest.is_dir():
        manifest = manifest / "manifest.csv"
    rows = read_csv(manifest)
    if rows and not {"image", "label"} <= set(rows[0]):
        raise InputError(f"{manifest}: needs 'image' and 'label' columns")
    checked = []
    for row in rows:
        reasons = check_pair(manifest, row, kind, qc)
        checked.append({**row, "qc_status": REJECTED if reasons else ACCEPTED, "qc_reason": "; ".join(reasons)})
    columns = [c for c in (rows[0] if rows else {}) if c not in QC_COLUMNS] + list(QC_COLUMNS)
    write_csv(output or manifest, checked, columns)
    return checked


def rejection_counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many rows were rejected for each kind of reason (the text before its numbers)."""
    counts: dict[str, int] = {}
    for row in rows:
        if row.get("qc_status") != REJECTED:
            continue
        for reason in str(row["qc_reason"]).split("; "):
            key = _reason_kind(reason)
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def _reason_kind(reason: str) -> str:
    """``"ICV 2000 mL outside ..."`` -> ``"ICV outside range"``: a reason without its figures."""
    for prefix, kind in (
        ("c ", "c off target"),
        ("ICV", "ICV outside range"),
        ("brain in pieces", "brain in pieces"),
        ("no lateral ventricle", "missing lateral ventricle"),
        ("lateral ventricle", "lateral ventricle in pieces"),
        ("empty mask", "empty mask"),
        ("volume", "volume off target"),
        ("centre", "centre off target"),
        ("no brain shape", "no brain shape"),
        ("slice jump", "slice jump"),
        ("no dark background", "no dark background"),
    ):
        if reason.startswith(prefix):
            return kind
    return "tumour in pieces" if "tumour pieces" in reason else reason


def qc_settings(kind: str, **tolerances: Any) -> VentricleQC | TumourQC:
    """The tolerance object of ``kind`` with ``tolerances`` (unknown names refused)."""
    cls = VentricleQC if kind == "ventricles" else TumourQC
    known = set(asdict(cls()))
    unknown = sorted(set(tolerances) - known)
    if unknown:
        raise InputError(f"--{unknown[0]}: not a {kind} tolerance (known: {', '.join(sorted(known))})")
    for name in ("icv_range_ml", "icv_tolerance", "brain_ml_range", "brain_tolerance"):
        if name in tolerances:
            tolerances[name] = tuple(float(v) for v in tolerances[name])
    return cls(**tolerances)
