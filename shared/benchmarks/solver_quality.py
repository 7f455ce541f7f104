"""Quality at fewer sampling steps (issue 18): every solver and step count of the three bundles, measured.

For each bundle the trained models (the starter weights: the science presets' recipes) generate
the same samples from the same noise (sample ``i``: seed ``i``) with DDIM, DPM-Solver++ and PNDM
at 5-25 steps, DDIM at the paper's steps and a DDIM-250 reference. Every configuration is
written by the bundle's own generation job (files and manifest, as a user gets them) and scored
from those files:

- **ventricle mask LDM**: condition adherence (Spearman rho of ``c`` against the achieved
  ventricle volume, mean ``|c error|``) and per-sample Dice against the reference's label map.
- **SPADE LDM** (painting the real held-out label maps): PSNR / SSIM against the real image of
  the same map, mean per-tissue intensity error, and PSNR against the reference image.
- **slice-based LDM**: mean error of the achieved tumour 9-vector, volume Spearman rho, Table-1
  PSNR / SSIM against unpaired real volumes, and FLAIR PSNR / mask Dice against the reference.

A configuration *holds* when each of its adherence and fidelity figures lies within twice the
bootstrap standard error of the reference's, either way (sample-level resampling); the same
test against the paper's own sampler is reported beside it (for the slice-based LDM the paper's
DDIM is stochastic, eta 1, and differs from the deterministic DDIM-250 trajectory).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.io import InputError, atomic_path, load_image, read_csv, read_datalist, write_csv

#: Solvers compared at the grid's step counts; DDIM at 250 steps is the reference trajectory.
SOLVERS = ("ddim", "dpm_solver", "pndm")
STEP_GRID = (5, 10, 15, 20, 25)
REFERENCE = ("ddim", 250)
PAPER_STEPS = {"ventricle_mask_ldm": 25, "spade_mri_ldm": 50, "slice_based_ldm_brats": 50}
BUNDLES = tuple(PAPER_STEPS)
#: the mask LDM's interval-guidance settings guide at training timesteps 500-999 only
GUIDANCE_INTERVAL = (500, 999)


@dataclass(frozen=True)
class Setting:
    """One sampling configuration: solver, steps, (DDIM) ``eta`` and the guidance interval (mask LDM)."""

    sampler: str
    steps: int
    eta: float = 0.0
    guidance_interval: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        interval = f"_guided{self.guidance_interval[0]}-{self.guidance_interval[1]}" if self.guidance_interval else ""
        return f"{self.sampler}_{self.steps}" + (f"_eta{self.eta:g}" if self.eta else "") + interval


def paper_setting_of(bundle: str) -> Setting:
    """The paper's own sampler: DDIM 25 (mask LDM), DDIM 50 (SPADE LDM), DDIM 50 with eta 1 (slice-based LDM)."""
    return Setting("ddim", PAPER_STEPS[bundle], 1.0 if bundle == "slice_based_ldm_brats" else 0.0)


def settings_of(bundle: str, steps: Sequence[int] = STEP_GRID) -> list[Setting]:
    """A bundle's grid: the solvers at ``steps``, DDIM at the paper's steps (and eta 1 for the slice LDM), DDIM 250."""
    grid = [Setting(s, n) for s in SOLVERS for n in steps]
    paper = PAPER_STEPS[bundle]
    if paper not in steps:
        grid.append(Setting("ddim", paper))
    if bundle == "slice_based_ldm_brats":
        grid.append(Setting("ddim", paper, 1.0))  # the paper's own sampler
    if bundle == "ventricle_mask_ldm":  # guidance only in the noisier part of the trajectory
        grid += [Setting("dpm_solver", n, guidance_interval=GUIDANCE_INTERVAL) for n in (5, 10) if n in steps]
    grid.append(Setting(*REFERENCE))
    return grid


