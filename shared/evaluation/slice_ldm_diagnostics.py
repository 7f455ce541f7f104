"""Where does the slice-based LDM lose image fidelity? Its VAE and its diffusion, measured apart.

- **Slice VAE** (:func:`vae_reconstruction`): every held-out volume is encoded slice by slice and
  decoded again; the FLAIR channel's PSNR and SSIM (on [0, 1]) per slice in each view (axial,
  coronal, sagittal), the mask's Dice, and the *streak index* of both volumes: the mean absolute
  difference between neighbouring axial slices. A VAE that streaks raises it above the real
  volume's; one that blurs lowers it. The VAE alone bounds what the whole model can reach.
- **Diffusion** (:func:`latent_statistics`): latents the diffusion model generates against real
  volumes' latents (encoded and scaled the way training sees them): per-channel mean and SD, and
  the correlation of neighbouring latent voxels along the slice axis and within a slice. Real
  latents are smooth along the slice axis; generated ones that are less so decode to streaks.

``scripts/slice_ldm_diagnostics.py`` runs both on a bundle's trained models and writes
``diagnostics.json``, ``diagnostics.md`` and pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from shared.bounds import Count, Positive
from shared.io import InputError

VIEWS = {"axial": 2, "coronal": 1, "sagittal": 0}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 10.0 * np.log10(1.0 / max(mse, 1e-12))


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=1.0))


def streak_index(volume: np.ndarray) -> float:
    """Mean ``|I(z+1) - I(z)|`` of an ``(X, Y, Z)`` volume on [0, 1]: how much neighbouring axial slices differ."""
    return float(np.abs(np.diff(volume, axis=2)).mean())


def view_scores(real: np.ndarray, reconstruction: np.ndarray, min_brain: float = 0.05) -> dict[str, dict[str, float]]:
    """Per view, the mean PSNR and SSIM over the slices that hold brain (at least ``min_brain`` of their voxels).

    Both volumes ``(X, Y, Z)`` on [0, 1].
    """
    scores = {}
    for view, axis in VIEWS.items():
        psnr, ssim = [], []
        for index in range(real.shape[axis]):
            a, b = real.take(index, axis=axis), reconstruction.take(index, axis=axis)
            if float((a > 0.05).mean()) < min_brain or min(a.shape) < 7:
                continue
            psnr.append(_psnr(a, b))
            ssim.append(_ssim_2d(a, b))
        scores[view] = {"psnr": float(np.mean(psnr)) if psnr else float("nan"),
                        "ssim": float(np.mean(ssim)) if ssim else float("nan"), "slices": len(psnr)}  # fmt: skip
    return scores


@torch.no_grad()
def vae_reconstruction(stack: Any, volumes: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> dict[str, Any]:
    """Encode-decode scores of held-out ``(X, Y, Z)`` FLAIR volumes in [-1, 1] and their 0/1 masks.

    Args:
        stack: the slice VAE's 3D view (``SliceStackAutoencoder``).

    Returns:
        ``{"cases": [per case: view scores, 3D PSNR, mask Dice, streak indices], "mean": {...}}``.
    """
    if not volumes or len(volumes) != len(masks):
        raise InputError("VAE diagnostics: need held-out volumes and their masks")
    cases = []
    for volume, mask in zip(volumes, masks):
        pair = torch.from_numpy(np.stack([volume, np.where(mask > 0, 1.0, -1.0)]).astype(np.float32))[None]
        decoded = stack.decode_stage_2_outputs(stack.encode_stage_2_inputs(pair))[0]
        real = (np.clip(volume, -1, 1) + 1) / 2
        reconstruction = (decoded[0].clamp(-1, 1).numpy() + 1) / 2
        predicted = decoded[1].numpy() > 0
        truth = mask > 0
        dice = 2 * float((predicted & truth).sum()) / max(1.0, float(predicted.sum() + truth.sum()))
        cases.append({
            "views": view_scores(real, reconstruction), "psnr_3d": _psnr(real, reconstruction), "mask_dice": dice,
            "streak_real": streak_index(real), "streak_reconstruction": streak_index(reconstruction),
        })  # fmt: skip
    mean: dict[str, Any] = {
        view: {k: float(np.nanmean([c["views"][view][k] for c in cases])) for k in ("psnr", "ssim")} for view in VIEWS
    }
    for key in ("psnr_3d", "mask_dice", "streak_real", "streak_reconstruction"):
        mean[key] = float(np.mean([c[key] for c in cases]))
    return {"cases": cases, "mean": mean}


def _neighbour_correlation(latents: torch.Tensor, dim: int) -> float:
    """Pearson correlation of latent voxels with their neighbour along ``dim`` of ``(B, C, h, w, D)``."""
    a = latents.narrow(dim, 1, latents.shape[dim] - 1).flatten().double()
    b = latents.narrow(dim, 0, latents.shape[dim] - 1).flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def latent_statistics(latents: torch.Tensor) -> dict[str, Any]:
    """Per-channel mean and SD, and neighbour correlation along the slice axis and within slices, of
    ``(B, C, h, w, D)`` latents (``D``: slices)."""
    if latents.ndim != 5:
        raise InputError(f"latent statistics: expected (B, C, h, w, D) latents, got {tuple(latents.shape)}")
    return {
        "mean": latents.mean(dim=(0, 2, 3, 4)).tolist(),
        "sd": latents.std(dim=(0, 2, 3, 4)).tolist(),
        "slice_axis_correlation": _neighbour_correlation(latents, 4),
        "in_slice_correlation": _neighbour_correlation(latents, 3),
    }


def _load_bundle(bundle: Any, models_dir: Any, device: str) -> tuple[Any, Any, Any, Any, Any]:
    """The slice LDM of ``models_dir`` (its recipe: ``starter_manifest.json`` / ``manifest.json`` there, if any)."""
    from pathlib import Path

    from monai.bundle import ConfigParser

    from shared.checkpoints import load_weights
    from shared.io import read_json
    from shared.latents import LatentScaler

    bundle, models_dir = Path(bundle), Path(models_dir)
    recipe: dict[str, Any] = {"preset": "demo", "overrides": {}}
    for name in ("starter_manifest.json", "manifest.json"):
        if (models_dir / name).is_file():
            recipe = read_json(models_dir / name)
            break
    parser = ConfigParser()
    parser.read_config(
        [str(bundle / "configs/inference.yaml"), str(bundle / f"configs/presets/{recipe['preset']}.yaml")]
    )
    values = {**recipe.get("overrides", {}), "bundle_root": str(bundle), "ckpt_dir": str(models_dir),
              "device": f"$torch.device('{device}')"}  # fmt: skip
    for key, value in values.items():
        parser[key] = value
    autoencoder = parser.get_parsed_content("autoencoder")
    autoencoder.load_state_dict(load_weights(parser.get_parsed_content("autoencoder_path"), device))
    diffusion = parser.get_parsed_content("diffusion")
    diffusion.load_state_dict(load_weights(parser.get_parsed_content("diffusion_path"), device))
    autoencoder.eval(), diffusion.eval()
    scaler = LatentScaler.load(parser.get_parsed_content("latent_scaler_path"))
    return parser, parser.get_parsed_content("stage_2_autoencoder"), diffusion, scaler, recipe


@torch.no_grad()
def generated_latents(parser: Any, diffusion: Any, vectors: np.ndarray, steps: int, seed: int) -> torch.Tensor:
    """Latents ``(N, C, h, w, D)`` the diffusion model generates for tumour ``vectors`` (the bundle's sampler and G)."""
    from shared.networks.tumour_unet import null_tumour_condition

    parser["num_inference_steps"] = int(steps)
    inferer = parser.get_parsed_content("inferer", lazy=False)
    shape = parser.get_parsed_content("stage_2_autoencoder").latent_shape(2, _grid_shape(parser))
    out = []
    for i, vector in enumerate(vectors):
        noise = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed + i))
        context = torch.as_tensor(vector[None], dtype=torch.float32)
        null = null_tumour_condition(1, context.shape[1], "cpu") if float(inferer.guidance_scale) != 1.0 else None
        out.append(inferer(noise, diffusion, context, null, {}))
    return torch.cat(out)


