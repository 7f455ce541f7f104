"""Stage runner for long multi-step commands, and the demo pipeline (the README's main command).

A finished stage leaves a marker ``<output_dir>/.stages/<name>.json`` holding its
parameters and duration; running the command again skips it (unless its parameters
changed or ``force`` is set). Stages write their outputs atomically, so a run
interrupted mid-stage simply redoes that stage next time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from shared.conditioning.tables import TUMOURS, VENTRICLES
from shared.demo.dataset import write_brain_dataset, write_tumour_dataset
from shared.demo.grid import make_grid
from shared.io import InputError, atomic_path, read_csv, read_datalist, read_json, write_csv, write_json
from shared.viz import save_conditions_summary

logger = logging.getLogger(__name__)


class StageRunner:
    """Runs named stages at most once per set of parameters.

    Args:
        output_dir: where the ``.stages`` markers live.
        force: rerun every stage even if it finished before.
    """

    def __init__(self, output_dir: str | os.PathLike, force: bool = False) -> None:
        self.marker_dir = Path(output_dir) / ".stages"
        self.force = force

    def is_done(self, name: str, params: dict[str, Any]) -> bool:
        """True when ``name`` finished before with exactly ``params``."""
        marker = self.marker_dir / f"{name}.json"
        if self.force or not marker.is_file():
            return False
        try:
            return read_json(marker).get("params") == params
        except InputError:
            return False

    def run(self, name: str, params: dict[str, Any], action: Callable[[], Any]) -> bool:
        """Run ``action`` unless the stage is done; returns True when it ran."""
        if self.is_done(name, params):
            logger.info("[%s] already done, skipped", name)
            return False
        logger.info("[%s] running", name)
        (self.marker_dir / f"{name}.json").unlink(missing_ok=True)  # an interrupted rerun must not look done
        start = time.perf_counter()
        try:
            action()
        except KeyboardInterrupt:
            logger.info("[%s] interrupted after %.1f s; it is redone (or resumed) by the next run", name,
                        time.perf_counter() - start)  # fmt: skip
            raise
        seconds = time.perf_counter() - start
        finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(
            self.marker_dir / f"{name}.json", {"params": params, "seconds": round(seconds, 2), "finished": finished}
        )
        logger.info("[%s] done in %.1f s", name, seconds)
        return True

    def finished(self) -> list[tuple[str, float]]:
        """``(stage, seconds)`` of every finished stage, in the order they finished."""
        markers = []
        for marker in self.marker_dir.glob("*.json"):
            try:
                markers.append((marker.stat().st_mtime, marker.stem, float(read_json(marker)["seconds"])))
            except (InputError, KeyError, TypeError, ValueError):
                continue  # an unreadable marker only means the stage runs again
        return [(name, seconds) for _, name, seconds in sorted(markers)]


def stage_time_lines(runner: StageRunner) -> list[str]:
    """Markdown table of the finished stages' wall times (the time of their last run)."""
    stages = runner.finished()
    lines = ["## Stage times", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in stages]
    total = sum(seconds for _, seconds in stages)
    return [*lines, f"| **total** | **{total:.1f}** ({total / 60:.1f} min) |", ""]


def _section_of_each_item(datalist: Path) -> list[str]:
    """Section name (``training`` / ``validation`` ...) of every item, in :func:`read_datalist` order."""
    return [name for name, entries in read_json(datalist).items() if isinstance(entries, list) for _ in entries]


def write_condition_tables(brain_datalist: Path, tumour_datalist: Path, output_dir: Path) -> None:
    """Ventricle and tumour tables for the demo datasets; normalisers fitted on the training sections."""
    for datalist, kind in ((brain_datalist, VENTRICLES), (tumour_datalist, TUMOURS)):
        items = read_datalist(datalist)
        rows = kind.measure([Path(item["label"]) for item in items])
        for row, item, section in zip(rows, items, _section_of_each_item(datalist)):
            row.update(case=item["case"], split=section)
        normaliser = kind.fit([row for row in rows if row["split"] == "training"])
        kind.apply(rows, normaliser)
        if normaliser is not None:
            normaliser.save(output_dir / f"{kind.name}_normaliser.json")
        write_csv(output_dir / f"{kind.name}.csv", rows, ["case", "split", *kind.columns])