@dataclass
class BundleJob:
    """A bundle's generation job from its inference config, with its networks' weights loaded."""

    bundle: str
    parser: Any
    job: Any
    num_samples: int
    extra: dict[str, Any] = field(default_factory=dict)

    def run(self, setting: Setting, output_dir: Path) -> float:
        """Generate every sample with ``setting`` into ``output_dir``; return the seconds per volume."""
        from shared.sampling.guidance import GuidedSampler
        from shared.sampling.schedulers import make_scheduler

        p = self.parser
        scheduler = make_scheduler(setting.sampler, p["num_train_timesteps"], p["beta_start"], p["beta_end"])
        guidance = float(p.get("guidance_scale", 1.0))
        inferer = GuidedSampler(scheduler, setting.steps, guidance, guidance_interval=setting.guidance_interval)
        kwargs: dict[str, Any] = {"inferer": inferer, "output_dir": str(output_dir), "progress": False}
        if self.bundle == "slice_based_ldm_brats":
            kwargs["eta"] = setting.eta
        began = time.perf_counter()
        self.job(**kwargs)
        return (time.perf_counter() - began) / self.num_samples


def load_bundle_job(bundle_dir: Path, bundle: str, num_samples: int, label_maps: Path | None, device: str) -> BundleJob:
    """Parse ``bundle_dir``'s inference config with the starter weights' preset; load the weights."""
    from monai.bundle import ConfigParser

    from shared.checkpoints import load_weights
    from shared.export.starter_weights import STARTER_FOLDER, read_starter_manifest

    recipe = read_starter_manifest(bundle_dir / STARTER_FOLDER)  # the starter's preset and values (guidance ...)
    parser = ConfigParser()
    parser.read_config(
        [str(bundle_dir / "configs/inference.yaml"), str(bundle_dir / f"configs/presets/{recipe['preset']}.yaml")]
    )
    overrides: dict[str, Any] = {
        **recipe.get("overrides", {}),
        "bundle_root": str(bundle_dir),
        "ckpt_dir": str(bundle_dir / STARTER_FOLDER),
        "device": f"$torch.device('{device}')",
    }
    if bundle == "ventricle_mask_ldm":
        overrides.update(num_samples=num_samples, conditions={"range": [0.0, 1.0]}, batch_size=num_samples)
    elif bundle == "spade_mri_ldm":
        overrides.update(label_maps=str(label_maps))
    else:
        overrides.update(num_samples=num_samples, batch_size=num_samples)
    for key, value in overrides.items():
        parser[key] = value
    for network, path in (("autoencoder", "autoencoder_path"), ("diffusion", "diffusion_path")):
        parser.get_parsed_content(network).load_state_dict(load_weights(parser.get_parsed_content(path), device))
        parser.get_parsed_content(network).eval()
    job = parser.get_parsed_content("job")
    count = len(parser.get_parsed_content("dataset"))
    return BundleJob(bundle, parser, job, count)


# ---------------------------------------------------------------- scores, from the written files
def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y)[0]) if len(x) > 2 and np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan")


def _dice(reference: np.ndarray, candidate: np.ndarray) -> float:
    from shared.benchmarks.accuracy_guard import label_dice

    return label_dice(reference, candidate)


def _psnr(reference: np.ndarray, candidate: np.ndarray, data_range: float) -> float:
    from shared.benchmarks.accuracy_guard import image_psnr

    return image_psnr(reference, candidate, data_range)


def _ssim(reference: np.ndarray, candidate: np.ndarray) -> float:
    from monai.metrics import SSIMMetric

    as_batch = [torch.as_tensor(np.asarray(v, dtype=np.float32))[None, None] for v in (candidate, reference)]
    return float(SSIMMetric(spatial_dims=3, data_range=1.0)(*as_batch).mean().item())


def mask_scores(folder: Path, reference: Path | None) -> dict[str, np.ndarray]:
    """Per-sample columns of a mask-LDM output: requested c, achieved volume, |c error|, Dice to the reference."""
    rows = read_csv(folder / "manifest.csv")
    scores = {
        "c": np.array([float(r["requested_c"]) for r in rows]),
        "ventricle_ml": np.array([float(r["ventricle_ml"]) for r in rows]),
        "c_error": np.array([abs(float(r["achieved_c"]) - float(r["requested_c"])) for r in rows]),
    }
    if reference is not None:
        scores["dice_to_reference"] = np.array(
            [_dice(load_image(reference / r["file"]).array, load_image(folder / r["file"]).array) for r in rows]
        )
    return scores


