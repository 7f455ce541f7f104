"""Tissue-contrast report: mean intensity per tissue of real and generated pairs."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_script, save_nifti
from shared.evaluation.fidelity import percentiles_to_unit, tissue_means
from shared.io import read_csv, write_csv, write_datalist


def brain(wm: float, ventricles: float) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((20, 20, 20), dtype=np.int16)
    labels[2:18, 2:18, 2:18] = 2  # white matter
    labels[8:12, 8:12, 8:12] = 4  # left lateral ventricle
    image = np.where(labels == 2, wm, 0.0) + np.where(labels == 4, ventricles, 0.0)
    return image.astype(np.float32), labels


def test_scale_to_unit_uses_the_percentiles_and_clips():
    image = np.linspace(0, 100, 1001, dtype=np.float32)
    scaled = percentiles_to_unit(image, lower=10, upper=90)
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    assert scaled[500] == pytest.approx(0.5, abs=1e-6)
    assert np.all(percentiles_to_unit(np.full(5, 3.0)) == 0)  # constant image: no division by zero


def test_tissue_means_on_a_hand_made_brain():
    image, labels = brain(wm=200.0, ventricles=50.0)
    means = tissue_means(image, labels)
    assert means["white matter"] == pytest.approx(1.0)  # the 99.5th percentile is white matter
    assert means["ventricles"] == pytest.approx(0.25)  # 50 / 200 on the 0-200 scale
    assert np.isnan(means["csf"])  # absent tissue


def test_report_from_a_real_datalist_and_a_generated_pair_folder(tmp_path):
    real_items = []
    for i, (wm, vent) in enumerate([(200.0, 50.0), (100.0, 10.0)]):
        image, labels = brain(wm, vent)
        save_nifti(tmp_path / "real" / f"img{i}.nii.gz", image)
        save_nifti(tmp_path / "real" / f"lab{i}.nii.gz", labels)
        real_items.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"})
    write_datalist(tmp_path / "real" / "datalist.json", {"training": real_items})
    image, labels = brain(0.9, 0.9)  # generated: no contrast at all
    save_nifti(tmp_path / "gen" / "images" / "pair_0000.nii.gz", image)
    save_nifti(tmp_path / "gen" / "labels" / "pair_0000.nii.gz", labels)
    write_csv(
        tmp_path / "gen" / "manifest.csv", [{"image": "images/pair_0000.nii.gz", "label": "labels/pair_0000.nii.gz"}]
    )

    done = run_script("image_fidelity.py", "contrast", "--real", str(tmp_path / "real" / "datalist.json"),
                      "--generated", str(tmp_path / "gen"), "--output_dir", str(tmp_path / "out"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["tissue"]: r for r in read_csv(tmp_path / "out" / "fidelity.csv")}
    assert float(rows["ventricles"]["real_mean"]) == pytest.approx((0.25 + 0.1) / 2)
    assert rows["ventricles"]["n_real"] == "2" and rows["ventricles"]["n_generated"] == "1"
    assert float(rows["ventricles"]["generated_mean"]) == pytest.approx(1.0)
    assert rows["csf"]["n_real"] == "0"
    assert (tmp_path / "out" / "fidelity.png").is_file()


def test_a_generated_folder_without_pairs_is_refused(tmp_path):
    write_csv(tmp_path / "manifest.csv", [{"file": "x.nii.gz"}])
    done = run_script("image_fidelity.py", "contrast", "--real", str(tmp_path / "manifest.csv"),
                      "--generated", str(tmp_path), "--output_dir", str(tmp_path / "out"))  # fmt: skip
    assert done.returncode == 2 and "manifest.csv: needs rows with 'image' and 'label' columns" in done.stderr