def _describe(values: np.ndarray, unit: str = "", digits: int = 1) -> str:
    """``min / median / max unit`` of an array."""
    return f"{values.min():.{digits}f} / {np.median(values):.{digits}f} / {values.max():.{digits}f} {unit}".rstrip()


def write_demo_report(
    output_dir: Path, studies: Sequence[str] = (), nnunet_iterations: int = 0, scale: str = "demo", seeds: int = 1
) -> Path:
    """``report.md`` and ``conditions/summary.png`` from the datasets, tables and studies written before.

    ``nnunet_iterations``: training iterations of each nnU-Net model; ``scale`` and ``seeds``
    (nnU-Net models per variant): for the report's scale note.
    """
    ventricles = read_csv(output_dir / "conditions" / "ventricles.csv")
    tumours = read_csv(output_dir / "conditions" / "tumours.csv")
    brains_info = read_json(output_dir / "data" / "brains" / "dataset.json")
    enlargement = {
        item["case"]: item["enlargement"] for item in read_datalist(output_dir / "data" / "brains" / "datalist.json")
    }
    save_conditions_summary(
        output_dir / "conditions" / "summary.png", ventricles, tumours, [enlargement[row["case"]] for row in ventricles]
    )
    ventricle_ml = np.array([float(r["ventricle_ml"]) for r in ventricles])
    ratio = np.array([float(r["ratio"]) for r in ventricles]) * 100
    tumour_ml = np.array([float(r["volume_ml"]) for r in tumours])
    sphericity = np.array([float(r["sphericity"]) for r in tumours])
    spacing = " x ".join(f"{s:.3g}" for s in brains_info["spacing_mm"])
    lines = [
        f"# {scale.capitalize()} run",
        "",
        f"Grid {' x '.join(str(n) for n in brains_info['shape'])} voxels at {spacing} mm, seed {brains_info['seed']}.",
        "",
        "| dataset | cases | quantity | min / median / max |",
        "|---|---|---|---|",
        f"| brains | {len(ventricles)} | ventricle volume | {_describe(ventricle_ml, 'mL')} |",
        f"| brains | {len(ventricles)} | ventricles / ICV | {_describe(ratio, '%')} |",
        f"| tumours | {len(tumours)} | tumour volume | {_describe(tumour_ml, 'mL')} |",
        f"| tumours | {len(tumours)} | sphericity | {_describe(sphericity, digits=2)} |",
        "",
        "Tables: `conditions/ventricles.csv`, `conditions/tumours.csv` (normalisers fitted on the training split,",
        "saved beside them).",
        "",
        "![conditions](conditions/summary.png)",
        "",
        "Brains (image with label outlines):",
        "",
        "![brains](data/brains/mosaic.png)",
        "",
        "Tumours (image with mask outline):",
        "",
        "![tumours](data/tumours/mosaic.png)",
        "",
    ]
    from shared.workflow.segmentation_study import study_report_lines

    figures = demo_figures(output_dir, studies) if studies else {}
    if studies:
        lines[2:2] = answer_section(output_dir, figures)
    titles = {
        "ventricles": "Ventricle segmentation: nnU-Net per training set (hold-out: enlarged ventricles)",
        "tumours": "Tumour segmentation: nnU-Net per training set (hold-out: new tumour cases)",
    }
    if studies and scale == "demo":
        lines += [
            f"Demo scale: each nnU-Net trains for {nnunet_iterations} iterations on a few dozen cases, and the",
            "hold-outs have a handful of cases, so the differences between variants are small and their intervals",
            "wide; the study scale (`--scale study`, README) runs the papers' experiments in miniature.",
            "",
        ]
    elif studies:
        lines += [
            f"Study scale: {seeds} nnU-Net model(s) per training set (seeds {', '.join(str(k) for k in range(seeds))}"
            f" added to the run's seed), {nnunet_iterations} iterations each; statistics over seeds and cases,",
            "paired differences on each case's mean over seeds. Training sets: `real`; `synthetic` (generated",
            "pairs only); `augmented` (real + generated); `real_dr` (real + domain-randomised images of the real",
            "label maps, SynthSeg-style); `real_classical` (real + classical augmentation); `augmented_classical`",
            "(real + generated + classical augmentation).",
            "",
        ]
    for study in studies:
        lines += study_report_lines(output_dir, study, titles[study])
    lines += stage_time_lines(StageRunner(output_dir))
    path = output_dir / "report.md"
    if studies:
        write_json(output_dir / "figures.json", figures)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path


