"""Slice-based LDM parts: the slice dataset, the VAE loss, condition requests, vector-conditioned batches,
the tumour-weighted diffusion loss, the decoded pair's mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.conditioning.features import TumourFeatureNormaliser
from shared.conditioning.tumour_requests import random_tumour_conditions, resolve_tumour_conditions
from shared.engines.diffusion import VectorConditionLatentPrepareBatch
from shared.io import InputError, write_csv
from shared.latents import LatentScaler, encode_dataset, latent_region
from shared.losses import RegionWeightedLoss, SliceVAELoss
from shared.sampling.tumour_generation import split_pair
from shared.slices import SliceDataset, empty_slices

NORMALISER = TumourFeatureNormaliser(volume_max=8000.0, surface_area_max=3000.0)
TRAINING = np.array(
    [
        [0.5, 0.6, 0.80, 0.40, 0.50, 0.55, 0.20, 0.25, 0.30],
        [1.0, 1.0, 0.75, 0.60, 0.45, 0.50, 0.30, 0.30, 0.40],
        [0.1, 0.2, 0.85, 0.50, 0.60, 0.40, 0.10, 0.12, 0.15],
    ]
)


def test_empty_slices_are_mostly_dropped_and_positions_kept():
    volume = -torch.ones(2, 8, 8, 10)
    volume[0, 2:6, 2:6, 3:7] = 0.5  # brain in slices 3..6
    dataset = SliceDataset([{"image": volume}], empty_keep_fraction=0.0)
    assert empty_slices(volume).tolist() == [True] * 3 + [False] * 4 + [True] * 3
    assert len(dataset) == 4 and dataset.dropped == 6
    item = dataset[0]
    assert item["position"] == 3 and item["image"].shape == (2, 8, 8)
    assert torch.equal(item["image"], volume[..., 3])
    assert len(SliceDataset([{"image": volume}], empty_keep_fraction=1.0)) == 10


def test_slice_vae_loss_is_zero_for_a_perfect_reconstruction_and_grows_with_error():
    loss = SliceVAELoss(kl_weight=0.0)
    target = torch.rand(2, 2, 16, 16) * 2 - 1
    zeros = torch.zeros(2, 3, 4, 4)
    assert float(loss((target, zeros, torch.ones_like(zeros)), target)) == pytest.approx(0.0, abs=1e-5)
    noisy = float(loss((target + 0.3 * torch.randn_like(target), zeros, torch.ones_like(zeros)), target))
    assert noisy > 0.2


def test_random_conditions_are_consistent():
    vectors = random_tumour_conditions(200, TRAINING, NORMALISER, np.random.default_rng(0))
    volume, area, sphericity = vectors[:, 0], vectors[:, 1], vectors[:, 2]
    assert np.all((volume >= 0.1) & (volume <= 1.0))
    raw_volume, raw_area = volume * NORMALISER.volume_max, area * NORMALISER.surface_area_max
    np.testing.assert_allclose((36 * np.pi * raw_volume**2) ** (1 / 3) / raw_area, sphericity)  # area follows V, s
    assert set(np.round(sphericity, 6)) <= set(np.round(TRAINING[:, 2], 6))
    centre, box = vectors[:, 3:6], vectors[:, 6:9]
    assert np.all(centre - box / 2 >= -1e-9) and np.all(centre + box / 2 <= 1 + 1e-9)
    assert np.abs(centre - TRAINING[:, 3:6].mean(axis=0)).max() < 0.3  # near where training tumours are
    big = random_tumour_conditions(50, TRAINING, NORMALISER, np.random.default_rng(1), volume=[0.9, 1.0])
    assert big[:, 6:9].mean() > vectors[:, 6:9].mean()  # boxes grow with the volume


def test_condition_requests(tmp_path):
    one = resolve_tumour_conditions(TRAINING[0].tolist(), 3, TRAINING, NORMALISER)
    assert one.shape == (3, 9) and np.all(one == TRAINING[0])
    assert resolve_tumour_conditions(TRAINING.tolist(), 1, TRAINING, NORMALISER).shape == (3, 9)
    table = tmp_path / "t.csv"
    from shared.conditioning.features import TUMOUR_FEATURE_NAMES

    write_csv(table, [dict(zip(TUMOUR_FEATURE_NAMES, row)) for row in TRAINING[:2]], TUMOUR_FEATURE_NAMES)
    np.testing.assert_allclose(resolve_tumour_conditions({"table": str(table)}, 5, TRAINING, NORMALISER), TRAINING[:2])
    drawn = resolve_tumour_conditions({"random": {}}, 4, TRAINING, NORMALISER, seed=3)
    np.testing.assert_allclose(drawn, resolve_tumour_conditions({"random": {}}, 4, TRAINING, NORMALISER, seed=3))
    with pytest.raises(InputError, match="needs 9 values .* got 8"):
        resolve_tumour_conditions([0.5] * 8, 1, TRAINING, NORMALISER)
    with pytest.raises(InputError, match="condition table needs the columns"):
        write_csv(tmp_path / "bad.csv", [{"volume": 1}], ["volume"])
        resolve_tumour_conditions({"table": str(tmp_path / "bad.csv")}, 1, TRAINING, NORMALISER)
    with pytest.raises(InputError, match="expected 9 values, a list of vectors"):
        resolve_tumour_conditions({"uniform": [0, 1]}, 1, TRAINING, NORMALISER)


def test_vector_condition_batches_carry_the_vectors_to_the_network():
    prepare = VectorConditionLatentPrepareBatch(None, LatentScaler((2.0,), (0.0,)), num_train_timesteps=10)
    latents = torch.randn(2, 3, 4, 4, 4)
    batch = {"image": latents, "condition": torch.rand(2, 9)}
    inputs, target, _, kwargs = prepare(batch)
    assert torch.allclose(inputs, 2.0 * latents)  # precomputed latents are only scaled
    assert torch.equal(kwargs["condition"], batch["condition"]) and torch.equal(kwargs["noise"], target)
    assert kwargs["timesteps"].shape == (2,) and int(kwargs["timesteps"].max()) < 10


def test_latent_region_marks_every_latent_cell_touching_the_tumour():
    mask = torch.zeros(16, 16, 8, dtype=torch.bool)
    mask[5, 9, 2] = True  # one voxel
    region = latent_region(mask, (4, 4, 8))  # slice VAE: x4 in-plane, depth kept
    assert region.shape == (1, 4, 4, 8) and int(region.sum()) == 1 and region[0, 1, 2, 2] == 1


def test_encoded_dataset_keeps_the_tumour_region_on_the_latent_grid():
    class Pool(torch.nn.Module):  # a stand-in encoder: x2 average pooling, 2 channels -> 2 channels
        def encode_stage_2_inputs(self, x):
            return torch.nn.functional.avg_pool3d(x, 2)

    volume = -torch.ones(2, 8, 8, 4)
    volume[1, 0:2, 6:8, 0:2] = 1.0
    (item,) = encode_dataset(Pool(), [{"image": volume, "condition": [1.0]}], keep=["condition"], region_channel=1)
    assert item["image"].shape == (2, 4, 4, 2) and item["condition"] == [1.0]
    expected = torch.zeros(1, 4, 4, 2)
    expected[0, 0, 3, 0] = 1.0
    assert torch.equal(item["region"], expected)


def test_tumour_weighted_batches_and_loss():
    prepare = VectorConditionLatentPrepareBatch(None, LatentScaler((1.0,), (0.0,)), 10, region_weight=9.0)
    region = torch.zeros(2, 1, 4, 4, 4)
    region[:, :, 0, 0, 0] = 1.0
    batch = {"image": torch.randn(2, 3, 4, 4, 4), "condition": torch.rand(2, 9), "region": region}
    _, (noise, weight), _, kwargs = prepare(batch)
    assert torch.equal(kwargs["noise"], noise) and torch.equal(weight, 1.0 + 9.0 * region)
    loss = RegionWeightedLoss(torch.nn.L1Loss(reduction="none"))
    pred = noise.clone()
    pred[:, :, 0, 0, 0] += 1.0  # error 1 only in the tumour cell, all 3 channels
    # weighted mean: 2 samples x 3 channels x weight 10 x error 1 / sum of weights (2 x 3 x (63 + 10))
    assert float(loss(pred, (noise, weight))) == pytest.approx(60.0 / 438.0)
    assert float(loss(pred, noise)) == pytest.approx(6.0 / 384.0)  # a plain target: the plain mean
    with pytest.raises(KeyError, match="needs the batch key 'region'"):
        prepare({"image": batch["image"], "condition": batch["condition"]})
    with pytest.raises(ValueError, match="reduction='none'"):
        RegionWeightedLoss(torch.nn.L1Loss())


def test_mask_dice_term_penalises_a_mask_reconstructed_as_background():
    target = -torch.ones(2, 2, 16, 16)
    target[:, 1, 6:9, 6:9] = 1.0  # a small tumour: ~3.5 % of the mask channel
    missed = target.clone()
    missed[:, 1] = -1.0  # the mask channel reconstructed as all background
    zeros = torch.zeros(2, 3, 4, 4)
    outputs = (missed, zeros, torch.ones_like(zeros))
    plain = float(SliceVAELoss(kl_weight=0.0, ssim_weight=0.0)(outputs, target))
    with_dice = float(SliceVAELoss(kl_weight=0.0, ssim_weight=0.0, mask_dice_weight=1.0)(outputs, target))
    assert plain < 0.05 and with_dice > 0.95  # L1 barely notices, Dice does
    perfect = (target, zeros, torch.ones_like(zeros))
    assert float(SliceVAELoss(kl_weight=0.0, mask_dice_weight=1.0)(perfect, target)) == pytest.approx(0.0, abs=1e-4)


def test_condition_dropout_replaces_whole_vectors_by_the_null_condition():
    torch.manual_seed(0)
    prepare = VectorConditionLatentPrepareBatch(None, LatentScaler((1.0,), (0.0,)), 10, condition_dropout=0.5)
    batch = {"image": torch.randn(400, 1, 2, 2, 2), "condition": torch.rand(400, 9)}
    condition = prepare(batch)[3]["condition"]
    dropped = torch.isnan(condition).all(dim=1)
    assert torch.isnan(condition).any(dim=1).eq(dropped).all()  # a vector is dropped whole or kept whole
    assert 0.4 < float(dropped.float().mean()) < 0.6
    assert torch.equal(condition[~dropped], batch["condition"][~dropped])
    never = VectorConditionLatentPrepareBatch(None, LatentScaler((1.0,), (0.0,)), 10)
    assert not torch.isnan(never(batch)[3]["condition"]).any()
    with pytest.raises(ValueError, match="condition_dropout"):
        VectorConditionLatentPrepareBatch(None, LatentScaler((1.0,), (0.0,)), 10, condition_dropout=1.0)


def test_decoded_mask_keeps_its_largest_26_connected_piece_and_counts_what_it_drops():
    decoded = -torch.ones(2, 10, 10, 10)
    decoded[0, 2:5, 2:5, 2:5] = 3.0  # FLAIR is clipped to [-1, 1]
    decoded[1, 4:8, 4:8, 4:8] = 0.7  # the tumour: 64 voxels
    decoded[1, 3, 3, 3] = 0.2  # touches the tumour's corner only: 26-connected, kept
    decoded[1, 0, 9, 0] = 0.9  # a speck far away
    decoded[1, 9, 0, 9] = 0.0  # not above the threshold
    image, mask, removed = split_pair(decoded)
    assert image.max() == 1.0 and image.min() == -1.0 and mask.dtype == np.uint8
    assert mask.sum() == 65 and removed == 1 and mask[3, 3, 3] == 1 and mask[0, 9, 0] == 0
    _, as_decoded, none_removed = split_pair(decoded, keep_largest_component=False)
    assert as_decoded.sum() == 66 and none_removed == 0
    _, empty, nothing = split_pair(-torch.ones(2, 4, 4, 4))
    assert empty.sum() == 0 and nothing == 0


def test_posterior_mean_validation_is_repeatable_and_the_cosine_rate_survives_a_resume():
    import math

    from ignite.engine import Engine

    from shared.engines.learning_rate import CosineLearningRate
    from shared.engines.reconstruction import PosteriorMeanInferer
    from shared.networks.slice_vae import SliceVAE

    torch.manual_seed(0)
    vae = SliceVAE(channels=(8, 8), latent_channels=2, norm_num_groups=4, position_embedding=True).eval()
    slices, positions = torch.rand(3, 2, 16, 16), torch.tensor([0, 5, 9])
    first, second = (PosteriorMeanInferer()(slices, vae, positions=positions) for _ in range(2))
    assert torch.equal(first, second) and first.shape == slices.shape
    assert not torch.equal(vae(slices, positions)[0], vae(slices, positions)[0])  # the forward samples
    optimiser = torch.optim.Adam(vae.parameters(), lr=1.0)
    schedule = CosineLearningRate(optimiser, 1e-3, epochs=4)
    rates = []
    engine = Engine(lambda e, b: rates.append(optimiser.param_groups[0]["lr"]))
    schedule.attach(engine)
    engine.run([0], max_epochs=4)
    assert rates == pytest.approx([1e-3 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)])
    resumed = Engine(lambda e, b: rates.append(optimiser.param_groups[0]["lr"]))  # as after a checkpoint of epoch 2
    schedule.attach(resumed)
    resumed.state.epoch, resumed.state.iteration = 2, 2
    resumed.run([0], max_epochs=4)
    assert rates[-2:] == pytest.approx(rates[2:4])
