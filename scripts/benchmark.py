"""Sampling benchmark of the three bundles: seconds per volume, per step and for decoding, FLOPs,
peak memory, and the fast path's speed-up and accuracy against eager fp32 (same seed, same noise).

Usage (from the project root)::

    python scripts/benchmark.py run                                  # demo size, fp32 vs fast, 3 runs
    python scripts/benchmark.py run --sizes paper --runs 1 --warmup 0
    python scripts/benchmark.py run --bundles slice_based_ldm_brats --variants fp32,bf16,fast,compiled
    python scripts/benchmark.py run --demo_models outputs/demo/models     # trained demo weights
    python scripts/benchmark.py run --device cuda --variants fp32,fast,fp16
    python scripts/benchmark.py one slice_based_ldm_brats --size demo --precision bf16 --steps 5
    python scripts/benchmark.py assembly --cases 16 --runs 3    # nnU-Net set assembly vs bare nibabel
    python scripts/benchmark.py solvers                 # paper size: the papers' samplers vs fewer-step recipes

``run`` measures every bundle x size x variant in its own process (so the peak RSS is that
variant's) and writes ``results.md`` and ``results.csv`` to ``--output_dir`` (default
``benchmarks/results``) with the machine and the exact command. Variants:

- ``fp32``: eager fp32 (the reference);  ``channels_last``: fp32, channels-last;
- ``compiled``: ``channels_last`` + ``torch.compile``;  ``bf16``: bf16 autocast;
- ``fast``: bf16 autocast + channels-last;  ``fast_compiled``: ``fast`` + ``torch.compile``;
- ``fp16``: fp16 autocast + channels-last (CUDA only).

bf16 pays only on CPUs with AVX-512-BF16 or AMX (and on GPUs); on an AVX2-only CPU its
convolutions fall back to slow kernels (see ``shared.fast_path.cpu_has_native_bf16``).

``assembly`` times nnU-Net set assembly (``shared.segmentation.nnunet_dataset``) against a bare nibabel load +
save of the same demo files in as many processes, and writes ``assembly.md`` / ``assembly.csv``.

Without ``--demo_models`` the networks have random weights: the timings hold, but the accuracy
columns then compare untrained networks (argmax ties of class logits flip easily).
"""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.bounds import Count, Positive
from shared.cli.runner import run_cli
from shared.io import InputError

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "channels_last": {"channels_last": True},
    "compiled": {"channels_last": True, "compile": True},
    "bf16": {"precision": "bf16"},
    "fast": {"precision": "bf16", "channels_last": True},
    "fast_compiled": {"precision": "bf16", "channels_last": True, "compile": True},
    "fp16": {"precision": "fp16", "channels_last": True},
}
COLUMNS = (
    "bundle", "size", "variant", "shape", "latent", "steps", "parameters_m", "seconds_per_volume", "speedup",
    "seconds_per_step", "decode_seconds", "gflop_per_step", "gflop_per_second", "peak_rss_gb", "peak_gpu_gb",
    "psnr_db", "dice", "runs",
)  # fmt: skip
SAMPLING_NOTES = (
    "seconds_per_volume: median of the runs (sampling + decoding); speedup: against fp32 of the same bundle",
    "and size; psnr_db / dice: the variant's sample against fp32's (same seed and initial noise).",
)
ASSEMBLY_COLUMNS = (
    "kind", "shape", "cases", "workers", "runs", "bare_seconds", "assembly_seconds", "ratio",
    "bare_cases_per_second", "assembly_cases_per_second", "bare_written_mb", "assembly_written_mb",
)  # fmt: skip
ASSEMBLY_NOTES = (
    "bare: nibabel load + save of every image and label, nothing else; assembly: `assemble_dataset`",
    "(validation, label remapping, atomic writes, provenance). Both in the same worker processes, runs",
    "alternating; seconds: medians; ratio: assembly / bare.",
)
SOLVER_COLUMNS = (
    "bundle", "recipe", "guided_evals", "single_evals", "sampling_s", "decode_s", "seconds_per_volume", "speedup",
)  # fmt: skip
SOLVER_COST_COLUMNS = ("bundle", "operation", "seconds", "gflop", "gflop_per_second", "fraction_of_cpu_peak")
SOLVER_NOTES = (
    "seconds_per_volume = guided_evals x (guided step) + single_evals x (single step) + decode, each measured",
    "once per bundle in this run (solver_costs.md); speedup: against the first (the paper's) recipe of the bundle.",
    'Which recipes keep the paper\'s quality: the quality-vs-steps study (README, "Fewer sampling steps").',
)
#: demo dataset kind -> its default grid (the SPADE LDM's and the BraTS grid of the papers)
ASSEMBLY_SHAPES = {"brains": (96, 128, 96), "tumours": (192, 192, 96)}