def spade_scores(folder: Path, reference: Path | None, real_images: dict[str, Path]) -> dict[str, np.ndarray]:
    """Per-sample columns of a SPADE output: PSNR / SSIM to the real image, tissue-mean error, PSNR to the reference."""
    from shared.evaluation.fidelity import percentiles_to_unit, tissue_means

    columns: dict[str, list[float]] = {"psnr_real": [], "ssim_real": [], "tissue_error": [], "psnr_to_reference": []}
    for row in read_csv(folder / "manifest.csv"):
        generated = load_image(folder / row["image"]).array
        labels = load_image(folder / row["label"]).array
        real = percentiles_to_unit(load_image(real_images[Path(row["source_label"]).name]).array)
        fake = percentiles_to_unit(generated)
        columns["psnr_real"].append(_psnr(real, fake, 1.0))
        columns["ssim_real"].append(_ssim(real, fake))
        ours, theirs = tissue_means(generated, labels), tissue_means(real, labels)
        columns["tissue_error"].append(float(np.nanmean([abs(ours[t] - theirs[t]) for t in ours])))
        if reference is not None:
            columns["psnr_to_reference"].append(_psnr(load_image(reference / row["image"]).array, generated, 1.0))
    return {k: np.array(v) for k, v in columns.items() if v}


def tumour_scores(folder: Path, reference: Path | None, real_images: Sequence[Path]) -> dict[str, np.ndarray]:
    """Per-sample columns of a slice-LDM output: 9-vector error, volumes, Table-1 PSNR/SSIM, match to the reference."""
    from shared.conditioning.features import TUMOUR_FEATURE_NAMES

    rows = read_csv(folder / "manifest.csv")
    requested = np.array([[float(r[f"requested_{n}"]) for n in TUMOUR_FEATURE_NAMES] for r in rows])
    achieved = np.array([[float(r[f"achieved_{n}"]) for n in TUMOUR_FEATURE_NAMES] for r in rows])
    columns: dict[str, list[float]] = {
        "psnr_real": [],
        "ssim_real": [],
        "psnr_to_reference": [],
        "dice_to_reference": [],
    }
    order = np.random.default_rng(0).permutation(len(real_images))
    for index, row in enumerate(rows):
        image = load_image(folder / row["image"]).array
        real = load_image(real_images[order[index % len(real_images)]]).array
        unit, real_unit = (np.clip(image, -1, 1) + 1) / 2, (np.clip(real, -1, 1) + 1) / 2
        columns["psnr_real"].append(_psnr(real_unit, unit, 1.0))
        columns["ssim_real"].append(_ssim(real_unit, unit))
        if reference is not None:
            columns["psnr_to_reference"].append(_psnr(load_image(reference / row["image"]).array, image, 2.0))
            ref_mask = load_image(reference / row["label"]).array
            columns["dice_to_reference"].append(_dice(ref_mask, load_image(folder / row["label"]).array))
    scores = {k: np.array(v) for k, v in columns.items() if v}
    scores["vector_error"] = np.nanmean(np.abs(achieved - requested), axis=1)
    scores["requested_volume"], scores["achieved_volume"] = requested[:, 0], achieved[:, 0]
    scores["empty"] = np.array([int(r["tumour_voxels"]) == 0 for r in rows], dtype=float)
    return scores


