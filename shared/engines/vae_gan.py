"""The VAE-GAN training step of a (SPADE) autoencoder as one MONAI/Ignite trainer.

MONAI's ``AdversarialTrainer`` passes the same extra arguments to generator and
discriminator and expects the generator to return one tensor; a ``SPADEAutoencoderKL``
needs the segmentation, returns ``(reconstruction, z_mu, z_sigma)`` and is trained with a
KL term and an adversarial term that starts after a warm-up. :class:`VaeGanTrainer` does
both steps in one iteration:

1. generator: ``L1 + kl_weight * KL + perceptual_weight * perceptual + adv_weight * LSGAN(D(recon), real)``
2. discriminator (after the warm-up): ``adv_weight * (LSGAN(D(recon), fake) + LSGAN(D(image), real)) / 2``

Every term is in the iteration output (``g_loss``, ``d_loss``, ``recon_loss``, ``kl_loss``,
``perceptual_loss``, ``adv_loss``; ``loss`` is ``g_loss``; decollated per sample like MONAI's
trainers, see :func:`loss_values`) and, averaged over each epoch, in
``engine.state.metrics`` (names in :data:`EPOCH_METRICS`), so ``StatsHandler``,
``TensorBoardStatsHandler`` and ``--tracking mlflow`` record the generator and the
discriminator losses, not only ``loss``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from ignite.metrics import Average
from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from monai.losses import PatchAdversarialLoss

from shared.losses import kl_divergence

LOSS_NAMES = ("g_loss", "d_loss", "recon_loss", "kl_loss", "perceptual_loss", "adv_loss")
EPOCH_METRICS = tuple(f"epoch_{name}" for name in LOSS_NAMES)


def loss_values(output: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``{name: value}`` of every loss in an iteration output (decollated list or dict).

    Use as a handler's ``output_transform`` to log all of them, e.g. ``TensorBoardStatsHandler``.
    """
    first = output[0] if isinstance(output, Sequence) else output
    return {name: float(first[name]) for name in LOSS_NAMES}


def _epoch_averages() -> dict[str, Average]:
    """Ignite ``Average`` metrics of every loss in the iteration output, reset each epoch."""

    def pick(name: str) -> Callable[[Any], float]:
        return lambda output: loss_values(output)[name]

    return {f"epoch_{name}": Average(output_transform=pick(name)) for name in LOSS_NAMES}


