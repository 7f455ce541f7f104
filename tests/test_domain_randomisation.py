"""Domain-randomised images keep the label map's geometry and change only the appearance."""

from __future__ import annotations

import numpy as np
import pytest

from shared.demo.dataset import write_brain_dataset
from shared.io import InputError, load_image, load_label_map, read_csv
from shared.segmentation.domain_randomisation import randomise_image, write_randomised_pairs


def test_randomised_pairs_keep_labels_and_grid_and_vary_intensities(tmp_path):
    datalist = write_brain_dataset(tmp_path / "real", 2, (24, 24, 24), None, 0, validation_fraction=0.0)
    manifest = write_randomised_pairs(datalist, tmp_path / "dr", copies=2, seed=3)
    rows = read_csv(manifest)
    assert len(rows) == 4
    first, second = (tmp_path / "dr" / rows[0]["image"]), (tmp_path / "dr" / rows[1]["image"])
    real = load_label_map(rows[0]["source"])
    label = load_label_map(tmp_path / "dr" / rows[0]["label"])
    np.testing.assert_array_equal(label.array, real.array)  # geometry kept bit for bit
    image_a, image_b = load_image(first), load_image(second)
    np.testing.assert_allclose(image_a.affine, real.affine)
    assert image_a.array.shape == real.array.shape and image_a.array.min() >= 0.0 and image_a.array.max() <= 1.0
    # the same labels, other intensities: per-label means differ between the two copies
    means = [[float(img.array[real.array == k].mean()) for k in (2, 4, 24)] for img in (image_a, image_b)]
    assert not np.allclose(means[0], means[1], atol=0.05)


def test_same_seed_gives_the_same_image_and_bad_input_is_refused(tmp_path):
    label = np.zeros((16, 16, 16), dtype=np.int32)
    label[4:12, 4:12, 4:12] = 2
    label[7:9, 7:9, 7:9] = 4
    np.testing.assert_array_equal(randomise_image(label, 5), randomise_image(label, 5))
    assert not np.array_equal(randomise_image(label, 5), randomise_image(label, 6))
    with pytest.raises(InputError, match="copies"):
        write_randomised_pairs(tmp_path / "x.json", tmp_path / "out", copies=0)