#: per bundle: (figure, how it is computed from the per-sample columns, better is "higher"/"lower", kind)
FIGURES: dict[str, list[tuple[str, str, str]]] = {
    "ventricle_mask_ldm": [
        ("rho_c_volume", "higher", "adherence"),
        ("mean_abs_c_error", "lower", "adherence"),
        ("dice_to_reference", "higher", "reference"),
    ],
    "spade_mri_ldm": [
        ("psnr_real", "higher", "fidelity"),
        ("ssim_real", "higher", "fidelity"),
        ("tissue_error", "lower", "fidelity"),
        ("psnr_to_reference", "higher", "reference"),
    ],
    "slice_based_ldm_brats": [
        ("vector_error", "lower", "adherence"),
        ("rho_volume", "higher", "adherence"),
        ("psnr_real", "higher", "fidelity"),
        ("ssim_real", "higher", "fidelity"),
        ("empty_fraction", "lower", "adherence"),
        ("psnr_to_reference", "higher", "reference"),
        ("dice_to_reference", "higher", "reference"),
    ],
}


def summarise(bundle: str, scores: dict[str, np.ndarray], rows: np.ndarray | None = None) -> dict[str, float]:
    """The bundle's figures from per-sample columns (optionally over the sample subset ``rows``)."""
    pick = (lambda v: v[rows]) if rows is not None else (lambda v: v)
    s = {k: pick(v) for k, v in scores.items()}
    out: dict[str, float] = {}
    if bundle == "ventricle_mask_ldm":
        out["rho_c_volume"] = _spearman(s["c"], s["ventricle_ml"])
        out["mean_abs_c_error"] = float(np.mean(s["c_error"]))
    elif bundle == "slice_based_ldm_brats":
        out["vector_error"] = float(np.nanmean(s["vector_error"]))
        out["rho_volume"] = _spearman(s["requested_volume"], s["achieved_volume"])
        out["empty_fraction"] = float(np.mean(s["empty"]))
    for name in ("psnr_real", "ssim_real", "tissue_error", "psnr_to_reference", "dice_to_reference"):
        if name in s:
            finite = s[name][np.isfinite(s[name])]
            out[name] = float(np.mean(finite)) if len(finite) else float("inf")
    return out


def bootstrap_se(bundle: str, scores: dict[str, np.ndarray], draws: int = 300, seed: int = 0) -> dict[str, float]:
    """Bootstrap standard error of each figure over samples (the reference's noise)."""
    n = len(next(iter(scores.values())))
    rng = np.random.default_rng(seed)
    samples = [summarise(bundle, scores, rng.integers(0, n, n)) for _ in range(draws)]
    return {k: float(np.nanstd([d[k] for d in samples])) for k in samples[0]}


def holds(bundle: str, figures: dict[str, float], reference: dict[str, float], se: dict[str, float]) -> bool:
    """True when every adherence and fidelity figure is within 2 standard errors of the reference's (either way).

    Two-sided on purpose: a blurrier image scores a *higher* PSNR against an unpaired real one,
    so better-than-reference is a change too. The tolerance is at least 0.005 (a figure such as
    rho = 1.000 with no spread would otherwise admit no change at all).
    """
    for name, _, kind in FIGURES[bundle]:
        if kind == "reference" or not np.isfinite(reference.get(name, np.nan)):
            continue
        if abs(figures[name] - reference[name]) > max(2 * se[name], 0.005):
            return False
    return True


