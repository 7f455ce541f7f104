"""Build a bundle's networks at their paper-size defaults, print parameter counts, time one forward pass.

Usage (from the project root)::

    python scripts/paper_size_check.py ventricle_mask_ldm                  # counts + forward at 96x112x96
    python scripts/paper_size_check.py ventricle_mask_ldm --forward False  # counts only
    python scripts/paper_size_check.py ventricle_mask_ldm --device cuda
    python scripts/paper_size_check.py spade_mri_ldm                       # counts + forward at 96x128x96
    python scripts/paper_size_check.py slice_based_ldm_brats               # counts, DDIM step + decode of 192x192x96

Networks come from the bundle's own training configs (no preset), so the figures describe what
the bundle really trains. A forward pass of the mask LDM at paper size needs about 6 GB of RAM
and ~30 s on 2 CPU cores.
"""

from __future__ import annotations

import time

import torch
from monai.bundle import ConfigParser

from shared.benchmarks.networks import bundle_networks
from shared.bounds import Positive
from shared.cli.runner import run_cli

#: A grid ``X, Y, Z`` (each at least 1 voxel).
Shape = tuple[Positive, Positive, Positive]


def _count(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def _paper_size_networks(bundle_name: str, ids: dict[str, str], device: str) -> tuple[dict, ConfigParser]:
    """Build the networks ``{report name: config id}`` of a bundle's training configs; print their sizes.

    Returns:
        ``({report name: network}, the parsed training configs)``.
    """
    networks, parser = bundle_networks(bundle_name, ids, device)
    for name, network in networks.items():
        print(f"{name} ({type(network).__name__}): {_count(network) / 1e6:.1f} M parameters")
    return networks, parser


def ventricle_mask_ldm(shape: Shape = (96, 112, 96), forward: bool = True, device: str = "cpu") -> dict:
    """Parameter counts (and one timed forward pass each, batch 1) of the mask LDM at paper size.

    Args:
        shape: the image grid ``X,Y,Z`` (default: the paper's).
        forward: also time one forward pass of each network (``--noforward``: counts only).
        device: ``cpu`` or ``cuda[:N]``.
    """
    networks, parser = _paper_size_networks(
        "ventricle_mask_ldm", {"autoencoder": "autoencoder_def", "diffusion_unet": "network_def"}, device
    )
    num_classes = parser.get_parsed_content("num_classes")
    autoencoder, unet = networks["autoencoder"], networks["diffusion_unet"]
    report: dict = {f"{name}_parameters": _count(network) for name, network in networks.items()}
    if forward:
        with torch.no_grad():
            labels = torch.zeros(1, num_classes, *shape, device=device)
            labels[:, 0] = 1
            start = time.perf_counter()
            z = autoencoder.encode_stage_2_inputs(labels)
            logits = autoencoder.decode_stage_2_outputs(z)
            report["autoencoder_forward_s"] = round(time.perf_counter() - start, 2)
            context = torch.tensor([[[0.5, 1.0]]], device=device)
            start = time.perf_counter()
            eps = unet(z, timesteps=torch.tensor([500], device=device), context=context)
            report["unet_forward_s"] = round(time.perf_counter() - start, 2)
        seconds_ae, seconds_unet = report["autoencoder_forward_s"], report["unet_forward_s"]
        print(f"autoencoder {tuple(labels.shape)} -> {tuple(z.shape)} -> {tuple(logits.shape)}: {seconds_ae} s")
        print(f"diffusion UNet forward {tuple(eps.shape)}: {seconds_unet} s")
    return report


def spade_mri_ldm(shape: Shape = (96, 128, 96), forward: bool = True, device: str = "cpu") -> dict:
    """Parameter counts (and one timed forward pass each, batch 1) of the SPADE LDM at paper size.

    Args:
        shape: the image grid ``X,Y,Z`` (default: the paper's).
        forward: also time one forward pass of each network (``--noforward``: counts only).
        device: ``cpu`` or ``cuda[:N]``.
    """
    ids = {"autoencoder": "autoencoder_def", "discriminator": "discriminator_def", "diffusion_unet": "network_def"}
    networks, parser = _paper_size_networks("spade_mri_ldm", ids, device)
    num_classes = parser.get_parsed_content("num_classes")
    autoencoder, unet = networks["autoencoder"], networks["diffusion_unet"]
    report: dict = {f"{name}_parameters": _count(network) for name, network in networks.items()}
    if forward:
        with torch.no_grad():
            image = torch.rand(1, 1, *shape, device=device)
            seg = torch.zeros(1, num_classes, *shape, device=device)
            seg[:, 2] = 1
            start = time.perf_counter()
            z = autoencoder.encode_stage_2_inputs(image)
            recon = autoencoder.decode_stage_2_outputs(z, seg)
            report["autoencoder_forward_s"] = round(time.perf_counter() - start, 2)
            start = time.perf_counter()
            eps = unet(z, timesteps=torch.tensor([500], device=device), seg=seg)
            report["unet_forward_s"] = round(time.perf_counter() - start, 2)
        seconds_ae, seconds_unet = report["autoencoder_forward_s"], report["unet_forward_s"]
        print(f"autoencoder {tuple(image.shape)} -> {tuple(z.shape)} -> {tuple(recon.shape)}: {seconds_ae} s")
        print(f"diffusion UNet forward {tuple(eps.shape)} with the {num_classes}-class label map: {seconds_unet} s")
    return report


def slice_based_ldm_brats(
    shape: Shape = (192, 192, 96),
    forward: bool = True,
    device: str = "cpu",
    chunk_size: Positive = 8,
) -> dict:
    """Parameter counts against the paper's 159 M, then one DDIM step and the chunked slice decode of one volume.

    Args:
        shape: the image grid ``X,Y,Z`` (default: the paper's).
        forward: also time one DDIM step and the decode (``--noforward``: counts only).
        device: ``cpu`` or ``cuda[:N]``.
        chunk_size: slices decoded at once.
    """
    from shared.networks.slice_stack import SliceStackAutoencoder
    from shared.sampling.schedulers import make_scheduler

    networks, parser = _paper_size_networks(
        "slice_based_ldm_brats", {"slice_vae": "autoencoder_def", "diffusion_unet": "network_def"}, device
    )
    vae, unet = networks["slice_vae"], networks["diffusion_unet"]
    total = _count(vae) + _count(unet)
    print(f"total: {total / 1e6:.1f} M parameters ({100 * (total / 159e6 - 1):+.1f} % against the paper's 159 M)")
    report: dict = {f"{name}_parameters": _count(network) for name, network in networks.items()}
    report["total_parameters"] = total
    if forward:
        stack = SliceStackAutoencoder(vae, chunk_size=chunk_size)
        scheduler = make_scheduler("ddim", 1000, parser["beta_start"], parser["beta_end"])
        scheduler.set_timesteps(50)
        with torch.no_grad():
            z = torch.randn(1, *stack.latent_shape(2, shape, device), device=device)
            vector = torch.full((1, 9), 0.5, device=device)
            start = time.perf_counter()
            eps = unet(z, timesteps=torch.tensor([int(scheduler.timesteps[0])], device=device), context=vector)
            z, _ = scheduler.step(eps, scheduler.timesteps[0], z, eta=1.0)
            report["ddim_step_s"] = round(time.perf_counter() - start, 2)
            start = time.perf_counter()
            volume = stack.decode_stage_2_outputs(z)
            report["decode_s"] = round(time.perf_counter() - start, 2)
        print(f"one DDIM step on the stacked latent {tuple(z.shape)}: {report['ddim_step_s']} s")
        print(f"decode of {shape[2]} slices in chunks of {chunk_size} -> {tuple(volume.shape)}: {report['decode_s']} s")
    return report


if __name__ == "__main__":
    run_cli(
        {
            "ventricle_mask_ldm": ventricle_mask_ldm,
            "spade_mri_ldm": spade_mri_ldm,
            "slice_based_ldm_brats": slice_based_ldm_brats,
        }
    )
