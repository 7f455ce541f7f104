"""Loading with validation, atomic writes, datalists and tables.

Everything that reads user files goes through :func:`load_volume` (or the thin
wrappers :func:`load_image` / :func:`load_label_map` / :func:`load_pair`), so every
component fails the same way on bad input: one :class:`InputError` whose message is a
single line naming the file and the problem.

Volumes are read with nibabel rather than ``monai.transforms.LoadImage`` because MONAI's
nibabel reader rejects big-endian data, which is what FreeSurfer ``.mgz`` files hold.
Every write goes to a temporary file in the destination folder that is renamed into
place, so an interrupted run never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

#: File endings accepted for volumes.
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mgz")

#: Largest difference (in mm, per affine entry) at which two grids still count as equal.
AFFINE_TOLERANCE_MM = 1e-3


class InputError(ValueError):
    """Bad input found at a boundary. ``str(error)`` is one line: ``<file>: <problem>``."""


@dataclass(frozen=True)
class Volume:
    """A 3D array with its voxel-to-world affine.

    Attributes:
        array: voxel data, shape ``(X, Y, Z)``.
        affine: ``(4, 4)`` voxel-to-world (RAS, mm) matrix.
        path: the file it was read from (or will be written to).
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm^3."""
        return voxel_volume_mm3(self.affine)

    def to_ras(self) -> Volume:
        """The same volume with its array axes flipped/permuted to the closest RAS orientation.

        Array-index features (e.g. the tumour centre and bounding box) then mean the same
        anatomical directions whatever the file's orientation (FreeSurfer ``.mgz`` are LIA).
        """
        from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

        transform = ornt_transform(io_orientation(self.affine), axcodes2ornt("RAS"))
        array = apply_orientation(self.array, transform)
        affine = self.affine @ inv_ornt_aff(transform, self.array.shape)
        return Volume(np.ascontiguousarray(array), affine, self.path)


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Volume of one voxel in mm^3: ``|det(affine[:3, :3])|``."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))


def has_volume_suffix(path: str | os.PathLike) -> bool:
    """True when ``path`` ends with one of :data:`VOLUME_SUFFIXES`."""
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def load_volume(path: str | os.PathLike) -> Volume:
    """Read a 3D NIfTI/MGZ volume and check it is usable.

    A singleton 4th axis (``X, Y, Z, 1``) is squeezed away. The returned array is in
    native byte order with its on-disk dtype.

    Raises:
        InputError: missing, unreadable, corrupt or truncated file; not 3D; NaN/Inf
            values; a singular affine.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a volume file")
    if not has_volume_suffix(path):
        raise InputError(f"{path}: unsupported file type, expected one of {', '.join(VOLUME_SUFFIXES)}")
    try:  # nibabel reports an unreadable file as a format error: ask the OS first
        with open(path, "rb"):
            pass
    except PermissionError as error:
        raise InputError(f"{path}: cannot read volume, permission denied") from error
    try:
        image = nib.load(str(path))
        array = np.asarray(image.dataobj)
    except Exception as error:  # nibabel raises many types for corrupt / truncated data
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: cannot read volume, file is corrupt or truncated ({reason})") from error
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(f"{path}: expected a 3D volume, got shape {tuple(array.shape)}")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(f"{path}: contains {bad} NaN/Inf voxel(s)")
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{path}: affine is singular or not finite")
    return Volume(array=array, affine=affine, path=path)


def load_image(path: str | os.PathLike) -> Volume:
    """Read an intensity volume as ``float32`` (see :func:`load_volume` for the checks)."""
    volume = load_volume(path)
    return Volume(array=volume.array.astype(np.float32, copy=False), affine=volume.affine, path=volume.path)