def _record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_study(
    output_dir: str | os.PathLike,
    brains_datalist: str | os.PathLike,
    tumours_datalist: str | os.PathLike,
    bundles: Sequence[str] = BUNDLES,
    steps: Sequence[int] = STEP_GRID,
    mask_samples: int = 24,
    tumour_samples: int = 12,
    device: str = "cpu",
    project_root: str | os.PathLike = ".",
) -> Path:
    """Generate and score every setting of every bundle; write ``quality.csv``, ``quality.md`` and the plots.

    ``brains_datalist``: the real brains (the SPADE LDM paints the ``validation`` label maps and is
    compared with their images); ``tumours_datalist``: real prepared tumour volumes (Table-1
    comparison). A setting whose ``setting.json`` matches is not generated again.

    Returns:
        The path of ``quality.csv``.
    """
    from tqdm.auto import tqdm

    output_dir, root = Path(output_dir), Path(project_root)
    unknown = [b for b in bundles if b not in BUNDLES]
    if unknown:
        raise InputError(f"bundles: unknown {unknown[0]!r}; expected some of {', '.join(BUNDLES)}")
    brains = read_datalist(brains_datalist, ["validation"])
    tumours = [Path(item["image"]) for item in read_datalist(tumours_datalist)]
    if not brains:
        raise InputError(f"{brains_datalist}: no 'validation' items (the label maps to paint)")
    output_dir.mkdir(parents=True, exist_ok=True)
    label_list = output_dir / "spade_label_maps.json"
    with atomic_path(label_list) as tmp:
        tmp.write_text(json.dumps({"training": [{"label": str(item["label"])} for item in brains]}, indent=1))
    real_images = {Path(item["label"]).name: Path(item["image"]) for item in brains}
    rows: list[dict[str, Any]] = []
    for bundle in bundles:
        count = tumour_samples if bundle == "slice_based_ldm_brats" else mask_samples
        job = load_bundle_job(root / "bundles" / bundle, bundle, count, label_list, device)
        grid = settings_of(bundle, steps)
        reference_dir = output_dir / bundle / Setting(*REFERENCE).name
        timings: dict[str, float] = {}
        for setting in tqdm([grid[-1], *grid[:-1]], desc=bundle, unit="setting"):
            folder = output_dir / bundle / setting.name
            key = {"bundle": bundle, **setting.__dict__, "num_samples": job.num_samples}
            if setting.guidance_interval is None:
                del key["guidance_interval"]
            else:
                key["guidance_interval"] = list(setting.guidance_interval)
            record = _record(folder / "setting.json")
            if record is not None and record.get("key") == key and (folder / "manifest.csv").is_file():
                timings[setting.name] = float(record["seconds_per_volume"])
                continue
            timings[setting.name] = job.run(setting, folder)
            with atomic_path(folder / "setting.json") as tmp:
                tmp.write_text(json.dumps({"key": key, "seconds_per_volume": timings[setting.name]}, indent=1))
        per_setting = {}
        for setting in grid:
            folder = output_dir / bundle / setting.name
            ref = None if setting.name == reference_dir.name else reference_dir
            if bundle == "ventricle_mask_ldm":
                per_setting[setting] = mask_scores(folder, ref)
            elif bundle == "spade_mri_ldm":
                per_setting[setting] = spade_scores(folder, ref, real_images)
            else:
                per_setting[setting] = tumour_scores(folder, ref, tumours)
        reference_scores = per_setting[grid[-1]]
        reference, se = summarise(bundle, reference_scores), bootstrap_se(bundle, reference_scores)
        paper_setting = paper_setting_of(bundle)
        paper, paper_se = (
            summarise(bundle, per_setting[paper_setting]),
            bootstrap_se(bundle, per_setting[paper_setting]),
        )
        for setting in grid:
            figures = summarise(bundle, per_setting[setting])
            interval = setting.guidance_interval
            rows.append(
                {
                    "bundle": bundle,
                    "sampler": setting.sampler,
                    "steps": setting.steps,
                    "eta": setting.eta,
                    "guided": f"t {interval[0]}-{interval[1]}" if interval else "",
                    "samples": job.num_samples,
                    "seconds_per_volume": round(timings[setting.name], 4),
                    **{name: round(figures.get(name, float("nan")), 4) for name, _, _ in FIGURES[bundle]},
                    **{f"reference_se_{name}": round(se.get(name, float("nan")), 4) for name, _, _ in FIGURES[bundle]},
                    "holds": holds(bundle, figures, reference, se),
                    "holds_vs_paper": holds(bundle, figures, paper, paper_se),
                }
            )
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    table = write_csv(output_dir / "quality.csv", [{c: r.get(c, "") for c in columns} for r in rows], columns)
    write_markdown(rows, output_dir / "quality.md")
    plot_quality(rows, output_dir / "quality_vs_seconds.png")
    for bundle in bundles:  # one figure per bundle too (each bundle's docs)
        plot_quality([r for r in rows if r["bundle"] == bundle], output_dir / f"quality_vs_seconds_{bundle}.png")
    return table


