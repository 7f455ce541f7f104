"""Sampling benchmarks of the three bundles (issue 7): one generated volume, timed, with its cost.

:func:`measure` builds a bundle's networks from its own configs (paper size: the training
configs alone; demo size: with ``configs/presets/demo.yaml``), optionally loads trained weights,
and generates one volume per run exactly as the bundle's sampler does (same helpers: guided
DDIM for the mask LDM, SPADE-conditioned DDIM, vector-conditioned DDIM with ``eta`` 1 for the
slice-based LDM), under a :class:`shared.fast_path.FastPath`. It reports the median seconds
per volume, per denoising step and for decoding, the FLOPs of one denoising step
(``torch.utils.flop_counter``), parameters and the process's peak memory. The first run's
output is saved so that two variants of the same seed can be compared
(:mod:`shared.benchmarks.accuracy_guard`).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.fast_path import FastPath
from shared.io import InputError

BUNDLES = ("ventricle_mask_ldm", "spade_mri_ldm", "slice_based_ldm_brats")
SIZES = ("paper", "demo")
SHAPES = {
    "paper": {
        "ventricle_mask_ldm": (96, 112, 96),
        "spade_mri_ldm": (96, 128, 96),
        "slice_based_ldm_brats": (192, 192, 96),
    },
    "demo": {"ventricle_mask_ldm": (64, 64, 64), "spade_mri_ldm": (64, 64, 64), "slice_based_ldm_brats": (64, 64, 32)},
}
#: the papers' samplers: DDIM 25 with guidance 4 (doubled batch), DDIM 50, DDIM 50 (eta 1)
DEFAULT_STEPS = {"ventricle_mask_ldm": 25, "spade_mri_ldm": 50, "slice_based_ldm_brats": 50}
GUIDANCE_SCALE = 4.0
STAGE_CONFIGS = ("configs/train_autoencoder.yaml", "configs/train_diffusion.yaml")
DEMO_PRESET = "configs/presets/demo.yaml"


@dataclass
class Sampler:
    """One bundle's sampler, ready to run.

    Attributes:
        networks: ``{name: network}`` (parameter counts; prepared by the fast path).
        shape: the generated volume's spatial shape.
        denoise: ``denoise(noise, num_inference_steps) -> latent`` (the bundle's sampling loop).
        decode: ``decode(latent) -> output (B, C, *shape)`` (the bundle's decoder).
        latent_shape: ``(C, *latent_spatial)``.
        output: how the decoded output is read: ``labels`` (argmax of class logits),
            ``image`` (one channel in [0, 1]) or ``pair`` (FLAIR in [-1, 1] + mask channel).
        single_pass: the mask LDM only: one unguided denoising step (one network pass at batch 1).
    """

    networks: dict[str, torch.nn.Module]
    shape: tuple[int, ...]
    denoise: Callable[[torch.Tensor, int], torch.Tensor]
    decode: Callable[[torch.Tensor], torch.Tensor]
    latent_shape: tuple[int, ...]
    output: str
    single_pass: Callable[[torch.Tensor], torch.Tensor] | None = None


def bundle_networks(
    bundle: str, ids: dict[str, str], device: str | torch.device, presets: Sequence[str] = (), root: Path | None = None
) -> tuple[dict[str, torch.nn.Module], Any]:
    """Build networks ``{name: config id}`` from a bundle's training configs (plus ``presets``), in eval mode.

    Returns:
        ``({name: network}, the ConfigParser)``.
    """
    from monai.bundle import ConfigParser

    if bundle not in BUNDLES:
        raise InputError(f"bundle: expected one of {', '.join(BUNDLES)}, got {bundle!r}")
    folder = (root or Path(__file__).resolve().parents[2]) / "bundles" / bundle
    parser = ConfigParser()
    parser.read_config([str(folder / name) for name in (*STAGE_CONFIGS, *presets)])
    networks = {name: parser.get_parsed_content(config_id).to(device).eval() for name, config_id in ids.items()}
    return networks, parser


def _load_weights(networks: dict[str, torch.nn.Module], models: Path, device: str | torch.device) -> None:
    from shared.checkpoints import load_weights

    files = {"autoencoder": models / "model_autoencoder.pt", "diffusion": models / "model.pt"}
    for name, path in files.items():
        if not path.is_file():
            raise InputError(f"{path}: missing (weights of the bundle's {name})")
        try:
            networks[name].load_state_dict(load_weights(path, device))
        except RuntimeError as error:
            raise InputError(f"{path}: does not fit the {name} built from the configs ({str(error)[:200]})") from None


def synthetic_label_map(num_classes: int, shape: Sequence[int]) -> torch.Tensor:
    """A deterministic label map ``(*shape)`` with every class present: nested shells around the centre."""
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, s) for s in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids)) / np.sqrt(len(shape))
    return torch.as_tensor(np.minimum((radius * num_classes).astype(np.int64), num_classes - 1))


def build_sampler(
    bundle: str,
    size: str,
    device: str | torch.device,
    fast: FastPath,
    models: str | os.PathLike | None = None,
    shape: Sequence[int] | None = None,
) -> Sampler:
    """The bundle's networks at ``size`` (``paper`` | ``demo``), prepared by ``fast``, wrapped as a :class:`Sampler`.

    ``models``: a folder with the bundle's trained ``model.pt`` and ``model_autoencoder.pt``
    (they must fit the networks of ``size``; its ``grid.json`` sets the shape); without it the
    weights are random (timing only).
    """
    from shared.engines.diffusion import make_context, null_context
    from shared.latents import latent_shape
    from shared.networks.slice_stack import SliceStackAutoencoder
    from shared.sampling.schedulers import make_scheduler

    if size not in SIZES:
        raise InputError(f"size: expected one of {', '.join(SIZES)}, got {size!r}")
    if shape is None and models is not None and (Path(models) / "grid.json").is_file():
        from shared.io import read_grid_reference

        shape = read_grid_reference(Path(models) / "grid.json")[0]
    shape = tuple(int(s) for s in (shape or SHAPES[size][bundle]))
    presets = (DEMO_PRESET,) if size == "demo" else ()
    ids = {"autoencoder": "autoencoder_def", "diffusion": "network_def"}
    networks, parser = bundle_networks(bundle, ids, device, presets)
    if models is not None:
        _load_weights(networks, Path(models), device)
    for network in networks.values():
        fast.prepare(network)
    autoencoder, diffusion = networks["autoencoder"], networks["diffusion"]
    scheduler = make_scheduler("ddim", 1000, parser["beta_start"], parser["beta_end"])
    if bundle == "ventricle_mask_ldm":
        c = torch.full((1,), 0.5, device=device)
        context, null = make_context(c, torch.ones(1, dtype=torch.bool, device=device)), null_context(1, device)
        z_shape = latent_shape(autoencoder, parser.get_parsed_content("num_classes"), shape, device)
        denoise = partial(_guided, diffusion, scheduler, context, null)
        single = partial(_guided, diffusion, scheduler, context, None, steps=1)
        return Sampler(networks, shape, denoise, autoencoder.decode_stage_2_outputs, z_shape, "labels", single)
    if bundle == "spade_mri_ldm":
        num_classes = parser.get_parsed_content("num_classes")
        seg = torch.nn.functional.one_hot(synthetic_label_map(num_classes, shape), num_classes)
        seg = seg.permute(3, 0, 1, 2)[None].float().to(device)
        z_shape = latent_shape(autoencoder, 1, shape, device)
        denoise = partial(_guided, partial(diffusion, seg=seg), scheduler, None, None)
        decode = partial(autoencoder.decode_stage_2_outputs, seg=seg)
        return Sampler(networks, shape, denoise, decode, z_shape, "image")
    stack = SliceStackAutoencoder(autoencoder, chunk_size=parser["slice_chunk_size"])
    vector = torch.full((1, 9), 0.5, device=device)
    z_shape = latent_shape(stack, 2, shape, device)
    denoise = partial(_guided, diffusion, scheduler, vector, None, eta=1.0)
    return Sampler(networks, shape, denoise, stack.decode_stage_2_outputs, z_shape, "pair")


def _guided(
    model: Callable, scheduler: Any, context: Any, null: Any, noise: torch.Tensor, steps: int, eta: float | None = None
) -> torch.Tensor:
    from shared.sampling.guidance import sample_with_guidance

    step_kwargs: dict[str, Any] = {"generator": torch.Generator(device=noise.device).manual_seed(0)}
    if eta is not None:
        step_kwargs["eta"] = eta
    scale = GUIDANCE_SCALE if null is not None else 1.0
    return sample_with_guidance(model, scheduler, noise, context, null, scale, steps, False, step_kwargs)


def step_flops(sampler: Sampler, device: str | torch.device) -> int:
    """FLOPs of one denoising step (one network call; two samples for guidance), counted in eager fp32."""
    from torch.utils.flop_counter import FlopCounterMode

    noise = torch.randn(1, *sampler.latent_shape, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        sampler.denoise(noise, 1)
    return int(counter.get_total_flops())


def peak_memory_gb(device: str | torch.device) -> dict[str, float]:
    """The process's peak resident memory (and peak CUDA allocation on a CUDA device), in GB."""
    peak = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}
    if torch.device(device).type == "cuda":
        peak["peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 1024**3
    return peak


def _synchronise(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    bundle: str,
    size: str = "demo",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    decode_roi: Sequence[int] | None = None,
    steps: int | None = None,
    runs: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    models: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    count_flops: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Generate ``warmup + runs`` volumes of one bundle under one fast-path variant; return the figures.

    Each run starts from the same noise (``seed``), so runs repeat one sample; ``output`` saves it
    (``.pt``: the decoded tensor) for the accuracy guard. Times are medians over ``runs``.
    """
    fast = FastPath(precision, bool(channels_last), bool(compile), decode_roi)
    steps = int(steps or DEFAULT_STEPS[bundle])
    if runs < 1 or warmup < 0 or steps < 1:
        raise InputError(f"runs >= 1, warmup >= 0 and steps >= 1 expected, got {runs}, {warmup}, {steps}")
    torch.manual_seed(seed)  # the same random weights in every variant's process when no models are given
    sampler = build_sampler(bundle, size, device, fast, models)
    flops = step_flops(sampler, device) if count_flops else 0
    noise = torch.randn(1, *sampler.latent_shape, generator=torch.Generator().manual_seed(seed)).to(device)
    sampling, decoding, decoded = [], [], None
    for index in range(warmup + runs):
        with fast.inference(device):
            _synchronise(device)
            began = time.perf_counter()
            latent = sampler.denoise(fast.layout(noise), steps)
            _synchronise(device)
            sampled = time.perf_counter()
            result = fast.decode(sampler.decode, latent.float())
            _synchronise(device)
            ended = time.perf_counter()
        if index >= warmup:
            sampling.append(sampled - began)
            decoding.append(ended - sampled)
        decoded = result if decoded is None else decoded
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        torch.save(decoded.cpu(), output)
    per_step = statistics.median(sampling) / steps
    figures = {
        "bundle": bundle,
        "size": size,
        "variant": fast.describe(),
        "shape": "x".join(str(s) for s in sampler.shape),
        "latent": "x".join(str(s) for s in sampler.latent_shape),
        "steps": steps,
        "parameters_m": sum(p.numel() for n in sampler.networks.values() for p in n.parameters()) / 1e6,
        "seconds_per_volume": statistics.median(s + d for s, d in zip(sampling, decoding)),
        "seconds_per_step": per_step,
        "decode_seconds": statistics.median(decoding),
        "gflop_per_step": flops / 1e9,
        "gflop_per_second": flops / 1e9 / per_step if flops else float("nan"),
        "runs": runs,
        "output": sampler.output,
    }
    figures.update(peak_memory_gb(device))
    return figures


def compare_decoded(reference: torch.Tensor, candidate: torch.Tensor, output: str) -> dict[str, float]:
    """PSNR of the image channel and Dice of the mask / label map of two decoded outputs of one seed."""
    from shared.benchmarks.accuracy_guard import image_psnr, label_dice

    a, b = reference.float().numpy()[0], candidate.float().numpy()[0]
    if output == "labels":
        return {"psnr_db": float("nan"), "dice": label_dice(a.argmax(0), b.argmax(0))}
    if output == "image":
        return {"psnr_db": image_psnr(np.clip(a[0], 0, 1), np.clip(b[0], 0, 1), 1.0), "dice": float("nan")}
    psnr = image_psnr(np.clip(a[0], -1, 1), np.clip(b[0], -1, 1), 2.0)
    return {"psnr_db": psnr, "dice": label_dice((a[1] > 0).astype(np.uint8), (b[1] > 0).astype(np.uint8))}


def machine_description(device: str) -> dict[str, str]:
    """CPU model, threads, torch version and device, for the results table."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    described = {"cpu": cpu, "threads": str(torch.get_num_threads()), "torch": torch.__version__, "device": device}
    if torch.device(device).type == "cuda":
        described["gpu"] = torch.cuda.get_device_name(device)
    return described