def generator_source(output_dir: Path) -> str:
    """``starter weights`` or ``trained in this run``, from what the models folders hold."""
    models = output_dir / "models"
    starters = sorted(p.parent.name for p in models.glob("*/starter_manifest.json"))
    trained = sorted({p.parent.name for p in models.glob("*/model.pt")} - set(starters))
    parts = []
    if starters:
        parts.append(f"starter weights ({', '.join(starters)}; checksums verified; `bundles/*/starter/manifest.json`)")
    if trained:
        parts.append(f"trained in this run ({', '.join(trained)})")
    return "; ".join(parts) or "none"


def demo_figures(output_dir: Path, studies: Sequence[str]) -> dict[str, Any]:
    """The figures the report opens with, as JSON (``figures.json``; CI checks them)."""
    from shared.workflow.segmentation_study import generator_figures, segmentation_figures

    return {
        "generators": generator_source(output_dir),
        **{
            study: {
                "generator": generator_figures(output_dir, study),
                "segmentation": segmentation_figures(output_dir, study),
            }
            for study in studies
        },
    }


def answer_section(output_dir: Path, figures: dict[str, Any]) -> list[str]:
    """``## Answer``: best variant per metric with its CI, next to the generators' own quality.

    ``figures``: :func:`demo_figures` of the run (computed once for this and ``figures.json``).
    """
    from shared.workflow.segmentation_study import answer_lines, generator_lines

    studies = [study for study in STUDIES if study in figures]

    lines = [
        "## Answer: do the synthetic pairs make a better segmenter?",
        "",
        "Best variant per hold-out metric (mean over cases, bootstrap 95% CI), and its paired difference",
        "against the model trained on real data alone:",
        "",
    ]
    for index, study in enumerate(studies):
        table = answer_lines(output_dir, study)
        lines += table if index == 0 else table[2:]
    lines += [
        "",
        f"Generators: {generator_source(output_dir)}. Their own quality, so that a generator problem can be told",
        "from a segmentation one:",
        "",
        "| study | pairs | n | quality |",
        "|---|---|---|---|",
    ]
    for study in studies:
        lines += generator_lines(study, figures[study]["generator"])
    return [*lines, ""]


#: What the default demo must reach (issue thresholds; CI checks ``figures.json`` against them).
DEMO_THRESHOLDS: dict[str, float] = {
    "ventricles_real_dice": 0.80,
    "tumours_real_dice": 0.60,
    "ventricles_icv_ratio_low": 0.7,
    "ventricles_icv_ratio_high": 1.4,
    "ventricles_rho": 0.7,
    "tumours_non_empty": 0.9,
    "tumours_rho": 0.6,
}