class VaeGanTrainer(Trainer):
    """Trains an autoencoder ``G(image[, seg]) -> (recon, z_mu, z_sigma)`` with a patch discriminator.

    Batches are dictionaries: ``image_key`` -> ``(B, C, *spatial)`` images and, for SPADE,
    ``seg_key`` -> ``(B, K, *spatial)`` one-hot segmentations (``seg_key=None`` for a plain
    ``AutoencoderKL``).

    Args:
        device: where the networks run.
        max_epochs: epochs to train.
        train_data_loader: yields the batch dictionaries.
        autoencoder: generator, e.g. ``monai.networks.nets.SPADEAutoencoderKL``.
        g_optimizer: optimiser of the autoencoder.
        discriminator: e.g. ``monai.networks.nets.PatchDiscriminator`` (list output, logits last).
        d_optimizer: optimiser of the discriminator.
        kl_weight: weight of the KL term (docs/method.md: 1e-6).
        adv_weight: weight of the adversarial terms (docs/method.md: 0.005-0.01); 0 disables the GAN.
        warmup_epochs: epochs of reconstruction-only training before the GAN terms start.
        perceptual_loss: optional ``loss(recon, image)``, e.g. ``monai.losses.PerceptualLoss``.
        perceptual_weight: its weight (docs/method.md: 0.001).
        image_key: batch key of the images.
        seg_key: batch key of the one-hot segmentation passed to the autoencoder, or ``None``.
        train_handlers: Ignite/MONAI handlers (``StatsHandler``, ``CheckpointSaver``, ...).
        epoch_length: iterations per epoch (default: the loader's length).
        inferer: runs the autoencoder on a batch (default: MONAI ``SimpleInferer``).
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        autoencoder: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        discriminator: torch.nn.Module,
        d_optimizer: torch.optim.Optimizer,
        kl_weight: float = 1e-6,
        adv_weight: float = 0.01,
        warmup_epochs: int = 0,
        perceptual_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        perceptual_weight: float = 0.0,
        image_key: str = "image",
        seg_key: str | None = "seg",
        train_handlers: Sequence | None = None,
        epoch_length: int | None = None,
        inferer: Inferer | None = None,
    ) -> None:
        for name, value in (
            ("kl_weight", kl_weight),
            ("adv_weight", adv_weight),
            ("perceptual_weight", perceptual_weight),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        averages = _epoch_averages()  # registered before the handlers, so they see each epoch's values
        key_metric = {"epoch_g_loss": averages.pop("epoch_g_loss")}
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            prepare_batch=lambda batch, *_args, **_kwargs: batch,
            iteration_update=None,
            postprocessing=None,
            key_metric=key_metric,
            additional_metrics=averages,
            metric_cmp_fn=lambda current, best: current < best,  # the lowest generator loss is the best
            handlers=train_handlers,
            amp=False,
            decollate=True,  # per-sample outputs with the scalar losses replicated, as MONAI's handlers expect
        )
        self.autoencoder = autoencoder
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.discriminator = discriminator
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.kl_weight = float(kl_weight)
        self.adv_weight = float(adv_weight)
        self.warmup_epochs = int(warmup_epochs)
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = float(perceptual_weight)
        self.image_key = image_key
        self.seg_key = seg_key
        self.adversarial = PatchAdversarialLoss(criterion="least_squares")
        self.state.g_network = autoencoder  # names MONAI's checkpoint/handler conventions look for
        self.state.d_network = discriminator

    def gan_active(self, epoch: int) -> bool:
        """True once the warm-up is over (``epoch`` counts from 1) and the GAN has a weight."""
        return self.adv_weight > 0 and epoch > self.warmup_epochs

    def _discriminate(self, images: torch.Tensor) -> torch.Tensor:
        outputs = self.discriminator(images.contiguous())
        return outputs[-1] if isinstance(outputs, (list, tuple)) else outputs

    def _iteration(self, engine: VaeGanTrainer, batchdata: Mapping[str, Any]) -> Any:
        if batchdata is None:
            raise ValueError("VaeGanTrainer: no batch data for this iteration")
        images = torch.as_tensor(batchdata[self.image_key]).to(engine.state.device)
        args = () if self.seg_key is None else (torch.as_tensor(batchdata[self.seg_key]).to(engine.state.device),)
        gan = self.gan_active(engine.state.epoch)
        zero = torch.zeros((), device=images.device)

        # generator (autoencoder) step
        self.autoencoder.train()
        self.g_optimizer.zero_grad(set_to_none=True)
        recon, z_mu, z_sigma = self.inferer(images, self.autoencoder, *args)
        recon_loss = torch.nn.functional.l1_loss(recon.float(), images.float())
        kl_loss = kl_divergence(z_mu, z_sigma)
        perceptual = self.perceptual_loss(recon.float(), images.float()) if self.perceptual_loss is not None else zero
        adv_loss = (
            self.adversarial(self._discriminate(recon.float()), target_is_real=True, for_discriminator=False)
            if gan
            else zero
        )
        g_loss = (
            recon_loss + self.kl_weight * kl_loss + self.perceptual_weight * perceptual + self.adv_weight * adv_loss
        )
        g_loss.backward()
        self.g_optimizer.step()

        # discriminator step
        d_loss = zero
        if gan:
            self.discriminator.train()
            self.d_optimizer.zero_grad(set_to_none=True)
            fake = self.adversarial(
                self._discriminate(recon.detach().float()), target_is_real=False, for_discriminator=True
            )
            real = self.adversarial(self._discriminate(images.float()), target_is_real=True, for_discriminator=True)
            d_loss = self.adv_weight * 0.5 * (fake + real)
            d_loss.backward()
            self.d_optimizer.step()

        losses = {
            "g_loss": g_loss,
            "d_loss": d_loss,
            "recon_loss": recon_loss,
            "kl_loss": kl_loss,
            "perceptual_loss": perceptual,
            "adv_loss": adv_loss,
        }
        output: dict[str, torch.Tensor] = {name: value.detach() for name, value in losses.items()}
        output.update(image=images, pred=recon.detach(), loss=output["g_loss"])
        engine.state.output = output
        engine.fire_event(IterationEvents.MODEL_COMPLETED)  # MONAI decollates (and post-processes) here
        return engine.state.output
