"""Latent scaling, conditional batches with conditioning dropout, and classifier-free guided sampling."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.inferers import DiffusionInferer
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from shared.engines.diffusion import ConditionalLatentPrepareBatch, make_context, null_context
from shared.io import InputError
from shared.latents import LatentScaler
from shared.sampling.guidance import guided_eps, sample_with_guidance

torch.set_num_threads(2)


def tiny_autoencoder(classes: int = 5) -> AutoencoderKL:
    return AutoencoderKL(
        spatial_dims=3,
        in_channels=classes,
        out_channels=classes,
        channels=(8, 8),
        latent_channels=3,
        num_res_blocks=1,
        norm_num_groups=4,
        attention_levels=(False, False),
    )


def tiny_unet() -> DiffusionModelUNet:
    return DiffusionModelUNet(
        spatial_dims=3,
        in_channels=3,
        out_channels=3,
        channels=(8, 8),
        attention_levels=(False, True),
        num_res_blocks=1,
        num_head_channels=(0, 8),
        norm_num_groups=4,
        with_conditioning=True,
        cross_attention_dim=2,
    )


def test_latent_scaler_global_and_per_channel(tmp_path):
    z = torch.randn(4, 3, 6, 6, 6) * torch.tensor([0.3, 1.6, 0.4]).view(1, 3, 1, 1, 1) + 2.0
    global_scaler = LatentScaler.fit(z)
    assert len(global_scaler.scale) == 1 and global_scaler.forward(z).std().item() == pytest.approx(1.0, rel=1e-4)
    per_channel = LatentScaler.fit(z, per_channel=True)
    scaled = per_channel.forward(z)
    for channel in range(3):
        assert scaled[:, channel].std().item() == pytest.approx(1.0, rel=1e-3)
        assert scaled[:, channel].mean().item() == pytest.approx(0.0, abs=1e-4)
    torch.testing.assert_close(per_channel.inverse(scaled), z)
    per_channel.save(tmp_path / "latent.json")
    assert LatentScaler.load(tmp_path / "latent.json") == per_channel
    with pytest.raises(InputError, match="missing.json: no such file"):
        LatentScaler.load(tmp_path / "missing.json")


def test_context_is_c_and_flag_or_the_null_context():
    context = make_context(torch.tensor([0.25, 0.75]), torch.tensor([True, False]))
    assert context.shape == (2, 1, 2)
    assert context[:, 0].tolist() == [[0.25, 1.0], [0.0, 0.0]]
    assert torch.equal(null_context(3), torch.zeros(3, 1, 2))


@pytest.mark.parametrize("p_uncond, expected_kept", [(0.0, 64), (1.0, 0)])
def test_prepare_batch_encodes_scales_and_drops_conditions(p_uncond, expected_kept):
    torch.manual_seed(0)
    autoencoder = tiny_autoencoder()
    prepare = ConditionalLatentPrepareBatch(autoencoder, LatentScaler((2.0,), (0.0,)), 1000, "c", p_uncond)
    batch = {"image": torch.rand(64, 5, 8, 8, 8), "c": torch.rand(64)}
    latents, target, args, kwargs = prepare(batch, device="cpu")
    assert latents.shape == (64, 3, 4, 4, 4) and target.shape == latents.shape and args == ()
    assert torch.equal(kwargs["noise"], target)
    assert kwargs["timesteps"].shape == (64,) and int(kwargs["timesteps"].max()) < 1000
    flags = kwargs["condition"][:, 0, 1]
    assert int(flags.sum()) == expected_kept
    kept = flags == 1
    torch.testing.assert_close(kwargs["condition"][kept, 0, 0], batch["c"][kept])


def test_prepare_batch_drop_rate_is_close_to_p():
    torch.manual_seed(1)
    prepare = ConditionalLatentPrepareBatch(tiny_autoencoder(), LatentScaler((1.0,), (0.0,)), 1000, "c", 0.2)
    _, _, _, kwargs = prepare({"image": torch.rand(400, 5, 4, 4, 4), "c": torch.rand(400)}, device="cpu")
    assert 0.13 < 1 - kwargs["condition"][:, 0, 1].mean().item() < 0.27


def test_guidance_combines_conditional_and_unconditional_predictions():
    def fake(x, timesteps, context):  # eps = c where conditioned, 0 for the null context
        return x * 0 + context[:, 0, 0].view(-1, 1, 1, 1, 1)

    x = torch.zeros(2, 1, 2, 2, 2)
    context = make_context(torch.tensor([0.5, 1.0]), torch.tensor([True, True]))
    for g in (0.0, 1.0, 4.0):
        eps = guided_eps(fake, x, torch.tensor(10), context, null_context(2), g)
        torch.testing.assert_close(eps[:, 0, 0, 0, 0], torch.tensor([0.5, 1.0]) * g)


def test_doubled_batch_equals_two_separate_passes():
    torch.manual_seed(0)
    unet = tiny_unet().eval()
    x = torch.randn(2, 3, 8, 8, 8)
    context = make_context(torch.tensor([0.2, 0.9]), torch.tensor([True, True]))
    with torch.no_grad():
        guided = guided_eps(unet, x, torch.tensor(500), context, null_context(2), 4.0)
        t = torch.full((2,), 500, dtype=torch.long)
        eps_c = unet(x, timesteps=t, context=context)
        eps_u = unet(x, timesteps=t, context=null_context(2))
    torch.testing.assert_close(guided, eps_u + 4.0 * (eps_c - eps_u), atol=1e-5, rtol=1e-4)


def test_ddim_sampling_runs_and_refuses_bad_settings():
    torch.manual_seed(0)
    unet = tiny_unet().eval()
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0205
    )
    noise = torch.randn(2, 3, 8, 8, 8)
    context = make_context(torch.tensor([0.1, 0.9]), torch.tensor([True, True]))
    one = sample_with_guidance(unet, scheduler, noise, context, null_context(2), 4.0, 5, progress=False)
    two = sample_with_guidance(unet, scheduler, noise, context, null_context(2), 4.0, 5, progress=False)
    assert one.shape == noise.shape and torch.all(torch.isfinite(one)) and torch.equal(one, two)
    with pytest.raises(InputError, match="guidance_scale: must be >= 0, got -1"):
        sample_with_guidance(unet, scheduler, noise, context, null_context(2), -1, 5)
    with pytest.raises(InputError, match="num_inference_steps: expected an integer >= 1, got 0"):
        sample_with_guidance(unet, scheduler, noise, context, null_context(2), 4.0, 0)


def test_one_training_epoch_with_monai_engine_and_inferer():
    torch.manual_seed(0)
    unet = tiny_unet()
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0205
    )
    data = [{"image": torch.rand(5, 8, 8, 8), "c": torch.tensor(0.1 * i)} for i in range(4)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=torch.utils.data.DataLoader(data, batch_size=2),
        network=unet,
        optimizer=torch.optim.Adam(unet.parameters(), 1e-4),
        loss_function=torch.nn.MSELoss(),
        inferer=DiffusionInferer(scheduler),
        prepare_batch=ConditionalLatentPrepareBatch(tiny_autoencoder(), LatentScaler((1.0,), (0.0,)), 1000, "c", 0.2),
    )
    trainer.run()
    assert trainer.state.iteration == 2 and torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"]))


def test_mosaic_shows_samples_spread_over_the_requested_c_smallest_first():
    from shared.viz import mosaic_indices

    c = [0.0] * 4 + [0.5] * 4 + [1.5] * 4
    assert [c[i] for i in mosaic_indices(c)] == [0.0, 0.5, 0.5, 1.5]  # both ends of the range shown
    assert mosaic_indices([1.0, 0.2, 0.5]) == [1, 2, 0]  # fewer samples than panels: all, by c
    assert mosaic_indices([]) == []
    assert len(mosaic_indices(list(range(100)))) == 4 and mosaic_indices(list(range(100)))[::3] == [0, 99]