def check_demo_figures(figures: dict[str, Any], thresholds: dict[str, float] = DEMO_THRESHOLDS) -> dict[str, str]:
    """The thresholds a demo's ``figures.json`` misses: ``{threshold name: one line}`` (empty: all met).

    Generator figures are the generator's own: the first generation round, before QC rejects
    anything (the accepted pairs' figures are in the report beside them).
    """
    failures: dict[str, str] = {}

    def need(ok: bool, name: str, what: str) -> None:
        if not ok:
            failures[name] = what

    for study in ("ventricles", "tumours"):
        if study not in figures:
            failures[study] = f"{study}: no figures (study not run)"
            continue
        key = f"{study}_real_dice"
        dice = figures[study]["segmentation"]["real"]["dice"]
        need(dice >= thresholds[key], key, f"{study}: real model's hold-out Dice {dice:.3f} < {thresholds[key]}")
    if "ventricles" in figures:
        g = figures["ventricles"]["generator"]["raw"]
        low, high = thresholds["ventricles_icv_ratio_low"], thresholds["ventricles_icv_ratio_high"]
        ratio = g["icv_ratio_median"]
        need(low <= ratio <= high, "ventricles_icv_ratio", f"ventricles: ICV ratio {ratio:.2f} outside {low}-{high}")
        need(g["rho_c_volume"] >= thresholds["ventricles_rho"], "ventricles_rho",
             f"ventricles: rho(c, volume) {g['rho_c_volume']:.2f} < {thresholds['ventricles_rho']}")  # fmt: skip
    if "tumours" in figures:
        g = figures["tumours"]["generator"]["raw"]
        need(g["non_empty_fraction"] >= thresholds["tumours_non_empty"], "tumours_non_empty",
             f"tumours: non-empty masks {g['non_empty_fraction']:.2f} < {thresholds['tumours_non_empty']}")  # fmt: skip
        need(g["rho_volume"] >= thresholds["tumours_rho"], "tumours_rho",
             f"tumours: rho(requested, achieved) {g['rho_volume']:.2f} < {thresholds['tumours_rho']}")  # fmt: skip
    return failures


STUDIES = ("ventricles", "tumours")

#: The main command's scales (``--scale``): defaults of its flags and of the studies' settings.
#: ``demo``: minutes on 2 cores, a first look. ``study``: the papers' segmentation experiments
#: in miniature (about an hour per study on 2 cores): real brains with normal ventricles and a
#: hold-out of 24 brains with enlarged ones beyond them, twice as many generated pairs as real
#: cases, the comparators (domain randomisation; classical augmentation x5), 2 nnU-Net seeds.
SCALES: dict[str, dict[str, Any]] = {
    "demo": {
        "n_brains": 20, "n_tumours": 20, "n_generated": 16, "n_holdout": 8, "nnunet_epochs": 16,
        "nnunet_seeds": 1, "brain_enlargement": (1.0, 5.0), "study": {},
    },
    "study": {
        "n_brains": 20, "n_tumours": 20, "n_generated": 40, "n_holdout": 24, "nnunet_epochs": 16,
        "nnunet_seeds": 2, "brain_enlargement": (1.0, 2.0),
        "study": {
            "holdout_enlargement": (4.0, 7.0), "generated_c": (0.5, 1.25), "guidance_scale": 4.0,
            "volume_threshold_ml": 75.0,
            "ventricle_variants": ("real", "synthetic", "augmented", "real_dr"),
            "tumour_variants": ("real", "real_classical", "synthetic", "augmented", "augmented_classical"),
        },
    },
}  # fmt: skip


def _studies(branches: str | Sequence[str] | None) -> list[str]:
    """``"ventricles,tumours"`` / a tuple / ``"none"`` -> the list of studies to run."""
    if branches is None or branches == "none" or branches == "":
        return []
    names = [b.strip() for b in branches.split(",")] if isinstance(branches, str) else [str(b) for b in branches]
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        raise InputError(f"--branches: unknown '{unknown[0]}', expected some of {', '.join(STUDIES)} or none")
    return [n for n in STUDIES if n in names]