def _names(value: Any, allowed: Any, what: str) -> list[str]:
    names = list(allowed) if value in (None, "all") else list(value.split(",") if isinstance(value, str) else value)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise InputError(f"--{what}: unknown {', '.join(unknown)}; expected some of {', '.join(allowed)}")
    return names


def one(
    bundle: str,
    size: str = "demo",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    steps: Positive | None = None,
    runs: Positive = 3,
    warmup: Count = 1,
    device: str = "cpu",
    models: str | None = None,
    output: str | None = None,
    count_flops: bool = True,
) -> None:
    """Measure one bundle x size x variant in this process; print the figures as one JSON line.

    Args:
        bundle: ``ventricle_mask_ldm``, ``spade_mri_ldm`` or ``slice_based_ldm_brats``.
        size: ``demo`` or ``paper`` network and grid sizes.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; fp16 on CUDA only).
        channels_last: use the channels-last memory format.
        compile: ``torch.compile`` the networks.
        steps: denoising steps (default: the paper's, 25 / 50 / 50).
        runs: timed runs (median).
        warmup: untimed runs before them.
        device: ``cpu`` or ``cuda[:N]``.
        models: a folder with trained ``<bundle>/model.pt`` and ``model_autoencoder.pt`` (default: random weights).
        output: also save the generated volume here (``.nii.gz``), to compare variants.
        count_flops: count the FLOPs of one step (a little extra time).
    """
    from shared.benchmarks.networks import measure

    figures = measure(bundle, size, precision, channels_last, compile, None, steps, runs, warmup, device, models,
                      output, count_flops)  # fmt: skip
    print(json.dumps(figures))


def _measure_in_subprocess(arguments: list[str]) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "one", *arguments]
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark failed: {shlex.join(command)} (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def write_tables(
    rows: list[dict],
    output_dir: Path,
    machine: dict[str, str],
    command: str,
    columns: tuple[str, ...] = COLUMNS,
    stem: str = "results",
    title: str = "Sampling benchmark",
    notes: tuple[str, ...] = SAMPLING_NOTES,
) -> Path:
    """``<stem>.csv`` (all columns) and ``<stem>.md`` (machine, command, table, notes) in ``output_dir``."""
    from shared.io import atomic_path

    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(output_dir / f"{stem}.csv") as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# {title}",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()),
        "",
        f"Command: `{command}`",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in rows),
        "",
        *notes,
        "",
    ]
    with atomic_path(output_dir / f"{stem}.md") as temporary:
        Path(temporary).write_text("\n".join(lines))
    return output_dir / f"{stem}.md"