def _grid_shape(parser: Any) -> tuple[int, int, int]:
    from shared.io import read_grid_reference

    shape, _ = read_grid_reference(parser.get_parsed_content("grid_path"))
    return tuple(int(n) for n in shape)  # type: ignore[return-value]


def diagnose_slice_ldm(
    models_dir: str,
    datalist: str,
    output_dir: str,
    bundle: str | None = None,
    num_samples: Positive = 8,
    steps: Positive = 10,
    seed: Count = 0,
    device: str = "cpu",
) -> str:
    """Measure a trained slice LDM's VAE and diffusion apart; write ``diagnostics.json`` / ``.md`` and pictures.

    Args:
        models_dir: the bundle's trained models (a ``ckpt_dir``, or a starter folder); its recipe is read
            from ``starter_manifest.json`` or ``manifest.json`` there (preset and values), else the demo preset.
        datalist: held-out prepared pairs (``scripts/prepare_tumour_data.py`` output): every item is
            encoded and decoded; their tumour vectors are the generation requests.
        output_dir: where the results go.
        bundle: the slice LDM bundle folder (default: this project's ``bundles/slice_based_ldm_brats``).
        num_samples: generated latents compared with the real ones.
        steps: sampling steps of the bundle's sampler.
        seed: of the generated samples' noise.
        device: ``cpu`` or ``cuda``.

    Returns:
        The path of ``diagnostics.md``.
    """
    from pathlib import Path

    from shared.io import load_image, load_label_map, read_datalist, write_json

    bundle_dir = Path(bundle) if bundle else Path(__file__).resolve().parents[2] / "bundles" / "slice_based_ldm_brats"
    items = read_datalist(datalist)
    if not items:
        raise InputError(f"{datalist}: no items")
    parser, stack, diffusion, scaler, recipe = _load_bundle(bundle_dir, models_dir, device)
    volumes = [load_image(item["image"]).array.astype(np.float32) for item in items]
    masks = [load_label_map(item["label"]).array for item in items]
    vae = vae_reconstruction(stack, volumes, masks)
    with torch.no_grad():
        real = torch.cat([
            scaler.forward(stack.encode_stage_2_inputs(torch.from_numpy(
                np.stack([v, np.where(m > 0, 1.0, -1.0)]).astype(np.float32))[None]))
            for v, m in zip(volumes, masks)
        ])  # fmt: skip
    vectors = np.asarray([item["condition"] for item in items], dtype=np.float32)
    picked = vectors[np.arange(num_samples) % len(vectors)]
    generated = generated_latents(parser, diffusion, picked, steps, seed)
    result = {"recipe": recipe.get("overrides", {}), "preset": recipe.get("preset"), "held_out": len(items),
              "vae": vae["mean"], "vae_cases": vae["cases"], "real_latents": latent_statistics(real),
              "generated_latents": latent_statistics(generated), "samples": num_samples, "steps": steps}  # fmt: skip
    out = Path(output_dir)
    write_json(out / "diagnostics.json", result)
    _pictures(out, volumes, masks, stack, real, generated, scaler)
    lines = _markdown(result)
    from shared.io import atomic_path

    with atomic_path(out / "diagnostics.md") as tmp:
        tmp.write_text("\n".join(lines))
    return str(out / "diagnostics.md")


