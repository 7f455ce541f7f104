"""Generation split over torchrun ranks, resumable after a kill, merged into one manifest.

Sample ``i`` always uses seed ``base + i`` and the ``i``-th request, and samples are grouped in
batches by index (batch ``b`` holds samples ``b * batch_size ...``), so what a sample's files
contain depends neither on the number of ranks nor on which rank made it. Rank ``r`` of ``K``
makes batches ``r, r + K, r + 2K, ...``.

Every finished sample leaves a small record, ``<output_dir>/.samples/<name>.json`` (written
atomically after its volumes), holding its manifest row and the settings that made it. A rerun
with the same settings skips the samples whose record and files are there, so a run killed at
any point (``kill -9`` included) resumes where it stopped; a record of other settings is redone.
When every rank is done, rank 0 alone writes the manifest (atomically, rows in sample order)
and the mosaic from the records and the files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from shared import distributed
from shared.io import InputError, atomic_path

RECORDS = ".samples"


class SampleLedger:
    """The finished samples of one generation run in ``output_dir``.

    Args:
        output_dir: the run's output folder.
        settings: what makes a sample (sampler, steps, guidance, seed, ...): JSON-serialisable;
            a record made with other settings does not count as finished.
    """

    def __init__(self, output_dir: str | os.PathLike, settings: Mapping[str, Any]):
        self.output_dir = Path(output_dir)
        self.settings = json.loads(json.dumps(dict(settings), default=str))
        self.folder = self.output_dir / RECORDS

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def finished(self, name: str, request: Any = None) -> dict[str, Any] | None:
        """The manifest row of sample ``name`` if finished with these settings and ``request`` (files present)."""
        try:
            record = json.loads(self._path(name).read_text())
        except (OSError, ValueError):
            return None
        if record.get("settings") != self.settings or record.get("request") != _plain(request):
            return None
        if not all((self.output_dir / f).is_file() for f in record.get("files", [])):
            return None
        return record["row"]

    def mark(self, name: str, row: Mapping[str, Any], files: Sequence[str], request: Any = None) -> None:
        """Record sample ``name`` as finished: its manifest ``row``, its ``files`` (relative paths), its ``request``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"settings": self.settings, "request": _plain(request), "row": _plain(dict(row)), "files": list(files)}
        with atomic_path(self._path(name)) as tmp:
            tmp.write_text(json.dumps(record))

    def rows(self, names: Sequence[str], requests: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """The rows of ``names`` in that order; every one must be finished."""
        requests = requests if requests is not None else [None] * len(names)
        rows = [self.finished(name, request) for name, request in zip(names, requests)]
        missing = [name for name, row in zip(names, rows) if row is None]
        if missing:
            raise InputError(f"{self.output_dir}: {len(missing)} samples not finished (first: {missing[0]})")
        return rows  # type: ignore[return-value]


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (numpy scalars and arrays as Python numbers and lists)."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def weights_fingerprint(*networks: Any) -> str:
    """sha256 of the networks' parameters and buffers (which weights made a sample)."""
    import hashlib

    digest = hashlib.sha256()
    for network in networks:
        for key, tensor in network.state_dict().items():
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def batches_of_this_rank(num_samples: int, batch_size: int) -> list[range]:
    """The index batches this rank makes: batch ``b`` (samples ``b*batch_size`` on) when ``b % world == rank``."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    starts = range(0, num_samples, batch_size)
    rank, world = distributed.rank(), distributed.world_size()
    return [range(s, min(s + batch_size, num_samples)) for b, s in enumerate(starts) if b % world == rank]


def unfinished(ledger: SampleLedger, batch: range, names: Sequence[str], requests: Sequence[Any]) -> bool:
    """True when any sample of ``batch`` is not finished (the whole batch is then made again, for equal batches)."""
    return any(ledger.finished(names[i], requests[i]) is None for i in batch)


def sampling_settings(inferer: Any, seed: int, batch_size: int, fast_path: Any, *networks: Any, **extra: Any) -> dict:
    """The settings that make a sample's bytes: solver, steps, guidance, seed, batching, fast path, weights."""
    from shared.sampling.schedulers import sampler_name

    return {
        "sampler": sampler_name(inferer.scheduler),
        "num_inference_steps": inferer.num_inference_steps,
        "guidance_scale": inferer.guidance_scale,
        "guidance_interval": inferer.guidance_interval,
        "seed": seed,
        "batch_size": batch_size,
        "fast_path": fast_path.describe(),
        "weights": weights_fingerprint(*networks),
        **extra,
    }


def write_manifest_when_done(
    ledger: SampleLedger,
    names: Sequence[str],
    requests: Sequence[Any],
    columns: Sequence[str] | Callable[[list[dict[str, Any]]], Sequence[str]],
    mosaic: Callable[[list[dict[str, Any]]], None],
) -> Path:
    """Wait for every rank; on rank 0 write the mosaic (``mosaic(rows)``) and ``manifest.csv``; return its path.

    ``columns``: the manifest's columns, or a function of the rows giving them.
    """
    from shared.io import write_csv

    distributed.barrier()
    manifest = ledger.output_dir / "manifest.csv"
    if distributed.is_rank_zero():
        rows = ledger.rows(names, requests)
        mosaic(rows)
        write_csv(manifest, rows, columns(rows) if callable(columns) else columns)
    distributed.barrier()
    return manifest