def run(
    bundles: str | Sequence[str] = "all",
    sizes: str | Sequence[str] = "demo",
    variants: str | Sequence[str] = "fp32,fast",
    runs: Positive = 3,
    warmup: Count = 1,
    steps: Positive | None = None,
    device: str = "cpu",
    demo_models: str | None = None,
    output_dir: str = "benchmarks/results",
) -> str:
    """Measure every bundle x size x variant (each in its own process); write and print the results table.

    Args:
        bundles: comma-separated bundle names, or ``all``.
        sizes: ``paper``, ``demo`` or both (comma-separated).
        variants: comma-separated names of ``VARIANTS``; ``fp32`` first is the reference.
        runs: timed runs per variant (median).
        warmup: untimed runs before the timed ones.
        steps: denoising steps (default: the paper's, 25 / 50 / 50).
        device: ``cpu`` or ``cuda[:N]``.
        demo_models: a folder with ``<bundle>/model.pt`` and ``model_autoencoder.pt`` for the demo size
            (e.g. the main command's ``outputs/<run>/models``).
        output_dir: where ``results.md`` and ``results.csv`` go.
    """
    import torch
    from tqdm.auto import tqdm

    from shared.benchmarks.networks import BUNDLES, SIZES, compare_decoded, machine_description

    bundle_names, size_names = _names(bundles, BUNDLES, "bundles"), _names(sizes, SIZES, "sizes")
    variant_names = _names(variants, VARIANTS, "variants")
    command = shlex.join(["python", "scripts/benchmark.py", *sys.argv[1:]])
    rows: list[dict] = []
    jobs = [(b, s, v) for b in bundle_names for s in size_names for v in variant_names]
    with tempfile.TemporaryDirectory() as scratch:
        for bundle, size, variant in tqdm(jobs, desc="benchmark", unit="variant"):
            arguments = [bundle, "--size", size, "--runs", str(runs), "--warmup", str(warmup), "--device", device,
                         "--output", f"{scratch}/{bundle}_{size}_{variant}.pt"]  # fmt: skip
            arguments += [f"--{key}={value}" for key, value in VARIANTS[variant].items()]
            arguments += ["--steps", str(steps)] if steps else []
            arguments += ["--models", str(Path(demo_models) / bundle)] if demo_models and size == "demo" else []
            figures = _measure_in_subprocess(arguments)
            figures["variant"] = variant if variant in ("fp32",) else f"{variant} ({figures['variant']})"
            reference = f"{scratch}/{bundle}_{size}_fp32.pt"
            if variant != "fp32" and Path(reference).is_file():
                baseline = next(r for r in rows if (r["bundle"], r["size"], r["variant"]) == (bundle, size, "fp32"))
                figures["speedup"] = baseline["seconds_per_volume"] / figures["seconds_per_volume"]
                ours = torch.load(f"{scratch}/{bundle}_{size}_{variant}.pt")
                figures.update(compare_decoded(torch.load(reference), ours, figures["output"]))
            rows.append(figures)
            tqdm.write(f"{bundle} {size} {figures['variant']}: {figures['seconds_per_volume']:.2f} s / volume")
    table = write_tables(rows, Path(output_dir), machine_description(device), command)
    print(table.read_text())
    return str(table)


