"""The sampling benchmark harness (scripts/benchmark.py): one tiny run of the real bundle networks, tables written."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.benchmarks.networks import compare_decoded, synthetic_label_map
from shared.io import InputError, read_csv

ROOT = Path(__file__).resolve().parents[1]


def benchmark(*arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), *arguments]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_harness_measures_fp32_and_the_fast_path_and_writes_both_tables(tmp_path):
    done = benchmark("run", "--bundles", "slice_based_ldm_brats", "--variants", "fp32,channels_last", "--runs", "1",
                     "--warmup", "0", "--steps", "2", "--output_dir", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_csv(tmp_path / "results.csv")
    assert [(r["bundle"], r["size"], r["variant"]) for r in rows] == [
        ("slice_based_ldm_brats", "demo", "fp32"),
        ("slice_based_ldm_brats", "demo", "channels_last (fp32, channels-last)"),
    ]
    reference, fast = rows
    assert reference["shape"] == "64x64x32" and reference["steps"] == "2" and reference["speedup"] == ""
    for row in rows:
        assert float(row["seconds_per_volume"]) > float(row["decode_seconds"]) > 0
        assert float(row["gflop_per_step"]) > 0 and float(row["peak_rss_gb"]) > 0.1
    # the same fp32 arithmetic in another memory layout: equal up to summation order
    assert float(fast["speedup"]) > 0 and float(fast["psnr_db"]) > 60 and float(fast["dice"]) > 0.99
    table = (tmp_path / "results.md").read_text()
    assert "Machine: cpu " in table and "torch 2." in table
    assert "Command: `python scripts/benchmark.py run --bundles slice_based_ldm_brats" in table
    assert "| slice_based_ldm_brats | demo | channels_last (fp32, channels-last) |" in table


def test_unknown_variants_are_refused():
    done = benchmark("run", "--variants", "fp32,int4", "--output_dir", "unused")
    expected = "variants: unknown int4; expected some of fp32, channels_last, compiled"
    assert done.returncode != 0 and expected in done.stderr


def test_decoded_outputs_are_compared_by_kind():
    logits = torch.zeros(1, 3, 4, 4, 4)
    logits[:, 1, :2] = 1.0
    logits[:, 2, 2:] = 1.0
    flipped = logits.clone()
    flipped[:, 2, 3:] = 0.0  # a quarter of the volume falls back to class 0
    assert compare_decoded(logits, logits, "labels")["dice"] == 1.0
    assert compare_decoded(logits, flipped, "labels")["dice"] == pytest.approx((1.0 + 2 * 16 / (32 + 16)) / 2)
    pair = torch.stack([torch.full((4, 4, 4), 0.5), -torch.ones(4, 4, 4)])[None]
    shifted = pair.clone()
    shifted[:, 0] += 0.02  # error 0.02 over range 2: 40 dB
    result = compare_decoded(pair, shifted, "pair")
    assert result["psnr_db"] == pytest.approx(40.0, abs=1e-3) and result["dice"] == 1.0  # both masks empty
    assert math.isnan(compare_decoded(pair[:, :1], pair[:, :1], "image")["dice"])


def test_synthetic_label_map_holds_every_class():
    labels = synthetic_label_map(5, (16, 16, 16)).numpy()
    assert labels.shape == (16, 16, 16) and set(np.unique(labels)) == set(range(5))


def test_assembly_benchmark_times_both_loops_over_the_same_files(tmp_path):
    from shared.benchmarks.assembly import bare_copy, measure_assembly, write_demo_pairs
    from shared.io import load_volume
    from shared.segmentation.nnunet_dataset import read_pair_sources

    datalist = write_demo_pairs(tmp_path / "brains", "brains", 3, (24, 24, 24))
    pairs = [(p.image, p.label) for p in read_pair_sources(datalist, "real")]
    written = bare_copy(pairs, tmp_path / "bare", num_workers=1)
    copies = sorted((tmp_path / "bare").glob("*.nii.gz"))
    assert len(copies) == 6 and written == sum(p.stat().st_size for p in copies)
    original, copy = load_volume(pairs[0][1]), load_volume(tmp_path / "bare" / "0000.nii.gz")
    assert np.array_equal(original.array, copy.array) and np.allclose(original.affine, copy.affine)

    figures = measure_assembly(datalist, "ventricles", runs=2, num_workers=2, scratch=tmp_path)
    assert figures["cases"] == 3 and figures["runs"] == 2 and figures["workers"] == 2
    assert figures["ratio"] == pytest.approx(figures["assembly_seconds"] / figures["bare_seconds"])
    assert figures["bare_written_mb"] > 0 and figures["assembly_written_mb"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare", "brains"]  # scratch folders removed
    with pytest.raises(InputError, match="kind 'knees': expected one of brains, tumours"):
        write_demo_pairs(tmp_path / "knees", "knees", 1, (8, 8, 8))


def test_assembly_command_writes_its_table(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark_cli", ROOT / "scripts" / "benchmark.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    table = Path(cli.assembly(kinds="tumours", cases=2, shape="16,16,16", runs=1, workers=1, output_dir=str(tmp_path)))
    assert table == tmp_path / "assembly.md" and "# nnU-Net set assembly throughput" in table.read_text()
    (row,) = read_csv(tmp_path / "assembly.csv")
    assert (row["kind"], row["shape"], row["cases"], row["workers"]) == ("tumours", "16x16x16", "2", "1")
    assert float(row["assembly_seconds"]) > 0 and float(row["ratio"]) > 0
