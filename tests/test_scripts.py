"""The command-line tools as a user runs them: files written, one-line errors, skipping stages."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import yaml

from conftest import run_script, save_nifti
from shared.conditioning.features import MinMaxNormaliser
from shared.conditioning.tables import TUMOUR_COLUMNS, VENTRICLE_COLUMNS
from shared.io import read_csv, read_json


def test_make_demo_data_then_compute_conditions(tmp_path):
    made = run_script(
        "make_demo_data.py",
        "all",
        str(tmp_path / "demo"),
        "--n_brains",
        "4",
        "--n_tumours",
        "3",
        "--shape",
        "32,32,32",
        "--seed",
        "5",
    )
    assert made.returncode == 0, made.stderr
    brains, tumours = tmp_path / "demo" / "brains", tmp_path / "demo" / "tumours"
    assert len(list((brains / "labels").glob("*.nii.gz"))) == 4
    assert (tumours / "mosaic.png").is_file()

    done = run_script(
        "compute_conditions.py", "ventricles", str(brains / "datalist.json"), "--output", str(tmp_path / "v.csv")
    )
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "v.csv")
    assert list(rows[0]) == list(VENTRICLE_COLUMNS) and len(rows) == 4
    c = sorted(float(r["c"]) for r in rows)
    assert c[0] == 0.0 and c[-1] == 1.0
    normaliser = MinMaxNormaliser.load(tmp_path / "v_normaliser.json")
    assert normaliser.minimum == min(float(r["ratio"]) for r in rows)

    # Applying a saved normaliser to a folder of label maps does not refit it.
    applied = run_script(
        "compute_conditions.py",
        "ventricles",
        str(brains / "labels"),
        "--output",
        str(tmp_path / "w.csv"),
        "--normaliser",
        str(tmp_path / "v_normaliser.json"),
    )
    assert applied.returncode == 0, applied.stderr
    assert [r["c"] for r in read_csv(tmp_path / "w.csv")] == [r["c"] for r in rows]
    assert not (tmp_path / "w_normaliser.json").exists()

    done = run_script("compute_conditions.py", "tumours", str(tumours / "labels"), "--output", str(tmp_path / "t.csv"))
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "t.csv")
    assert list(rows[0]) == list(TUMOUR_COLUMNS) and len(rows) == 3
    assert max(float(r["volume"]) for r in rows) == 1.0
    assert read_json(tmp_path / "t_normaliser.json")["feature_names"][0] == "volume"


def test_compute_conditions_accepts_a_freesurfer_aseg_mgz(tmp_path):
    aseg = np.zeros((20, 20, 20), dtype=np.int32)
    aseg[2:18, 2:18, 2:18] = 2
    aseg[8:12, 8:12, 8:12] = 4  # 64 ventricle voxels
    aseg[5, 5, 5:8] = 77  # WM hypointensities, 251 corpus callosum, 31 choroid plexus: not SynthSeg classes
    aseg[6, 6, 6] = 251
    aseg[7, 7, 7] = 31
    nib.save(nib.MGHImage(aseg, np.diag([1.2, 1.2, 1.2, 1.0])), str(tmp_path / "aseg.mgz"))
    done = run_script(
        "compute_conditions.py", "ventricles", str(tmp_path / "aseg.mgz"), "--output", str(tmp_path / "a.csv")
    )
    assert done.returncode == 0, done.stderr
    row = read_csv(tmp_path / "a.csv")[0]
    # MGH stores the affine in float32, hence the tolerance
    assert float(row["ventricle_ml"]) == pytest.approx(64 * 1.2**3 / 1000, rel=1e-6)
    assert float(row["icv_ml"]) == pytest.approx(16**3 * 1.2**3 / 1000, rel=1e-6)
    assert row["c"] == ""  # one file: no normaliser can be fitted (warned, not failed)


def test_bad_input_gives_one_line_and_exit_code_2(tmp_path):
    folder = tmp_path / "maps"
    save_nifti(folder / "good.nii.gz", np.full((6, 6, 6), 2, np.int16))
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b garbage")
    done = run_script("compute_conditions.py", "ventricles", str(folder), "--output", str(tmp_path / "x.csv"))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {folder / 'broken.nii.gz'}: cannot read volume")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.csv").exists()

    done = run_script("make_demo_data.py", "brains", str(tmp_path / "d"), "--shape", "8,8,8")
    assert done.returncode == 2 and "error: grid shape: expected three integers >= 16" in done.stderr


@pytest.mark.slow
def test_pipeline_writes_report_and_skips_finished_stages(tmp_path):
    out = tmp_path / "run"
    # data stages only (--branches none); the segmentation studies train bundles and nnU-Net
    args = (
        "--output_dir",
        str(out),
        "--n_brains",
        "4",
        "--n_tumours",
        "3",
        "--branches",
        "none",
        "--shape",
        "32,32,32",
    )
    first = run_script("run_pipeline.py", *args)
    assert first.returncode == 0, first.stderr
    for name in (
        "report.md",
        "conditions/summary.png",
        "conditions/ventricles.csv",
        "conditions/tumours.csv",
        "conditions/ventricles_normaliser.json",
        "data/brains/mosaic.png",
        "data/tumours/mosaic.png",
    ):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "ventricle volume" in report and "![conditions](conditions/summary.png)" in report
    assert "## Stage times" in report and "| demo_brains |" in report and "Demo scale" not in report
    resolved = yaml.safe_load((out / "study.yaml").read_text())  # the shipped demo study with the flags over it
    assert resolved["defaults"] == "demo" and resolved["studies"] == [] and resolved["settings"]["n_brains"] == 4
    rows = read_csv(out / "conditions" / "ventricles.csv")
    assert {r["split"] for r in rows} == {"training", "validation"}
    training_c = [float(r["c"]) for r in rows if r["split"] == "training"]
    assert min(training_c) == 0.0 and max(training_c) == 1.0

    # A second run does nothing; losing one stage's marker (as after Ctrl-C) redoes only that stage.
    second = run_script("run_pipeline.py", *args)
    assert second.returncode == 0 and second.stderr.count("already done, skipped") == 4
    (out / ".stages" / "conditions.json").unlink()
    third = run_script("run_pipeline.py", *args)
    assert third.returncode == 0 and third.stderr.count("already done, skipped") == 3
    assert "[conditions] running" in third.stderr
    # An interrupted rerun with other parameters leaves no marker that claims the old stage is done.
    (out / ".stages" / "demo_brains.json").write_text('{"params": {"stale": true}}')
    # Changed parameters rerun the stages they affect: another brain grid redoes the brains and
    # everything downstream, and keeps the tumour cases (their grid is --tumour_shape).
    fourth = run_script("run_pipeline.py", *args[:-1], "40,40,40")
    assert fourth.returncode == 0 and fourth.stderr.count("already done") == 1
    assert "[demo_tumours] already done" in fourth.stderr and "[demo_brains] running" in fourth.stderr


def test_pipeline_rejects_unknown_branches_before_writing_anything(tmp_path):
    done = run_script("run_pipeline.py", "--output_dir", str(tmp_path / "run"), "--branches", "lungs")
    assert done.returncode == 2 and "error: --branches: unknown 'lungs'" in done.stderr
    assert not (tmp_path / "run").exists()


def test_pipeline_rejects_a_bad_grid_before_writing_anything(tmp_path):
    done = run_script("run_pipeline.py", "--output_dir", str(tmp_path / "run"), "--shape", "abc")
    assert done.returncode == 2 and "error: --shape: 'abc' is not a whole number" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_script("run_pipeline.py", "--output_dir", str(tmp_path / "run"), "--shape", "8,8,8")
    assert done.returncode == 2 and "error: grid shape" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_pipeline_rejects_an_unknown_scale_before_writing_anything(tmp_path):
    done = run_script("run_pipeline.py", "--output_dir", str(tmp_path / "run"), "--scale", "huge")
    assert done.returncode == 2 and "error: --scale 'huge': expected one of demo, study" in done.stderr
    assert not (tmp_path / "run").exists()