def solvers(
    bundles: str | Sequence[str] = "all",
    size: str = "paper",
    runs: Positive = 1,
    warmup: Count = 1,
    device: str = "cpu",
    output_dir: str = "benchmarks/results",
) -> str:
    """Seconds per volume of the papers' samplers against the fewer-step recipes, same networks, one run.

    Times one network evaluation (guided and single for the mask LDM), one decode (and, for the
    slice-based LDM, a compiled decode) per bundle, composes each recipe of
    ``shared.benchmarks.solver_speed.RECIPES`` from them, and writes ``solvers.md`` / ``solvers.csv``
    (recipes, ratios) and ``solver_costs.csv`` (FLOPs, FLOP/s, fraction of the CPU's fp32 peak).

    Args:
        bundles: comma-separated bundle names, or ``all``.
        size: ``paper`` (default) or ``demo``.
        runs: timed calls per operation (median).
        warmup: untimed calls before the timed ones.
        device: ``cpu`` or ``cuda[:N]``.
        output_dir: where the tables go.
    """
    from tqdm.auto import tqdm

    from shared.benchmarks.networks import BUNDLES, SIZES, machine_description
    from shared.benchmarks.solver_speed import cost_rows, measure_costs, recipe_rows

    bundle_names = _names(bundles, BUNDLES, "bundles")
    _names(size, SIZES, "size")
    command = shlex.join(["python", "scripts/benchmark.py", *sys.argv[1:]])
    recipes, costs = [], []
    for bundle in tqdm(bundle_names, desc="solvers", unit="bundle"):
        measured = measure_costs(bundle, size, device, runs, warmup)
        recipes += recipe_rows(measured)
        costs += cost_rows(measured)
        mine = [r for r in recipes if r["bundle"] == bundle]
        tqdm.write(f"{bundle}: " + ", ".join(f"{r['recipe']} {r['seconds_per_volume']:.0f} s" for r in mine))
    machine = machine_description(device)
    write_tables(costs, Path(output_dir), machine, command, SOLVER_COST_COLUMNS, "solver_costs",
                 "Cost of one network evaluation and one decode", ())  # fmt: skip
    table = write_tables(recipes, Path(output_dir), machine, command, SOLVER_COLUMNS, "solvers",
                         "Seconds per volume: the papers' samplers and fewer-step recipes", SOLVER_NOTES)  # fmt: skip
    print(table.read_text())
    print((Path(output_dir) / "solver_costs.md").read_text())
    return str(table)


def assembly(
    kinds: str | Sequence[str] = "brains,tumours",
    cases: Positive = 16,
    shape: Sequence[Positive] | None = None,
    runs: Positive = 3,
    workers: Positive = 2,
    seed: Count = 0,
    output_dir: str = "benchmarks/results",
) -> str:
    """nnU-Net set assembly against a bare nibabel load + save loop over the same files; writes ``assembly.md``.

    Args:
        kinds: demo datasets to assemble, ``brains`` (ventricle labels) and/or ``tumours`` (whole tumour).
        cases: pairs per dataset (generated once per kind, in a temporary folder).
        shape: grid ``X,Y,Z`` for every kind (default: 96,128,96 for brains, 192,192,96 for tumours).
        runs: timed runs of each (median), alternating.
        workers: processes of both (2 = both cores here).
        seed: demo data seed.
        output_dir: where ``assembly.md`` and ``assembly.csv`` go.
    """
    from tqdm.auto import tqdm

    from shared.benchmarks.assembly import KIND_LABELS, measure_assembly, write_demo_pairs
    from shared.benchmarks.networks import machine_description

    kind_names = _names(kinds, KIND_LABELS, "kinds")
    command = shlex.join(["python", "scripts/benchmark.py", *sys.argv[1:]])
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for kind in tqdm(kind_names, desc="assembly benchmark", unit="dataset"):
            sizes = shape.split(",") if isinstance(shape, str) else shape or ASSEMBLY_SHAPES[kind]
            grid = tuple(int(v) for v in sizes)
            datalist = write_demo_pairs(Path(scratch) / kind, kind, cases, grid, seed)
            figures = measure_assembly(datalist, KIND_LABELS[kind], runs, workers, scratch)
            rows.append({"kind": kind, "shape": "x".join(map(str, grid)), **figures})
            tqdm.write(f"{kind}: bare {figures['bare_seconds']:.2f} s, assembly {figures['assembly_seconds']:.2f} s "
                       f"({figures['ratio']:.2f}x)")  # fmt: skip
    table = write_tables(rows, Path(output_dir), machine_description("cpu"), command, ASSEMBLY_COLUMNS, "assembly",
                         "nnU-Net set assembly throughput", ASSEMBLY_NOTES)  # fmt: skip
    print(table.read_text())
    return str(table)


if __name__ == "__main__":
    run_cli({"run": run, "one": one, "assembly": assembly, "solvers": solvers})