def run_demo_pipeline(
    output_dir: str | os.PathLike | None = None,
    scale: str = "demo",
    n_brains: int | None = None,
    n_tumours: int | None = None,
    shape: Sequence[int] = (32, 32, 32),
    spacing: Sequence[float] | float | None = None,
    tumour_shape: Sequence[int] = (64, 64, 64),
    seed: int = 0,
    branches: str | Sequence[str] = STUDIES,
    n_generated: int | None = None,
    n_holdout: int | None = None,
    sampling_steps: int = 10,
    train_generators: bool = False,
    qc_rounds: int = 3,
    nnunet_epochs: int | None = None,
    nnunet_iterations: int = 25,
    nnunet_seeds: int | None = None,
    nnunet_optimizer: str = "adamw",
    nnunet_lr: float = 3e-3,
    device: str = "cpu",
    force: bool = False,
) -> Path:
    """The whole story on the built-in demo data, at ``--scale demo`` or ``study``; returns the report's path.

    Stages: ``demo_brains``, ``demo_tumours``, ``conditions``; then per study (``--branches``,
    default both; ``none`` stops after the data): the ventricle study (hold-out brains with
    enlarged ventricles, the mask and SPADE generators from their checksum-verified starter
    weights or trained with ``--train_generators``, pairs generated towards enlarged ventricles
    and checked by QC, real / synthetic / augmented nnU-Net sets, one small nnU-Net each,
    hold-out evaluation) and the tumour study (slice-based LDM, real / augmented sets); ``report``.
    ``--scale study`` adds the comparators (real + domain randomisation; real + classical
    augmentation x5, slice-LDM pairs alone, real + slice-LDM pairs + augmentation), 24 hold-out
    cases per study beyond the real training range and 2 nnU-Net seeds (see :data:`SCALES`);
    flags given explicitly override the scale's values.
    Finished stages are skipped when run again with the same parameters (see
    :class:`StageRunner`); an interrupted stage is redone (bundle and nnU-Net training resume
    from their last checkpoint).

    Args:
        output_dir: where everything goes (data, models, generated pairs, nnU-Net folders,
            report); default ``outputs/<scale>``.
        scale: ``demo`` (~20 min on 2 cores) or ``study`` (the papers' experiments in
            miniature, about 1 hour per study); sets the defaults of the flags below marked (scale).
        n_brains: real training brains of the ventricle study (scale: 20; ventricle enlargement
            1-5 at demo, 1-2, normal ventricles, at study).
        n_tumours: real tumour cases of the tumour study (scale: 20).
        shape: grid of the demo brains ``X, Y, Z`` (voxels; the starter weights' 32^3 unless
            ``--train_generators``).
        spacing: voxel size (mm) of the brains, one value or three; default: the demo's
            192 mm field of view over ``shape`` (6 mm at 32^3).
        tumour_shape: grid of the raw demo tumour cases (prepared to the slice-based LDM's 64x64x32).
        seed: seed of the demo data, of every generator and of nnU-Net's training.
        branches: studies to run, comma separated: ``ventricles``, ``tumours``; ``none`` for the data only.
        n_generated: synthetic pairs per study that pass QC (scale: 16; 40 = 2x the real cases).
        n_holdout: hold-out cases per study (scale: 8; 24).
        sampling_steps: DDIM steps of every generator.
        train_generators: retrain the generators on this run's data with their starter recipes
            (see each bundle's ``starter/manifest.json``; the mask LDM's takes ~1 hour on 2 cores)
            instead of installing the shipped starter weights.
        qc_rounds: generation rounds at most; each regenerates the pairs QC rejected.
        nnunet_epochs: nnU-Net epochs per model (scale: 16, i.e. 400 iterations: past the
            plateau of the learning curve in the README).
        nnunet_iterations: nnU-Net training iterations per epoch.
        nnunet_seeds: nnU-Net models per variant, seeds ``seed``, ``seed + 1`` ... (scale: 1; 2).
        nnunet_optimizer: ``adamw`` (default; learns in a few hundred iterations) or ``sgd``
            (nnU-Net's own, for its full schedule: ``--nnunet_epochs 1000 --nnunet_iterations 250 --nnunet_lr 0.01``).
        nnunet_lr: nnU-Net's initial learning rate.
        device: ``cpu`` or ``cuda`` for the bundles and nnU-Net.
        force: rerun every stage even when it finished before.
    """
    from shared.segmentation.nnunet_training import TrainingSchedule
    from shared.workflow.segmentation_study import (
        MASK_BUNDLE,
        SPADE_BUNDLE,
        StudySettings,
        check_starter_grid,
        run_tumour_study,
        run_ventricle_study,
    )  # fmt: skip

    if scale not in SCALES:
        raise InputError(f"--scale {scale!r}: expected one of {', '.join(SCALES)}")
    preset = SCALES[scale]
    n_brains = preset["n_brains"] if n_brains is None else n_brains
    n_tumours = preset["n_tumours"] if n_tumours is None else n_tumours
    n_generated = preset["n_generated"] if n_generated is None else n_generated
    n_holdout = preset["n_holdout"] if n_holdout is None else n_holdout
    nnunet_epochs = preset["nnunet_epochs"] if nnunet_epochs is None else nnunet_epochs
    nnunet_seeds = preset["nnunet_seeds"] if nnunet_seeds is None else nnunet_seeds
    output_dir = Path(f"outputs/{scale}" if output_dir is None else output_dir).resolve()
    make_grid(shape, spacing)  # validate before anything is written
    make_grid(tumour_shape, None)
    studies = _studies(branches)
    if not isinstance(train_generators, bool):
        raise InputError(f"--train_generators: a flag (true/false), got {train_generators!r}")
    settings = StudySettings(
        n_generated=int(n_generated), n_holdout=int(n_holdout), sampling_steps=int(sampling_steps),
        train_generators=train_generators, qc_rounds=int(qc_rounds),
        nnunet_epochs=int(nnunet_epochs), nnunet_iterations=int(nnunet_iterations),
        nnunet_optimizer=str(nnunet_optimizer), nnunet_lr=float(nnunet_lr), nnunet_seeds=int(nnunet_seeds),
        device=str(device), **preset["study"],
    )  # fmt: skip
    TrainingSchedule(  # validates the nnU-Net schedule before anything is written
        settings.nnunet_epochs, settings.nnunet_iterations, 2, settings.nnunet_lr, settings.nnunet_optimizer
    )
    if "ventricles" in studies and not train_generators:
        for bundle in (MASK_BUNDLE, SPADE_BUNDLE):
            check_starter_grid(bundle, [int(n) for n in shape])
    runner = StageRunner(output_dir, force=force)
    data = dict(
        shape=[int(n) for n in shape],
        spacing=spacing if spacing is None or np.isscalar(spacing) else list(spacing),
        seed=seed,
    )
    brains, tumours = output_dir / "data" / "brains", output_dir / "data" / "tumours"
    enlargement = list(preset["brain_enlargement"])
    if scale != "demo":
        data["enlargement"] = enlargement  # the demo's stage parameters stay as they were
    runner.run(
        "demo_brains",
        {**data, "n": n_brains},
        lambda: write_brain_dataset(brains, n_brains, shape, spacing, seed, enlargement),
    )
    tumour_data = {"shape": [int(n) for n in tumour_shape], "seed": seed, "n": n_tumours}
    runner.run("demo_tumours", tumour_data, lambda: write_tumour_dataset(tumours, n_tumours, tumour_shape, None, seed))
    upstream = {**data, "n_brains": n_brains, "n_tumours": n_tumours, "tumour_shape": tumour_data["shape"]}
    runner.run(
        "conditions",
        upstream,
        lambda: write_condition_tables(brains / "datalist.json", tumours / "datalist.json", output_dir / "conditions"),
    )
    if "ventricles" in studies:
        run_ventricle_study(runner, output_dir, brains, upstream, settings)
    if "tumours" in studies:
        run_tumour_study(runner, output_dir, tumours, upstream, settings)
    report_params = {**upstream, "studies": studies, **settings.params()}
    iterations = settings.nnunet_epochs * settings.nnunet_iterations
    runner.run(
        "report",
        {**report_params, "scale": scale},
        lambda: write_demo_report(output_dir, studies, iterations, scale, settings.nnunet_seeds),
    )
    return output_dir / "report.md"