def load_label_map(path: str | os.PathLike, allowed_labels: Iterable[int] | None = None) -> Volume:
    """Read a label map as ``int32`` and check its values.

    Args:
        path: NIfTI/MGZ file.
        allowed_labels: the declared label set; any other value is an error. ``None``
            accepts any non-negative integer.

    Raises:
        InputError: everything :func:`load_volume` rejects, plus non-integer or negative
            values and labels outside ``allowed_labels``.
    """
    volume = load_volume(path)
    array = volume.array
    if np.issubdtype(array.dtype, np.floating) and not np.array_equal(array, np.round(array)):
        raise InputError(f"{path}: label map has non-integer values")
    labels = np.unique(array)
    if labels.size and labels[0] < 0:
        raise InputError(f"{path}: label map has negative values ({int(labels[0])})")
    if allowed_labels is not None:
        unknown = sorted(set(labels.astype(np.int64).tolist()) - {int(v) for v in allowed_labels})
        if unknown:
            shown = ", ".join(str(v) for v in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise InputError(f"{path}: labels outside the declared set: {shown}")
    return Volume(array=array.astype(np.int32, copy=False), affine=volume.affine, path=volume.path)


def check_same_grid(reference: Volume, other: Volume, atol: float = AFFINE_TOLERANCE_MM) -> None:
    """Require ``other`` to lie on the same voxel grid as ``reference``.

    Raises:
        InputError: shapes differ, or affines differ by more than ``atol``.
    """
    if reference.array.shape != other.array.shape:
        raise InputError(
            f"{other.path}: shape {tuple(other.array.shape)} differs from "
            f"{reference.path.name} shape {tuple(reference.array.shape)}"
        )
    if not np.allclose(reference.affine, other.affine, atol=atol, rtol=0):
        diff = float(np.max(np.abs(reference.affine - other.affine)))
        raise InputError(f"{other.path}: affine differs from {reference.path.name} (max difference {diff:.4g} mm)")


def load_pair(
    image_path: str | os.PathLike, label_path: str | os.PathLike, allowed_labels: Iterable[int] | None = None
) -> tuple[Volume, Volume]:
    """Read an image and its label map and check they share one grid."""
    image = load_image(image_path)
    label = load_label_map(label_path, allowed_labels)
    check_same_grid(image, label)
    return image, label


# ----------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the file's ending (so format-sniffing writers such as
    nibabel and matplotlib still work). On an exception it is removed and ``path`` is
    left untouched. The first write into a folder removes the temporaries that killed writers
    left there (:func:`remove_stale_temporaries`).

    Raises:
        InputError: ``path`` is a folder, or its parent is a file.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a file to write")
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"{path.parent}: is a file, expected a folder to write {path.name} in")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden ``.<name>.partial`` folder beside ``folder``; put it at ``folder`` on success.

    What was at ``folder`` is replaced only once the new one is whole (:func:`replace_folder`); on an
    exception the partial folder is removed and ``folder`` is left as it was.

    Raises:
        InputError: ``folder`` is a file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: is a file, expected a folder to write")
    partial = folder.parent / f".{folder.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    replace_folder(partial, folder)


def replace_folder(built: Path, target: Path) -> None:
    """Put the finished folder ``built`` at ``target``, removing what was there (two renames)."""
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    built.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: Folders whose stale temporaries this process has already removed (each is scanned once).
_SWEPT_FOLDERS: set[Path] = set()


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries left in ``folder`` by killed writers (``.tmp-<pid>-<id>-<name>``).

    Only files whose writing process no longer runs are removed, so a concurrent writer keeps
    its temporary. Each folder is scanned once per process (writes into a folder of many files
    stay cheap). Returns the files removed.
    """
    folder = Path(folder)
    if folder in _SWEPT_FOLDERS:
        return []
    _SWEPT_FOLDERS.add(folder)
    removed = []
    for tmp in folder.glob(".tmp-*-*"):
        pid = tmp.name.split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def save_volume(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, dtype: Any = None) -> Path:
    """Write a 3D array as NIfTI (``.nii`` / ``.nii.gz``) atomically, with qform and sform set.

    Args:
        path: destination.
        array: ``(X, Y, Z)`` data.
        affine: ``(4, 4)`` voxel-to-world matrix.
        dtype: on-disk dtype; defaults to the array's.
    """
    path = Path(path)
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"{path}: can only write .nii or .nii.gz")
    data = np.asarray(array if dtype is None else array.astype(dtype))
    image = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return path


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically (indented, keys in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, failing with one line naming it when absent or malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from error
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not valid JSON (not UTF-8 text)") from error
    except PermissionError as error:
        raise InputError(f"{path}: cannot read, permission denied") from error


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write rows (dicts) as CSV atomically; columns default to the first row's keys."""
    columns = list(columns if columns is not None else (rows[0].keys() if rows else []))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV file into a list of dicts (values as strings)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not a CSV of UTF-8 text (byte {error.start} cannot be read)") from error
    except csv.Error as error:
        raise InputError(f"{path}: not a readable CSV ({error})") from error


# ----------------------------------------------------------------------------- listing inputs


def list_volumes(folder: str | os.PathLike) -> list[Path]:
    """Volume files directly inside ``folder``, sorted by name.

    Raises:
        InputError: the folder is missing or holds no volume file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and has_volume_suffix(p) and not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: no volume files ({', '.join(VOLUME_SUFFIXES)}) in folder")
    return files


def write_datalist(path: str | os.PathLike, sections: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Write a MONAI-style datalist (``{"training": [{"image": ..., "label": ...}, ...], ...}``).

    File paths inside items should be relative to the datalist's folder, as
    :func:`monai.data.load_decathlon_datalist` expects.
    """
    return write_json(path, {name: list(items) for name, items in sections.items()})


#: Item fields holding file paths, resolved against the datalist's folder.
DATALIST_PATH_KEYS: tuple[str, ...] = ("image", "label")


