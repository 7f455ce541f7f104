"""Preparing BraTS-layout and demo tumour cases for the slice-based LDM."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_script, save_nifti
from shared.io import InputError, load_volume, read_csv, read_datalist
from shared.tumour_preprocessing import find_tumour_cases, prepare_tumour_dataset, resampled_affine


def brats_case(root, name, shape=(24, 24, 12), tumour=True, seg_shape=None, affine=None):
    rng = np.random.default_rng(len(name))
    flair = rng.uniform(0, 500, size=shape).astype(np.float32)
    seg = np.zeros(seg_shape or shape, dtype=np.uint8)
    if tumour:
        seg[8:14, 9:15, 4:8] = 2
        seg[10:12, 11:13, 5:7] = 4
    save_nifti(root / name / f"{name}_flair.nii.gz", flair, affine)
    save_nifti(root / name / f"{name}_seg.nii.gz", seg, affine)
    return root / name


def test_brats_layout_is_resampled_scaled_and_tabulated(tmp_path):
    affine = np.diag([2.0, 2.0, 4.0, 1.0])
    for index in range(4):
        brats_case(tmp_path / "brats", f"BraTS_{index:03d}", affine=affine)
    datalist = prepare_tumour_dataset(
        tmp_path / "brats", tmp_path / "prepared", shape=(16, 16, 8), validation_fraction=0.25
    )

    training, validation = read_datalist(datalist, ["training"]), read_datalist(datalist, ["validation"])
    assert [item["case"] for item in training] == ["BraTS_000", "BraTS_001", "BraTS_002"]
    assert [item["case"] for item in validation] == ["BraTS_003"]
    image, mask = load_volume(training[0]["image"]), load_volume(training[0]["label"])
    assert image.array.shape == mask.array.shape == (16, 16, 8)
    assert image.array.min() == pytest.approx(-1.0) and image.array.max() == pytest.approx(1.0)
    assert set(np.unique(mask.array)) == {0, 1}  # whole tumour: labels 2 and 4 together
    assert image.spacing == pytest.approx((3.0, 3.0, 6.0))  # same field of view, coarser grid
    assert np.allclose(image.affine, mask.affine)
    assert len(training[0]["condition"]) == 9
    rows = read_csv(tmp_path / "prepared" / "tumours.csv")
    assert [row["split"] for row in rows] == ["training"] * 3 + ["validation"]
    assert float(rows[0]["volume"]) == pytest.approx(1.0)  # identical masks: each at the training maximum


def test_resampled_affine_keeps_the_field_of_view():
    affine = resampled_affine(np.eye(4), (240, 240, 155), (192, 192, 96))
    first, last = affine @ [0, 0, 0, 1], affine @ [191, 191, 95, 1]
    assert first[:3] - affine[:3, :3].diagonal() / 2 == pytest.approx([-0.5, -0.5, -0.5])
    assert last[:3] + affine[:3, :3].diagonal() / 2 == pytest.approx([239.5, 239.5, 154.5])


def test_case_folder_without_seg_is_refused(tmp_path):
    case = brats_case(tmp_path / "brats", "BraTS_000")
    (case / "BraTS_000_seg.nii.gz").unlink()
    with pytest.raises(InputError, match="BraTS_000: no segmentation"):
        find_tumour_cases(tmp_path / "brats")


def test_image_seg_shape_mismatch_is_refused(tmp_path):
    brats_case(tmp_path / "brats", "BraTS_000", seg_shape=(24, 24, 10))
    with pytest.raises(InputError, match=r"BraTS_000_seg.nii.gz: shape \(24, 24, 10\) differs"):
        prepare_tumour_dataset(tmp_path / "brats", tmp_path / "out", shape=(16, 16, 8))


def test_empty_tumour_everywhere_is_refused_and_no_datalist_left(tmp_path):
    for index in range(2):
        brats_case(tmp_path / "brats", f"BraTS_{index:03d}", tumour=False)
    with pytest.raises(InputError, match="every tumour mask is empty"):
        prepare_tumour_dataset(tmp_path / "brats", tmp_path / "out", shape=(16, 16, 8), validation_fraction=0.0)
    assert not (tmp_path / "out" / "datalist.json").exists()


def test_script_prints_one_line_error_for_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_script("prepare_tumour_data.py", str(tmp_path / "empty"), str(tmp_path / "out"))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {tmp_path / 'empty'}: no usable case in the brats layout (one folder per case")
