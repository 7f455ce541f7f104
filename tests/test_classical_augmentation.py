"""Classical augmentation moves image and mask together and keeps the mask binary."""

from __future__ import annotations

import numpy as np
import pytest

from shared.demo.dataset import write_tumour_dataset
from shared.io import InputError, load_image, load_label_map, read_csv
from shared.segmentation.classical_augmentation import augment_pair, write_augmented_pairs


def test_augmented_pairs_keep_the_tumour_under_its_mask(tmp_path):
    datalist = write_tumour_dataset(tmp_path / "real", 2, (32, 32, 32), None, 0, validation_fraction=0.0)
    manifest = write_augmented_pairs(datalist, tmp_path / "aug", copies=3, seed=1)
    rows = read_csv(manifest)
    assert [r["image"] for r in rows[:3]] == [f"images/aug_tumour_000_{k}.nii.gz" for k in range(3)]
    real = load_label_map(rows[0]["source"])
    masks = []
    for row in rows:
        image, mask = load_image(tmp_path / "aug" / row["image"]), load_label_map(tmp_path / "aug" / row["label"])
        np.testing.assert_allclose(image.affine, real.affine)
        assert set(np.unique(mask.array)) <= {0, 1} and mask.array.sum() > 0
        # the demo tumour is bright: moved together, the mask still covers brighter voxels than the rest
        assert image.array[mask.array == 1].mean() > image.array[mask.array == 0].mean()
        masks.append(mask.array)
    assert not np.array_equal(masks[0], masks[1])  # every copy is drawn anew
    assert not np.array_equal(masks[0], real.array)


def test_same_seed_same_pair_and_bad_arguments_refused(tmp_path):
    image = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    mask = np.zeros((16, 16, 16), dtype=np.int16)
    mask[5:10, 5:10, 5:10] = 1
    first, second = augment_pair(image, mask, 4), augment_pair(image, mask, 4)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    with pytest.raises(InputError, match="one grid"):
        augment_pair(image, mask[:8], 0)
    with pytest.raises(InputError, match="copies"):
        write_augmented_pairs(tmp_path / "x.json", tmp_path / "out", copies=0)
    assert not (tmp_path / "out").exists()