def items_relative_to(items: Iterable[Mapping[str, Any]], folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Copies of datalist ``items`` whose file paths (:data:`DATALIST_PATH_KEYS`) are relative to ``folder``.

    For a datalist written in ``folder`` that lists files below it (a combined datalist of several parts).
    """
    root = Path(folder).resolve()
    return [
        {**item, **{key: str(Path(item[key]).resolve().relative_to(root)) for key in DATALIST_PATH_KEYS if key in item}}
        for item in items
    ]


def read_datalist(path: str | os.PathLike, sections: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Items of a MONAI-style datalist with their ``image`` / ``label`` paths made absolute.

    Paths are resolved against the datalist's folder, the convention of
    :func:`monai.data.load_decathlon_datalist` (not called here: importing MONAI costs
    ~10 s, too much for light command-line tools).

    Args:
        path: the datalist JSON.
        sections: which lists to read (e.g. ``["training"]``); ``None`` reads every
            top-level list of items.

    A bare string item (the ``test`` list of a Medical Segmentation Decathlon
    ``dataset.json``) stands for ``{"image": <path>}``, as in MONAI.
    """
    path = Path(path)
    content = read_json(path)
    if not isinstance(content, dict):
        raise InputError(f"{path}: datalist must be a JSON object of lists")
    names = [k for k, v in content.items() if isinstance(v, list)] if sections is None else list(sections)
    items: list[dict[str, Any]] = []
    for name in names:
        if name not in content:
            raise InputError(f"{path}: datalist has no section '{name}'")
        for index, item in enumerate(content[name]):
            if isinstance(item, str):
                item = {"image": item}
            if not isinstance(item, dict):
                raise InputError(f"{path}: item {index} of '{name}' is not an object")
            resolved = dict(item)
            for key in DATALIST_PATH_KEYS:
                if isinstance(item.get(key), str):
                    resolved[key] = str((path.parent / item[key]).resolve())
            items.append(resolved)
    if not items:
        raise InputError(f"{path}: datalist has no items")
    return items


def item_subject(item: Mapping[str, Any]) -> str:
    """The subject a datalist item shows: its ``subject``, else its ``case``, else its label file's name.

    A subject is an anatomy, not a file: data ledgers count subjects, so a hold-out is a set of
    subjects no model saw.
    """
    for key in ("subject", "case"):
        if item.get(key):
            return str(item[key])
    return Path(str(item.get("label") or item.get("image"))).name.split(".")[0]


def resolve_volume_inputs(source: str | os.PathLike, key: str = "label") -> list[Path]:
    """Volume files named by ``source``: a folder of volumes, a datalist JSON, or one file.

    Args:
        source: folder, ``.json`` datalist, or a single volume file.
        key: which item field to take from a datalist (``"label"`` or ``"image"``).
    """
    source = Path(source)
    if source.is_dir():
        return list_volumes(source)
    if source.suffix.lower() == ".json":
        content = read_json(source)
        # sections none of whose items has the key (e.g. an unlabelled "test" list) are not inputs
        sections = [
            name
            for name, value in (content.items() if isinstance(content, dict) else [])
            if isinstance(value, list)
            and any(
                (isinstance(item, dict) and key in item) or (isinstance(item, str) and key == "image") for item in value
            )
        ]
        items = read_datalist(source, sections or None)
        missing = [i for i, item in enumerate(items) if key not in item]
        if missing:
            raise InputError(f"{source}: datalist item {missing[0]} has no '{key}' field")
        wrong = [i for i, item in enumerate(items) if not isinstance(item[key], str)]
        if wrong:
            raise InputError(
                f"{source}: datalist item {wrong[0]}: '{key}' must be a file path (a string), "
                f"got {type(items[wrong[0]][key]).__name__} {items[wrong[0]][key]!r}"
            )
        return [Path(item[key]) for item in items]
    if has_volume_suffix(source):
        if not source.exists():
            raise InputError(f"{source}: no such file")
        return [source]
    raise InputError(f"{source}: not a folder, datalist (.json) or volume file")


def write_grid_reference(volume_path: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Save the grid (shape and affine) of a training volume, so generated volumes get the same one."""
    volume = load_volume(volume_path)
    return write_json(
        output, {"shape": list(volume.array.shape), "affine": volume.affine.tolist(), "source": str(volume_path)}
    )


def read_grid_reference(path: str | os.PathLike) -> tuple[tuple[int, int, int], np.ndarray]:
    """``(shape, affine)`` saved by :func:`write_grid_reference`."""
    data = read_json(path)
    try:
        return tuple(int(n) for n in data["shape"]), np.asarray(data["affine"], dtype=np.float64)  # type: ignore[return-value]
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: not a grid reference file ({error})") from error


def require_files(paths: Iterable[str | os.PathLike], hint: str) -> None:
    """Fail with ``<file>: missing; <hint>`` for the first of ``paths`` that does not exist."""
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"{path}: missing; {hint}")
