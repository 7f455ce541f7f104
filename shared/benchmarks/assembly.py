"""Throughput of nnU-Net dataset assembly against a bare nibabel copy of the same files (issue 7).

:func:`measure_assembly` times :func:`shared.segmentation.nnunet_dataset.assemble_dataset` (validation of every
pair, label remapping, atomic writes, provenance table) over a folder of image/label pairs, and,
side by side with the same number of worker processes, the least any tool must do with those
files: :func:`bare_copy`, a ``nibabel.load`` + ``nibabel.save`` of each file, nothing else. The
ratio of the two medians is the price of the checks.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from shared.io import InputError
from shared.segmentation.nnunet_dataset import assemble_dataset, read_pair_sources

#: demo dataset kind -> nnU-Net label mapping used when assembling it
KIND_LABELS = {"brains": "ventricles", "tumours": "whole_tumour"}


def write_demo_pairs(folder: Path, kind: str, n_cases: int, shape: Sequence[int], seed: int = 0) -> Path:
    """``n_cases`` demo pairs of ``kind`` (``brains`` or ``tumours``) on ``shape``; returns the datalist."""
    from shared.demo.dataset import write_brain_dataset, write_tumour_dataset

    writers = {"brains": write_brain_dataset, "tumours": write_tumour_dataset}
    if kind not in writers:
        raise InputError(f"kind '{kind}': expected one of {', '.join(writers)}")
    return writers[kind](folder, n_cases, tuple(int(s) for s in shape), seed=seed, validation_fraction=0.0)


def _copy_files(job: tuple[Path, ...]) -> None:
    """Load and save each ``(source, destination)`` file of one case with nibabel alone."""
    for source, destination in zip(job[0::2], job[1::2]):
        image = nib.load(str(source))
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine, image.header), str(destination))


def _folder_bytes(folder: Path) -> int:
    """Bytes of the volumes under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*.nii.gz"))


def bare_copy(pairs: Sequence[tuple[Path, Path]], output_dir: Path, num_workers: int = 2) -> int:
    """Copy every ``(image, label)`` pair into ``output_dir`` by nibabel load + save, in ``num_workers`` processes.

    Returns:
        Bytes written.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(image, output_dir / f"{i:04d}_0000.nii.gz", label, output_dir / f"{i:04d}.nii.gz")
            for i, (image, label) in enumerate(pairs)]  # fmt: skip
    if num_workers <= 1:
        for job in jobs:
            _copy_files(job)
    else:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            list(pool.map(_copy_files, jobs, chunksize=1))
    return _folder_bytes(output_dir)


def measure_assembly(
    datalist: str | Path, labels: str, runs: int = 3, num_workers: int = 2, scratch: str | Path | None = None
) -> dict[str, Any]:
    """Median seconds of :func:`bare_copy` and of ``assemble_dataset`` over the pairs of ``datalist``.

    The two alternate run by run (so both see the same disk cache). Each run writes a fresh
    folder under ``scratch`` (default: a temporary folder), removed afterwards.

    Returns:
        ``cases``, ``workers``, ``runs``, ``bare_seconds`` / ``assembly_seconds`` (medians),
        ``ratio`` (assembly / bare), ``cases_per_second`` of each and ``written_mb`` of each.
    """
    if runs < 1:
        raise InputError(f"runs {runs}: expected at least 1")
    pairs = [(p.image, p.label) for p in read_pair_sources(datalist, "real")]
    bare_times, assembly_times, bare_bytes, assembly_bytes = [], [], 0, 0
    with tempfile.TemporaryDirectory(dir=scratch) as work:
        for run in range(runs):
            target = Path(work) / f"bare_{run}"
            start = time.perf_counter()
            bare_bytes = bare_copy(pairs, target, num_workers)
            bare_times.append(time.perf_counter() - start)
            shutil.rmtree(target)

            raw = Path(work) / f"raw_{run}"
            start = time.perf_counter()
            folder = assemble_dataset("real", 1, "Benchmark", real=datalist, labels=labels, nnunet_raw=raw,
                                      num_workers=num_workers, progress=False)  # fmt: skip
            assembly_times.append(time.perf_counter() - start)
            assembly_bytes = _folder_bytes(folder)
            shutil.rmtree(raw)
    bare, assembly = statistics.median(bare_times), statistics.median(assembly_times)
    return {
        "cases": len(pairs),
        "workers": num_workers,
        "runs": runs,
        "bare_seconds": bare,
        "assembly_seconds": assembly,
        "ratio": assembly / bare,
        "bare_cases_per_second": len(pairs) / bare,
        "assembly_cases_per_second": len(pairs) / assembly,
        "bare_written_mb": bare_bytes / 1e6,
        "assembly_written_mb": assembly_bytes / 1e6,
    }