def write_markdown(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """One Markdown table per bundle: settings as rows, figures as columns, ``holds`` last."""
    lines: list[str] = []
    for bundle in dict.fromkeys(r["bundle"] for r in rows):
        names = [name for name, _, _ in FIGURES[bundle]]
        header = (
            "| sampler | steps | s / volume | " + " | ".join(names) + " | holds (vs DDIM 250) | holds (vs paper's) |"
        )
        lines += [f"### {bundle}", "", header, "|---" * (len(names) + 5) + "|"]
        for r in (r for r in rows if r["bundle"] == bundle):
            label = (
                r["sampler"]
                + (f" (eta {r['eta']:g})" if r["eta"] else "")
                + (f", guided {r['guided']}" if r["guided"] else "")
            )
            cells = [label, str(r["steps"]), f"{r['seconds_per_volume']:.3f}", *(f"{r[n]:.3f}" for n in names)]
            verdicts = " | ".join("yes" if r[k] else "no" for k in ("holds", "holds_vs_paper"))
            lines.append("| " + " | ".join(cells) + f" | {verdicts} |")
        ref = next(r for r in rows if r["bundle"] == bundle and (r["sampler"], r["steps"]) == REFERENCE)
        lines += [
            "",
            "reference standard errors: " + ", ".join(f"{n} {ref[f'reference_se_{n}']:.3f}" for n in names),
            "",
        ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path


def plot_quality(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Each bundle's figures against seconds per volume, one line per solver, the DDIM-250 reference dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared.viz import save_figure

    bundles = list(dict.fromkeys(r["bundle"] for r in rows))
    width = max(len(FIGURES[b]) for b in bundles)
    fig, axes = plt.subplots(len(bundles), width, figsize=(3.2 * width, 2.9 * len(bundles)), squeeze=False)
    for i, bundle in enumerate(bundles):
        mine = [r for r in rows if r["bundle"] == bundle]
        ref = next(r for r in mine if (r["sampler"], r["steps"]) == REFERENCE)
        for j in range(width):
            ax = axes[i][j]
            if j >= len(FIGURES[bundle]):
                ax.axis("off")
                continue
            name = FIGURES[bundle][j][0]
            for sampler, marker in zip(SOLVERS, "osd"):
                line = sorted((r for r in mine if r["sampler"] == sampler and r["steps"] in STEP_GRID and not r["eta"]
                               and not r["guided"]),
                              key=lambda r: r["steps"])  # fmt: skip
                ax.plot([r["seconds_per_volume"] for r in line], [r[name] for r in line], marker=marker, label=sampler)
                for r in line:
                    ax.annotate(str(r["steps"]), (r["seconds_per_volume"], r[name]), fontsize=6)
            if np.isfinite(ref[name]):
                ax.axhline(ref[name], color="k", ls="--", lw=0.8, label="DDIM 250")
                se = ref[f"reference_se_{name}"]
                if np.isfinite(se) and se > 0:
                    ax.axhspan(ref[name] - 2 * se, ref[name] + 2 * se, color="k", alpha=0.08)
            for r in (r for r in mine if r["guided"]):
                ax.plot(r["seconds_per_volume"], r[name], "^", color="C3", label=f"dpm_solver, guided {r['guided']}")
                ax.annotate(str(r["steps"]), (r["seconds_per_volume"], r[name]), fontsize=6)
            for r in mine:
                if r["sampler"] == "ddim" and r["steps"] == PAPER_STEPS[bundle]:
                    ax.plot(
                        r["seconds_per_volume"],
                        r[name],
                        "k*",
                        ms=9,
                        label="paper's DDIM" + (" eta 1" if r["eta"] else ""),
                    )
            ax.set_title(f"{bundle}\n{name}", fontsize=8)
            ax.set_xscale("log")
            ax.set_xlabel("s / volume (CPU)", fontsize=7)
            ax.tick_params(labelsize=7)
            if j == 0:  # one entry per kind of point
                unique = dict(zip(*reversed(ax.get_legend_handles_labels())))
                ax.legend(unique.values(), unique.keys(), fontsize=5, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    return path
