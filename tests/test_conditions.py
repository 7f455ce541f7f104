"""Conditioning quantities (docs/method.md, section 1) against analytic values."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from shared.conditioning.features import (
    EMPTY_TUMOUR_FEATURES,
    TUMOUR_FEATURE_NAMES,
    MinMaxNormaliser,
    TumourFeatureNormaliser,
    icv_ml,
    measure_ventricles,
    tumour_features,
    ventricle_volume_ml,
    voxel_volume_ml,
)
from shared.io import InputError
from shared.labels import VENTRICLE_LABEL_IDS

ANISOTROPIC = np.diag([1.5, 1.5, 2.0, 1.0])  # 4.5 mm^3 voxels


def _ventricle_phantom() -> tuple[np.ndarray, int, int]:
    """Label map with known counts: returns (labels, ventricle voxels, non-background voxels)."""
    labels = np.zeros((30, 30, 30), dtype=np.int32)
    labels[2:28, 2:28, 2:28] = 2  # white matter
    labels[0:2, :, :] = 24  # CSF counts towards ICV
    labels[5:10, 5:10, 5:10] = 4  # 125
    labels[15:20, 5:10, 5:9] = 43  # 100
    labels[5:7, 20:23, 5:6] = 5  # 6
    labels[20:22, 20:22, 20:23] = 44  # 12
    labels[12:13, 12:15, 12:15] = 14  # 9
    labels[25:26, 25:26, 25:27] = 15  # 2
    labels[10, 10, 20] = 10  # thalamus: not a ventricle
    ventricles = 125 + 100 + 6 + 12 + 9 + 2
    icv = int(np.count_nonzero(labels))
    return labels, ventricles, icv


def test_ventricle_volume_and_icv_at_anisotropic_spacing_are_analytic():
    labels, ventricles, icv = _ventricle_phantom()
    assert voxel_volume_ml(ANISOTROPIC) == pytest.approx(0.0045)
    assert ventricle_volume_ml(labels, ANISOTROPIC) == pytest.approx(ventricles * 4.5 / 1000)
    assert icv_ml(labels, ANISOTROPIC) == pytest.approx(icv * 4.5 / 1000)
    measures = measure_ventricles(labels, ANISOTROPIC)
    assert measures.ratio == pytest.approx(ventricles / icv)
    assert set(VENTRICLE_LABEL_IDS) == {4, 43, 5, 44, 14, 15}


def test_voxel_volume_uses_the_affine_not_the_header_diagonal():
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.5, 1.5, 2.0])
    affine[:3, 3] = [-90.0, 12.0, 40.0]
    labels, ventricles, _ = _ventricle_phantom()
    assert ventricle_volume_ml(labels, affine) == pytest.approx(ventricles * 4.5 / 1000)


def test_all_background_label_map_is_refused():
    with pytest.raises(ValueError, match="all background"):
        measure_ventricles(np.zeros((4, 4, 4), dtype=np.int16), np.eye(4))


def test_min_max_normaliser_maps_training_min_and_max_to_0_and_1_and_round_trips(tmp_path):
    ratios = np.array([0.012, 0.031, 0.047, 0.02])
    normaliser = MinMaxNormaliser.fit(ratios)
    assert normaliser.transform(0.012) == 0.0
    assert normaliser.transform(0.047) == 1.0
    c = normaliser.transform(ratios)
    np.testing.assert_allclose(normaliser.inverse(c), ratios, rtol=1e-12)
    assert isinstance(normaliser.transform(0.02), float)
    normaliser.save(tmp_path / "norm.json")
    assert MinMaxNormaliser.load(tmp_path / "norm.json") == normaliser


def test_extrapolation_beyond_the_training_range_is_allowed_and_reported(caplog):
    normaliser = MinMaxNormaliser(minimum=0.01, maximum=0.05)
    with caplog.at_level(logging.WARNING):
        ratio = normaliser.inverse(1.5)
    assert ratio == pytest.approx(0.07)
    assert "outside the training range" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        normaliser.inverse(0.5)
    assert caplog.text == ""


def test_normaliser_refuses_degenerate_or_bad_input(tmp_path):
    with pytest.raises(ValueError, match="at least two different values"):
        MinMaxNormaliser.fit([0.02, 0.02])
    with pytest.raises(ValueError, match="NaN/Inf"):
        MinMaxNormaliser.fit([0.02, float("nan")])
    (tmp_path / "bad.json").write_text('{"minimum": 1}')
    with pytest.raises(InputError, match="bad.json: not a min-max normaliser file"):
        MinMaxNormaliser.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="missing.json: no such file"):
        MinMaxNormaliser.load(tmp_path / "missing.json")


def _ball(radius: int, pad: int = 4) -> np.ndarray:
    size = 2 * (radius + pad) + 1
    grid = np.indices((size, size, size)) - (radius + pad)
    return (grid**2).sum(0) <= radius**2


@pytest.mark.parametrize("radius", [8, 12, 16])
def test_ball_volume_and_sphericity(radius):
    features = tumour_features(_ball(radius))
    assert features[0] == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.02)
    assert features[1] == pytest.approx(4 * np.pi * radius**2, rel=0.05)
    assert features[2] == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("side", [20, 30])
def test_cube_sphericity_is_that_of_a_cube(side):
    mask = np.zeros((side + 6,) * 3, dtype=np.uint8)
    mask[3:-3, 3:-3, 3:-3] = 1
    expected = (36 * np.pi) ** (1 / 3) / 6  # 0.806
    assert tumour_features(mask)[2] == pytest.approx(expected, rel=0.05)


def test_small_masks_never_crash_and_stay_at_most_one():
    specks = np.zeros((10, 10, 10), dtype=bool)
    specks[2, 2, 2] = specks[7, 7, 7] = True  # isolated voxels vanish under the smoothing
    features = tumour_features(specks)
    assert features[0] == 2 and features[1] > 0 and 0 < features[2] <= 1
    small_cube = np.zeros((12, 12, 12), dtype=bool)
    small_cube[3:9, 3:9, 3:9] = True
    assert tumour_features(small_cube)[2] < tumour_features(_ball(3))[2] <= 1.0


def test_centre_and_bbox_are_exact_for_an_axis_aligned_box():
    mask = np.zeros((40, 50, 60), dtype=bool)
    mask[10:20, 5:9, 30:40] = True
    features = dict(zip(TUMOUR_FEATURE_NAMES, tumour_features(mask)))
    assert features["volume"] == 10 * 4 * 10
    assert features["centre_x"] == pytest.approx(15 / 40, abs=1e-12)
    assert features["centre_y"] == pytest.approx(7 / 50, abs=1e-12)
    assert features["centre_z"] == pytest.approx(35 / 60, abs=1e-12)
    assert (features["bbox_w"], features["bbox_h"], features["bbox_d"]) == pytest.approx((10 / 40, 4 / 50, 10 / 60))


def test_volume_and_area_follow_the_spacing():
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[5:15, 5:15, 5:15] = True
    voxels = tumour_features(mask)
    mm = tumour_features(mask, spacing=(1.0, 1.0, 2.0))
    assert mm[0] == pytest.approx(2 * voxels[0])
    assert mm[1] > voxels[1]
    np.testing.assert_allclose(mm[3:], voxels[3:])


def test_empty_mask_gives_the_documented_zero_vector():
    features = tumour_features(np.zeros((16, 16, 16), dtype=np.uint8))
    assert np.all(np.isfinite(features))
    np.testing.assert_array_equal(features, EMPTY_TUMOUR_FEATURES)
    assert features.shape == (9,)


def test_tumour_normaliser_scales_volume_and_area_and_round_trips(tmp_path):
    raw = np.stack([tumour_features(_ball(6)), tumour_features(_ball(10))])
    normaliser = TumourFeatureNormaliser.fit(raw)
    vectors = normaliser.transform(raw)
    assert vectors[1, 0] == 1.0 and vectors[1, 1] == 1.0
    assert 0 < vectors[0, 0] < 1
    np.testing.assert_array_equal(vectors[:, 2:], raw[:, 2:])
    np.testing.assert_allclose(normaliser.inverse(vectors), raw)
    normaliser.save(tmp_path / "tumour.json")
    assert TumourFeatureNormaliser.load(tmp_path / "tumour.json") == normaliser
    with pytest.raises(ValueError, match="need 9 values"):
        normaliser.transform(np.zeros(8))
    with pytest.raises(ValueError, match="maxima must be positive"):
        TumourFeatureNormaliser.fit(np.zeros((2, 9)))


def test_tumour_centre_and_box_follow_anatomy_not_the_file_orientation(tmp_path):
    from conftest import save_nifti
    from shared.conditioning.tables import measure_tumour_rows

    ras = np.zeros((20, 24, 16), dtype=np.uint8)
    ras[2:6, 10:20, 3:7] = 1  # left, anterior, inferior
    ras_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    # the same voxels stored as LIA (FreeSurfer .mgz order): x flipped, then z (I -> S flipped) and y swapped
    lia = np.flip(ras, axis=0).transpose(0, 2, 1)[:, ::-1, :]
    lia_affine = np.array([[-2.0, 0, 0, 38.0], [0, 0, 2.0, 0], [0, -2.0, 0, 30.0], [0, 0, 0, 1]])
    rows = measure_tumour_rows(
        [save_nifti(tmp_path / "ras.nii.gz", ras, ras_affine), save_nifti(tmp_path / "lia.nii.gz", lia, lia_affine)]
    )
    for name in ("centre_x", "centre_y", "centre_z", "bbox_w", "bbox_h", "bbox_d"):
        assert rows[0][name] == pytest.approx(rows[1][name]), name
    assert rows[0]["centre_x"] < 0.5 and rows[0]["centre_y"] > 0.5 and rows[0]["centre_z"] < 0.5
