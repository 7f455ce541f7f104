"""The VAE-GAN trainer on a tiny 3D SPADE autoencoder: warm-up, both steps, every loss reported."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.nets import PatchDiscriminator, SPADEAutoencoderKL

from shared.engines.vae_gan import EPOCH_METRICS, LOSS_NAMES, VaeGanTrainer, loss_values


def tiny_batches(n: int = 2, classes: int = 3) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n):
        labels = torch.randint(0, classes, (2, 1, 16, 16, 16), generator=generator)
        seg = torch.nn.functional.one_hot(labels[:, 0], classes).permute(0, 4, 1, 2, 3).float()
        image = labels.float() / (classes - 1) + 0.05 * torch.randn(labels.shape, generator=generator)
        batches.append({"image": image, "seg": seg})
    return batches


def make_trainer(max_epochs: int, warmup_epochs: int, **kwargs) -> VaeGanTrainer:
    torch.manual_seed(0)
    autoencoder = SPADEAutoencoderKL(
        spatial_dims=3, label_nc=3, in_channels=1, out_channels=1, channels=(8, 8), latent_channels=2,
        num_res_blocks=1, norm_num_groups=4, attention_levels=(False, False),
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False, spade_intermediate_channels=8,
    )  # fmt: skip
    discriminator = PatchDiscriminator(spatial_dims=3, num_layers_d=2, channels=8, in_channels=1, out_channels=1)
    return VaeGanTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=tiny_batches(),
        autoencoder=autoencoder,
        g_optimizer=torch.optim.Adam(autoencoder.parameters(), lr=1e-3),
        discriminator=discriminator,
        d_optimizer=torch.optim.Adam(discriminator.parameters(), lr=1e-3),
        warmup_epochs=warmup_epochs,
        **kwargs,
    )


def discriminator_weights(trainer: VaeGanTrainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in trainer.discriminator.parameters()])


def test_warm_up_trains_only_the_autoencoder_then_both_networks_train():
    trainer = make_trainer(max_epochs=1, warmup_epochs=1)
    before = discriminator_weights(trainer)
    trainer.run()
    assert torch.equal(discriminator_weights(trainer), before)  # warm-up: discriminator untouched
    assert trainer.state.metrics["epoch_d_loss"] == 0.0 and trainer.state.metrics["epoch_adv_loss"] == 0.0
    assert trainer.state.metrics["epoch_recon_loss"] > 0.0

    trainer.state.max_epochs = 2
    trainer.run()  # epoch 2: after the warm-up
    assert not torch.equal(discriminator_weights(trainer), before)
    assert trainer.state.metrics["epoch_d_loss"] > 0.0 and trainer.state.metrics["epoch_adv_loss"] > 0.0


def test_every_loss_is_in_the_output_and_averaged_per_epoch():
    trainer = make_trainer(
        max_epochs=1, warmup_epochs=0, perceptual_loss=torch.nn.functional.mse_loss, perceptual_weight=0.5
    )
    trainer.run()
    assert isinstance(trainer.state.output, list) and len(trainer.state.output) == 2  # decollated per sample
    output = trainer.state.output[0]
    for name in ("g_loss", "d_loss", "recon_loss", "kl_loss", "perceptual_loss", "adv_loss"):
        assert isinstance(output[name], float) and math.isfinite(output[name]), name  # scalars replicated
    assert output["loss"] == output["g_loss"] and output["pred"].shape == output["image"].shape == (1, 16, 16, 16)
    assert loss_values(trainer.state.output) == {name: float(output[name]) for name in LOSS_NAMES}
    expected = (
        output["recon_loss"] + 1e-6 * output["kl_loss"] + 0.5 * output["perceptual_loss"] + 0.01 * output["adv_loss"]
    )
    assert output["g_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert set(EPOCH_METRICS) <= set(trainer.state.metrics)


def test_reconstruction_improves_with_training():
    trainer = make_trainer(max_epochs=1, warmup_epochs=100)
    trainer.run()
    first = trainer.state.metrics["epoch_recon_loss"]
    trainer.state.max_epochs = 15
    trainer.run()
    assert trainer.state.metrics["epoch_recon_loss"] < 0.7 * first


@pytest.mark.parametrize(
    "kwargs, message",
    [({"adv_weight": -1}, "adv_weight must be >= 0"), ({"warmup_epochs": -2}, "warmup_epochs must be >= 0")],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(max_epochs=1, warmup_epochs=kwargs.pop("warmup_epochs", 0), **kwargs)