def _markdown(result: dict[str, Any]) -> list[str]:
    vae = result["vae"]
    lines = [
        "# Slice LDM diagnostics",
        "",
        f"{result['held_out']} held-out volumes; {result['samples']} generated latents ({result['steps']} steps).",
        "",
        "| slice VAE, encode-decode | axial | coronal | sagittal |",
        "|---|---|---|---|",
        "| PSNR (dB) | " + " | ".join(f"{vae[v]['psnr']:.2f}" for v in VIEWS) + " |",
        "| SSIM | " + " | ".join(f"{vae[v]['ssim']:.3f}" for v in VIEWS) + " |",
        "",
        f"3D PSNR {vae['psnr_3d']:.2f} dB; mask Dice {vae['mask_dice']:.3f}; streak index real "
        f"{vae['streak_real']:.4f}, reconstruction {vae['streak_reconstruction']:.4f}.",
        "",
        "| latents | per-channel mean | per-channel SD | slice-axis correlation | in-slice correlation |",
        "|---|---|---|---|---|",
    ]
    for name in ("real_latents", "generated_latents"):
        s = result[name]
        lines.append(
            f"| {name.split('_')[0]} | {', '.join(f'{v:.2f}' for v in s['mean'])} | "
            f"{', '.join(f'{v:.2f}' for v in s['sd'])} | {s['slice_axis_correlation']:.3f} | "
            f"{s['in_slice_correlation']:.3f} |"
        )
    return [*lines, "", "![reconstructions](reconstructions.png)", "", "![latents](latents.png)", ""]


def _pictures(out: Any, volumes: Any, masks: Any, stack: Any, real: torch.Tensor, generated: torch.Tensor,
              scaler: Any) -> None:  # fmt: skip
    """``reconstructions.png``: real, reconstructed and generated FLAIR in three views; ``latents.png``:
    one latent channel of a real and a generated volume, cut along the slice axis."""
    import matplotlib.pyplot as plt

    from shared.viz import save_figure

    with torch.no_grad():
        pair = torch.from_numpy(np.stack([volumes[0], np.where(masks[0] > 0, 1.0, -1.0)]).astype(np.float32))[None]
        reconstruction = stack.decode_stage_2_outputs(stack.encode_stage_2_inputs(pair))[0, 0].clamp(-1, 1).numpy()
        sample = stack.decode_stage_2_outputs(scaler.inverse(generated[:1]))[0, 0].clamp(-1, 1).numpy()
    rows = {"real": volumes[0], "VAE reconstruction": reconstruction, "generated": sample}
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)))
    for r, (name, volume) in enumerate(rows.items()):
        centre = [s // 2 for s in volume.shape]
        cuts = {"axial": volume[:, :, centre[2]].T, "coronal": volume[:, centre[1], :].T,
                "sagittal": volume[centre[0], :, :].T}  # fmt: skip
        for c, (view, cut) in enumerate(cuts.items()):
            axes[r, c].imshow(cut, cmap="gray", origin="lower", vmin=-1, vmax=1, aspect="auto")
            axes[r, c].set_title(f"{name}, {view}", fontsize=9)
            axes[r, c].axis("off")
    fig.tight_layout()
    save_figure(fig, out / "reconstructions.png")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    for ax, (name, latent) in zip(axes, (("real latent", real[0]), ("generated latent", generated[0]))):
        cut = latent[0, :, latent.shape[2] // 2, :].numpy()  # channel 0, a plane across the slice axis
        ax.imshow(cut.T, cmap="viridis", origin="lower", aspect="auto")
        ax.set_title(f"{name} (channel 0; vertical: slice axis)", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, out / "latents.png")
