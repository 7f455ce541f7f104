"""Image fidelity on data with known answers: Fréchet distance and MMD beside real-vs-real, diversity,
the brain-shape check (a volume without a brain fails), and the memorisation flag (a copy is flagged)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.demo.dataset import write_tumour_dataset
from shared.evaluation.brain_shape import (
    BACKGROUND_FLOOR,
    brain_mask,
    brain_reference,
    check_brain,
    measure_brain,
)
from shared.evaluation.image_fidelity import compare_to_real, diversity, frechet_distance, mean_over_planes
from shared.evaluation.memorisation import audit
from shared.io import InputError, load_image, load_label_map, read_datalist, voxel_volume_mm3


def _features(rng, count, shift=0.0, width=24):
    return [rng.normal(size=(1, width)) + shift for _ in range(count)]


def test_identical_sets_are_at_frechet_distance_zero_and_a_shifted_set_is_farther():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a + 2.0, a) > frechet_distance(a + 0.5, a) > 1.0


def test_real_vs_real_split_is_the_baseline_a_shifted_set_exceeds():
    rng = np.random.default_rng(1)
    real = _features(rng, 40)
    alike = compare_to_real(_features(rng, 20), real, resamples=60)
    shifted = compare_to_real(_features(rng, 20, shift=1.5), real, resamples=60)
    # a sample of the same distribution is as far from real as real is from itself; a shifted one is not
    assert alike["frechet"].n == 20 and 0.7 < alike["frechet"].judged.mean < 1.4
    assert shifted["frechet"].judged.low > 1.5 and shifted["mmd"].judged.low > 0
    assert alike["frechet"].real == shifted["frechet"].real  # the same splits of the real set
    # the split halves are disjoint volumes: with 7 real volumes, n is 3 (two halves of 3)
    assert compare_to_real(_features(rng, 9), real[:7], resamples=5)["frechet"].n == 3
    planes = mean_over_planes([alike["frechet"], shifted["frechet"]])
    assert alike["frechet"].real.mean < planes.generated.mean < shifted["frechet"].generated.mean
    with pytest.raises(InputError, match="at least 4 real"):
        compare_to_real(_features(rng, 3), real[:3])


def test_diversity_sees_a_generator_that_repeats_itself():
    rng = np.random.default_rng(2)
    volumes = [rng.random((32, 32, 32)).astype(np.float32) for _ in range(8)]
    varied = diversity(volumes[:4], volumes[4:])
    repeated = diversity([volumes[0]] * 4, volumes[4:])
    assert abs(varied["difference"]) < 0.1
    assert repeated["generated_ms_ssim"] == pytest.approx(1.0) and repeated["difference"] > 0.5


@pytest.fixture(scope="module")
def tumours(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tumours")
    items = read_datalist(write_tumour_dataset(folder, 6, (32, 32, 32), seed=3, validation_fraction=0.0))
    return [(load_image(i["image"]), load_label_map(i["label"]).array) for i in items]


def test_a_volume_without_a_brain_fails_the_brain_check(tumours):
    voxel_ml = voxel_volume_mm3(tumours[0][0].affine) / 1000.0
    reference = brain_reference([measure_brain(image.array, voxel_ml) for image, _ in tumours])
    real = measure_brain(tumours[0][0].array, voxel_ml)
    assert check_brain(real, reference) == []
    rng = np.random.default_rng(4)
    field = rng.normal(0.5, 0.05, size=tumours[0][0].array.shape).astype(np.float32)  # a grey field, no brain
    field[12:18, 12:18, 12:18] += 1.0  # with a bright blob in it
    reasons = check_brain(measure_brain(field, voxel_ml), reference)
    assert any(reason.startswith("no brain shape") for reason in reasons)
    streaky = tumours[0][0].array.copy()
    streaky[..., 16] *= 0.6  # one slice darker than its neighbours: a streak
    assert any(r.startswith("slice jump") for r in check_brain(measure_brain(streaky, voxel_ml), reference))
    # a brain-sized blob on a grey background (the previous slice-LDM starter's images): its Otsu mask can
    # have a brain's volume, its border cannot be dark
    hazy = tumours[0][0].array.copy()
    hazy[~brain_mask(hazy)] += 0.5 * float(hazy.max())
    shape = measure_brain(hazy, voxel_ml)
    assert shape.background > 3 * real.background  # 0.04 for the demo's real images
    assert any(r.startswith("no dark background") for r in check_brain(shape, reference))
    # skull-stripped or zero-padded real images (BraTS, FreeSurfer) have a border of zeros: ratio 0; a generated
    # brain with a little noise in its border still passes, the grey field still fails
    stripped = [image.array * brain_mask(image.array) for image, _ in tumours]
    zero_border = brain_reference([measure_brain(image, voxel_ml) for image in stripped])
    assert max(measure_brain(image, voxel_ml).background for image in stripped) == 0.0
    assert zero_border.max_background == BACKGROUND_FLOOR and check_brain(real, zero_border) == []
    assert any(r.startswith("no dark background") for r in check_brain(shape, zero_border))


def test_an_exact_copy_of_a_training_case_is_flagged_and_a_new_case_is_not(tumours):
    images = [image.array for image, _ in tumours]
    masks = [mask > 0 for _, mask in tumours]
    features = np.stack([[image.mean(), image.std(), mask.sum()] for image, mask in zip(images, masks)])
    training = slice(0, 5)
    result = audit(
        [images[1], images[5]], [masks[1], masks[5]], features[[1, 5]],
        images[training], masks[training], features[training],
    )  # fmt: skip
    copy, new = result.flags
    assert len(copy) == 3 and new == ()
    assert result.generated[0].image_case == 1 and result.generated[0].label_dice == pytest.approx(1.0)
    rows = result.rows(["copy", "new"], [f"t{i}" for i in range(5)])
    assert rows[0]["image_case"] == "t1" and rows[0]["flagged"] and not rows[1]["flagged"]
    assert result.summary()["flagged"] == 1


def test_slice_ldm_diagnostics_see_streaks_and_incoherent_latents():
    import torch

    from shared.evaluation.slice_ldm_diagnostics import latent_statistics, streak_index, view_scores

    rng = np.random.default_rng(5)
    smooth = np.clip(np.linspace(0, 1, 32)[None, None, :] * np.ones((32, 32, 1)), 0, 1).astype(np.float32)
    streaky = smooth.copy()
    streaky[..., ::2] *= 0.5  # every other axial slice darker
    assert streak_index(streaky) > 5 * streak_index(smooth)
    scores = view_scores(smooth, smooth)
    assert set(scores) == {"axial", "coronal", "sagittal"} and scores["axial"]["ssim"] == pytest.approx(1.0)
    assert view_scores(smooth, streaky)["coronal"]["psnr"] < scores["coronal"]["psnr"]
    coherent = torch.from_numpy(rng.normal(size=(2, 3, 8, 8, 1))).repeat(1, 1, 1, 1, 16)  # alike along slices
    noisy = torch.from_numpy(rng.normal(size=(2, 3, 8, 8, 16)))
    assert latent_statistics(coherent)["slice_axis_correlation"] > 0.99
    assert abs(latent_statistics(noisy)["slice_axis_correlation"]) < 0.2
    assert len(latent_statistics(noisy)["mean"]) == 3


def test_samples_of_several_generation_rounds_keep_distinct_names():
    from shared.evaluation.pair_fidelity import distinct_names

    paths = [f"g/round_{r}/images/pair_000{i}.nii.gz" for r, i in ((1, 0), (2, 0), (2, 1))]
    assert distinct_names(paths) == ["round_1/images/pair_0000.nii.gz", "round_2/images/pair_0000.nii.gz",
                                     "round_2/images/pair_0001.nii.gz"]  # fmt: skip
    assert distinct_names(["a/x.nii.gz", "a/y.nii.gz"]) == ["x.nii.gz", "y.nii.gz"]
