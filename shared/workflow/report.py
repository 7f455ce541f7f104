"""The main command's report: ``report.md`` (the answer first) and ``figures.json`` (what CI checks).

The answer is read from each study's ``comparison.csv`` (hierarchical bootstrap over seeds and
cases, Holm-adjusted p; :mod:`shared.evaluation.study_statistics`) and says a variant differs
from another only when the 95 % interval of the difference excludes 0. Each study's section
holds its data ledger (which subjects every model learnt from), the settings fixed before the
run, one row per variant (mean, seed SD, interval, differences against ``real`` and ``pool``),
the same per hold-out bin (inside / beyond the training data), and the pictures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.evaluation.study_statistics import BETTER, MIN_CASES, NOT_AFTER_HOLM, WORSE, verdict
from shared.io import atomic_path, read_csv, read_datalist, read_grid_reference, read_json, write_json
from shared.workflow.design import BIN_WORDS, BINS, STUDY_GENERATORS
from shared.workflow.design import generator_source as weights_source
from shared.workflow.generation_rounds import accepted_rows
from shared.workflow.ledger import Ledger, ledger_table
from shared.workflow.report_html import write_report_html
from shared.workflow.settings import StudySettings
from shared.workflow.stages import (
    STUDY_SETS,
    evaluation_dir,
    fixed_settings,
    generator_recipe,
    models_dir,
    variant_dataset_folders,
)

TITLES = {
    "ventricles": "Ventricle segmentation: nnU-Net per training set (hold-out: subjects no model saw)",
    "tumours": "Tumour segmentation: nnU-Net per training set (hold-out: subjects no model saw)",
}
#: What each variant's training set is, for the report.
VARIANT_WORDS = {
    "real": "the small real set",
    "pool": "the data the generators learnt from",
    "synthetic": "generated pairs only",
    "augmented": "real + generated pairs",
    "pool_augmented": "the generators' data + generated pairs",
    "real_dr": "real + domain-randomised images of the real label maps",
    "real_classical": "real + classical augmentation",
    "augmented_classical": "real + generated pairs + classical augmentation",
    "synthetic_3d_ldm": "3D-LDM baseline's pairs only",
    "augmented_3d_ldm": "real + 3D-LDM baseline's pairs",
}
#: The comparisons the answer names, in order: (variant, reference, what it asks).
KEY_QUESTIONS = (
    ("pool_augmented", "pool", "do generated pairs add anything beyond the data the generators learnt from?"),
    ("augmented", "real", "do they help the small real set?"),
    ("pool", "real", "how much do the generators' own data help the small real set?"),
    ("synthetic", "real", "can generated pairs replace the real set?"),
    ("augmented_classical", "real_classical", "do they add to classical augmentation?"),
    ("augmented_3d_ldm", "real", "do the 3D-LDM baseline's pairs help the small real set (paper 003's comparator)?"),
    ("synthetic_3d_ldm", "real", "can the 3D-LDM baseline's pairs replace the real set?"),
)


# ----------------------------------------------------------------------------- figures


def generator_source(output_dir: Path) -> str:
    """``starter weights`` or ``trained in this run``, from what the models folders hold."""
    models = output_dir / "models"
    starters = sorted(p.parent.name for p in models.glob("*/starter_manifest.json"))
    trained = sorted({p.parent.name for p in models.glob("*/model.pt")} - set(starters))
    parts = []
    if starters:
        parts.append(f"starter weights ({', '.join(starters)}; checksums verified; `bundles/*/starter/manifest.json`)")
    for folder in trained:  # each with the data its ledger names
        ledger = models / folder / "ledger_autoencoder.json"
        source = read_json(ledger).get("source") if ledger.is_file() else None
        parts.append(f"{folder} trained in this run" + (f" ({source})" if source else ""))
    return "; ".join(parts) or "none"


def generator_figures(out: Path, study: str) -> dict[str, Any]:
    """The generator's own quality, from ``generated/<study>/manifest.csv`` and ``qc.json``.

    Ventricles: Spearman rho of requested ``c`` against achieved ventricle volume and the
    median ICV ratio to the real training brains, over the first round's candidates (what the
    generator gives before QC) and over the accepted pairs. Tumours: the share of non-empty
    masks and rho of requested against achieved volume, the same two ways.
    """
    from scipy.stats import spearmanr

    generated = out / "generated" / study
    rows = read_csv(generated / "manifest.csv")
    qc = read_json(generated / "qc.json")
    groups = {
        "raw": [r for r in rows if r.get("round", "0") == "0"],
        "accepted": accepted_rows(generated / "manifest.csv"),
    }

    def rho(x: list[float], y: list[float]) -> float:
        return float(spearmanr(x, y).statistic) if len(x) > 2 and np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan")

    figures: dict[str, Any] = {"qc": qc}
    for name, group in groups.items():
        if study == "ventricles":
            from shared.evaluation.segmentation_metrics import label_volumes_ml

            real_icv = float(np.median(label_volumes_ml(out / "data" / "brains" / "labels")))
            c = [float(r["requested_c"]) for r in group]
            volume = [float(r["ventricle_ml"]) for r in group]
            icv = [float(r["icv_ml"]) for r in group]
            figures[name] = {
                "n": len(group), "rho_c_volume": rho(c, volume),
                "icv_ratio_median": float(np.median(icv) / real_icv) if icv else float("nan"),
                "ventricle_ml_min": float(min(volume, default=float("nan"))),
                "ventricle_ml_max": float(max(volume, default=float("nan"))),
            }  # fmt: skip
        else:
            requested = [float(r["requested_volume"]) for r in group]
            achieved = [float(r["achieved_volume"]) for r in group]
            voxels = [int(float(r["tumour_voxels"])) for r in group]
            figures[name] = {
                "n": len(group), "rho_volume": rho(requested, achieved),
                "non_empty_fraction": float(np.mean([v > 0 for v in voxels])) if voxels else float("nan"),
            }  # fmt: skip
    return figures


def segmentation_figures(out: Path, study: str) -> dict[str, Any]:
    """Per variant: mean Dice, IoU and volume MAE on the whole hold-out (over seeds and cases)."""
    comparison = read_csv(evaluation_dir(out, study) / "comparison.csv")
    figures: dict[str, Any] = {}
    for row in comparison:
        if row["subset"] == "all":
            figures.setdefault(row["model"], {})[row["metric"]] = float(row["mean"])
    return figures


def study_figures(out: Path, study: str) -> dict[str, Any]:
    design = read_json(evaluation_dir(out, study) / "design.json")
    comparison = read_csv(evaluation_dir(out, study) / "comparison.csv")
    return {
        "generator": generator_figures(out, study),
        "segmentation": segmentation_figures(out, study),
        "generators_from": design["generators_from"],
        "bins": design["bins"],
        "comparison": [
            {k: _number(v) for k, v in row.items()}
            for row in comparison
            if row["metric"] in ("dice", "abs_volume_error_ml")
        ],
    }


def _number(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


# ----------------------------------------------------------------------------- the answer


def _row(comparison: Sequence[Mapping[str, str]], model: str, metric: str, subset: str) -> Mapping[str, str] | None:
    return next(
        (r for r in comparison if r["model"] == model and r["metric"] == metric and r["subset"] == subset), None
    )


def _float(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key, "")
    return float(value) if value not in ("", None) else float("nan")


def _compared(row: Mapping[str, Any] | None, reference: str) -> bool:
    """Whether ``row`` holds a difference against ``reference`` with its interval (not a bin of too few cases)."""
    if row is None:
        return False
    return all(row.get(f"vs_{reference}_{k}") not in ("", None) for k in ("difference", "ci_low", "ci_high"))


def difference_words(row: Mapping[str, Any] | None, reference: str, larger_is_better: bool = True) -> str:
    """``+0.012 (-0.004, +0.028), p_Holm 0.31: no difference shown`` (or better / worse); ``-`` when not compared
    (a bin of fewer than :data:`MIN_CASES` cases shows its mean difference only)."""
    if not _compared(row, reference):
        if row is not None and row.get("n_cases") not in ("", None) and int(float(row["n_cases"])) < MIN_CASES:
            return f"n = {int(float(row['n_cases']))}: too few cases to compare"
        return "-"
    diff, low, high = (_float(row, f"vs_{reference}_{k}") for k in ("difference", "ci_low", "ci_high"))
    p = _float(row, f"vs_{reference}_p_holm")
    called = verdict(row, reference, larger_is_better)
    shown = f"**{called}**" if called in (BETTER, WORSE) else called
    return f"{diff:+.3f} ({low:+.3f}, {high:+.3f}), p_Holm {p:.2g}: {shown}"


def answer_lines(out: Path, study: str, settings: StudySettings) -> list[str]:
    """One study's part of ``## Answer``: the key comparisons, all cases and per bin, called on their CI."""
    comparison = read_csv(evaluation_dir(out, study) / "comparison.csv")
    design = read_json(evaluation_dir(out, study) / "design.json")
    bins = design["bins"]
    models = {r["model"] for r in comparison}
    counts = {s: _row(comparison, "real", "dice", s) for s in ("all", *BINS)}
    n = {s: (int(float(r["n_cases"])) if r else 0) for s, r in counts.items()}
    seeds = int(float(counts["all"]["n_seeds"])) if counts["all"] else 0
    shown = [b for b in BINS if n[b]]
    lines = [
        f"**{study.capitalize()}** ({_protocol_words(design, settings)}; {seeds} nnU-Net seed(s) per variant, "
        f"{n['all']} hold-out cases: "
        + ", ".join(f"{n[b]} {BIN_WORDS[b]}" for b in BINS)
        + f"; bins: {bins['rule']}):",
        "",
        "| question | comparison | Dice, all cases | " + " | ".join(f"Dice, {BIN_WORDS[b]}" for b in shown) + " |",
        "|---|---|---|" + "---|" * len(shown),
    ]
    aliases = design["aliases"]
    asked: set[tuple[str, str]] = set()
    for variant, reference, question in KEY_QUESTIONS:
        twin, twin_reference = aliases.get(variant, variant), aliases.get(reference, reference)
        if variant not in models or twin_reference not in models or twin == twin_reference:
            continue  # not run, or the same models (real protocol: pool is the real set)
        if (twin, twin_reference) in asked:
            continue
        asked.add((twin, twin_reference))
        name = f"{variant} - {reference}"
        if (twin, twin_reference) != (variant, reference):
            name += f" (= {twin} - {twin_reference})"
        cells = [difference_words(_row(comparison, twin, "dice", s), twin_reference) for s in ("all", *shown)]
        lines.append(f"| {question} | {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for variant, why in design.get("not_trained", {}).items():
        lines.append(f"- `{variant}` was not trained: {why}.")
    if design.get("not_trained"):
        lines.append("")
    if seeds < 2:
        lines += ["One nnU-Net seed per variant: the intervals hold the cases' variance only, not the seeds'.", ""]
    lines += _plain_answer(comparison, design, study)
    lines += _reach_lines(out, study, design)
    lines += _fidelity_answer(out, study)
    return lines


def _fidelity_answer(out: Path, study: str) -> list[str]:
    """One line: how far the accepted pairs' images lie from real ones, against real vs real, and memorisation."""
    path = evaluation_dir(out, study) / "fidelity.json"
    if not path.is_file():
        return []
    fidelity = read_json(path)
    ratios = {
        row["features"]: f"{float(row['ratio']):.1f}x ({float(row['ratio_low']):.1f}-{float(row['ratio_high']):.1f})"
        for row in read_csv(evaluation_dir(out, study) / "fidelity.csv")
        if row["metric"] == "frechet" and row["features"] in ("3D", "2.5D (mean of planes)")
    }
    shown = "; ".join(f"{name} {value}" for name, value in ratios.items())
    diversity, memorisation = fidelity["diversity"], fidelity["memorisation"]
    return [
        f"- Image fidelity: Fréchet distance of the accepted pairs' images to the generators' real data, as a "
        f"multiple of real vs real: {shown} (1x: as far as two samples of real images). Diversity: MS-SSIM "
        f"{diversity['generated_ms_ssim']:.2f} among generated images, {diversity['real_ms_ssim']:.2f} among real. "
        f"Memorisation: {memorisation['flagged']} of {memorisation['samples']} samples nearer a training case than any "
        "two real subjects (details below).",
        "",
    ]


def _protocol_words(design: Mapping[str, Any], settings: StudySettings) -> str:
    if design["generators_from"] == "real":
        return "generators trained on the real training subjects only: `pool` is the real set"
    return "generators from their starter weights, trained on their own pool of labelled data"


def _plain_answer(comparison: Sequence[Mapping[str, str]], design: Mapping[str, Any], study: str) -> list[str]:
    """Sentences that say only what the intervals support."""
    lines = []
    target = "pool" if "pool" in {r["model"] for r in comparison} and "pool" not in design["aliases"] else "real"
    variant = "pool_augmented" if target == "pool" else "augmented"
    places = (("all", "on the whole hold-out"), ("inside", "inside the real set's range"),
              ("pool_only", "inside the generators' data only"), ("beyond", "beyond every model's data"))  # fmt: skip
    for subset, where in places:
        row = _row(comparison, variant, "dice", subset)
        if row is None:
            continue
        if not _compared(row, target):
            lines.append(f"- {study.capitalize()}, {where}: {int(float(row['n_cases']))} case(s), too few to compare.")
            continue
        low, high = _float(row, f"vs_{target}_ci_low"), _float(row, f"vs_{target}_ci_high")
        interval = f"95 % CI {low:+.3f} to {high:+.3f}, p_Holm {_float(row, f'vs_{target}_p_holm'):.2g}"
        called = verdict(row, target)
        primary = " (the primary comparison)" if subset == "all" else ""
        if called == BETTER:
            words = f"generated pairs improve Dice {where} over `{target}`{primary} ({interval})"
        elif called == WORSE:
            words = f"generated pairs lower Dice {where} against `{target}`{primary} ({interval})"
        elif called == NOT_AFTER_HOLM:
            words = (f"`{variant}` against `{target}` {where}{primary}: the interval excludes 0 but Holm's p does "
                     f"not reach 0.05, so no difference is called ({interval})")  # fmt: skip
        else:
            words = f"no difference {where} between `{variant}` and `{target}` is shown{primary} ({interval})"
        lines.append(f"- {study.capitalize()}: {words}.")
    pool = _pool_subjects(design)
    real = {s for entry in design["ledgers"] if entry["model"] == "nnU-Net real" for s in entry["training"]}
    models = {r["model"] for r in comparison}
    if design["generators_from"] == "real":
        lines.append(
            f"- Every generator learnt from the {len(real)} real training subjects only (data-scarce protocol): "
            "`augmented` against `real` is what the generated pairs add to the data they came from."
        )
    elif "pool" in models:
        lines.append(
            f"- The generators learnt from {len(pool)} subjects ({len(pool & real)} of them the real set's; data "
            "ledger below); `pool` is that data, so `pool_augmented` against `pool` is what the generated pairs add "
            "beyond it."
        )
    else:
        lines.append(
            f"- The generators learnt from {len(pool)} subjects ({len(pool & real)} of them the real set's; data "
            "ledger below). Without the `pool` variant this run cannot tell what the generated pairs add beyond "
            "the data the generators saw; `--scale study` has that control."
        )
    return [*lines, ""]


def _reach_lines(out: Path, study: str, design: Mapping[str, Any]) -> list[str]:
    """Whether the accepted generated pairs reach beyond the training data (their quantity against the bin edge)."""
    from shared.workflow.ledger import quantity_ml

    generated = out / "generated" / study
    if not (generated / "manifest.csv").is_file():
        return []
    values = [quantity_ml(generated / row["label"], study) for row in accepted_rows(generated / "manifest.csv")]
    if not values:
        return []
    real_high = float(design["bins"]["real_range"][1])
    edge = float(design["bins"]["data_range"][1])
    beyond_real, beyond = sum(v > real_high for v in values), sum(v > edge for v in values)
    what = "ventricle" if study == "ventricles" else "tumour"
    return [
        f"- Do the generated pairs reach beyond the training data? Of the {len(values)} accepted pairs "
        f"(theirs: {min(values):.1f}-{max(values):.1f} mL of {what}), {beyond_real} lie above the real set's largest "
        f"({real_high:g} mL) and {beyond} above the largest any model learnt from ({edge:g} mL).",
        "",
    ]


def _pool_subjects(design: Mapping[str, Any]) -> set[str]:
    return {s for entry in design["ledgers"] if not entry["model"].startswith("nnU-Net") for s in entry["training"]}


def generator_lines(study: str, figures: dict[str, Any]) -> list[str]:
    """One Markdown table row per generator figure group (before QC, accepted)."""
    qc = figures["qc"]
    reasons = ", ".join(f"{k}: {v}" for k, v in qc["reasons"].items()) or "none"
    lines = []
    for name in ("raw", "accepted"):
        f = figures[name]
        if study == "ventricles":
            quality = (f"rho(c, ventricle volume) {f['rho_c_volume']:.2f}; "
                       f"ICV / real median {f['icv_ratio_median']:.2f}; "
                       f"ventricles {f['ventricle_ml_min']:.0f}-{f['ventricle_ml_max']:.0f} mL")  # fmt: skip
        else:
            quality = f"rho(requested, achieved volume) {f['rho_volume']:.2f}; non-empty {f['non_empty_fraction']:.0%}"
        label = "first round, before QC" if name == "raw" else "accepted by QC"
        lines.append(f"| {study} | {label} | {f['n']} | {quality} |")
    lines.append(f"| {study} | QC | {qc['candidates']} candidates in {qc['rounds']} rounds | "
                 f"{qc['rejected']} rejected ({reasons}) |")  # fmt: skip
    return lines


def answer_section(out: Path, figures: dict[str, Any], settings: StudySettings, studies: Sequence[str]) -> list[str]:
    """``## Answer``: per study the key comparisons with their CIs, then the generators' own quality."""
    lines = [
        "## Answer: do the synthetic pairs make a better segmenter?",
        "",
        "Differences in hold-out Dice (mean over seeds and cases; 95 % CI of a hierarchical bootstrap over seeds",
        "and cases; p Holm-adjusted over the variants compared with the same reference). A difference is called",
        "only when its interval excludes 0 and its Holm-adjusted p is below 0.05.",
        "",
    ]
    for study in studies:
        lines += answer_lines(out, study, settings)
    lines += [
        f"Generators: {generator_source(out)}. Their own quality, so that a generator problem can be told",
        "from a segmentation one:",
        "",
        "| study | pairs | n | quality |",
        "|---|---|---|---|",
    ]
    for study in studies:
        lines += generator_lines(study, figures[study]["generator"])
    return [*lines, ""]


# ----------------------------------------------------------------------------- a study's section


def ledger_lines(out: Path, study: str) -> list[str]:
    design = read_json(evaluation_dir(out, study) / "design.json")
    ledgers = [Ledger.from_json(entry) for entry in design["ledgers"]]
    holdout = Ledger.from_json(design["holdout"])
    lines = [
        "### Data ledger",
        "",
        "Which subjects each model learnt from (`models/*/ledger_*.json`, each nnU-Net set's `ledger.json`); a",
        "subject is an anatomy, whatever its ventricles. No hold-out subject is in any ledger (checked before any",
        "segmenter trained). Quantity: ventricle volume (ventricle study) or tumour volume (tumour study) of the",
        "training subjects.",
        "",
        *ledger_table(ledgers, holdout),
        "",
    ]
    if design["aliases"]:
        pairs = ", ".join(f"`{a}` = `{t}`" for a, t in design["aliases"].items())
        lines += [f"With the generators trained on the real set, {pairs}: the same training sets and models.", ""]
    return lines


def fixed_lines(settings: StudySettings, study: str, bins: Mapping[str, Any]) -> list[str]:
    fixed = fixed_settings(settings, study)
    lines = ["### Settings fixed before the run", ""]
    lines += [f"- {key.replace('_', ' ')}: {value}" for key, value in fixed.items() if key != "qc"]
    measured = ("icv_range_ml", "brain_ml_range", "max_slice_jump", "max_background")  # set from the real images
    qc = ", ".join(f"{k} {v}" for k, v in fixed["qc"].items() if k not in measured)
    lines += [
        f"- QC: {qc}",
        f"- hold-out bins: {bins['rule']}",
        "- nnU-Net's schedule comes from `scripts/learning_curve.py` on a validation split of the real training",
        "  subjects, never the hold-out; the guidance scale and `c` range from the mask LDM's own evaluation.",
        "",
    ]
    return lines


def _cell(row: Mapping[str, str] | None, reference: str, larger_is_better: bool) -> str:
    return difference_words(row, reference, larger_is_better) if row else "-"


def variant_table(comparison: Sequence[Mapping[str, str]], metric: str, digits: int = 3) -> list[str]:
    """One row per variant: mean, seed SD, interval, differences against real and pool."""
    larger = metric != "abs_volume_error_ml"
    lines = [
        "| training set | cases x seeds | mean | seed SD | 95 % CI | vs real: difference (CI), p_Holm "
        "| vs pool: difference (CI), p_Holm |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in [r for r in comparison if r["metric"] == metric and r["subset"] == "all"]:
        name = row["model"] + (f" (= {row['same_as']})" if row.get("same_as") else "")
        sd = _float(row, "seed_sd")
        lines.append(
            f"| {name}: {VARIANT_WORDS.get(row['model'], '')} "
            f"| {int(float(row['n_cases']))} x {int(float(row['n_seeds']))} "
            f"| {_float(row, 'mean'):.{digits}f} | {'-' if np.isnan(sd) else f'{sd:.{digits}f}'} "
            f"| {_float(row, 'ci_low'):.{digits}f}, {_float(row, 'ci_high'):.{digits}f} "
            f"| {_cell(row, 'real', larger)} | {_cell(row, 'pool', larger)} |"
        )
    return lines


def bin_table(comparison: Sequence[Mapping[str, str]], metric: str = "dice") -> list[str]:
    """Per variant and (non-empty) bin: mean and the differences against real and pool."""
    shown = [b for b in BINS if any(r["subset"] == b for r in comparison)]
    header = " | ".join(f"{b}: mean | {b}: vs real | {b}: vs pool" for b in shown)
    lines = [f"| training set | {header} |", "|---|" + "---|" * (3 * len(shown))]
    models = list(dict.fromkeys(r["model"] for r in comparison))
    for model in models:
        cells = []
        for subset in shown:
            row = _row(comparison, model, metric, subset)
            if row is None:
                cells += ["-", "-", "-"]
                continue
            cells += [f"{_float(row, 'mean'):.3f} (n = {int(float(row['n_cases']))})", _cell(row, "real", True),
                      _cell(row, "pool", True)]  # fmt: skip
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def fidelity_lines(out: Path, study: str) -> list[str]:
    """``### Image fidelity``: distances to real images beside real-vs-real, diversity, brain shape, memorisation."""
    path = evaluation_dir(out, study) / "fidelity.json"
    if not path.is_file():
        return []
    fidelity = read_json(path)
    rows = read_csv(evaluation_dir(out, study) / "fidelity.csv")
    counts = fidelity["counts"]
    lines = [
        "### Image fidelity (generated against the real images the generators learnt from)",
        "",
        f"{counts['generated']} accepted pairs against {counts['reference']} real ones. Features: 3D, "
        f"{fidelity['features']['3d'] or 'none'}; 2.5D, {fidelity['features']['2.5d']} (central slices of each",
        "plane). Each split draws n generated volumes and two disjoint halves of n real ones; the generated draw and",
        "the second half are each compared with the first half (real vs real: what two samples of real images",
        "differ by). Intervals: 95 % over 200 splits. Fréchet distance is judged by its ratio to real vs real (1:",
        "as far from real as real images are from each other), MMD by its difference.",
        "",
        "| features | metric | n | generated vs real | real vs real | judged |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        kind = "ratio" if "ratio" in row and row["ratio"] not in ("", None) else "difference"

        def cell(key: str, row: dict = row) -> str:
            return f"{float(row[key]):.2f} ({float(row[key + '_low']):.2f}, {float(row[key + '_high']):.2f})"

        lines.append(
            f"| {row['features']} | {row['metric']} | {row['n']} | {cell('generated')} | {cell('real')} | "
            f"{kind} {cell(kind)} |"
        )
    diversity = fidelity["diversity"]
    brain = fidelity["brain"]
    memorisation = fidelity["memorisation"]
    closest = memorisation["closest_real"]
    low, high = brain["reference_ml"]
    lines += [
        "",
        f"- Diversity: mean pairwise MS-SSIM {diversity['generated_ms_ssim']:.3f} among generated images, "
        f"{diversity['real_ms_ssim']:.3f} among as many real ones (difference {diversity['difference']:+.3f}; "
        "higher: more alike).",
        f"- Brain shape: {len(brain['generated_failing'])} of {counts['generated']} accepted images fail the brain "
        f"check (an intensity brain of {low:.0f}-{high:.0f} mL, as real images give, no slice-to-slice jump "
        f"above {brain['reference_max_slice_jump']:.3f}, a background at most "
        f"{brain.get('reference_max_background', float('inf')):.2f} of the brain's intensity).",
        f"- Memorisation ({memorisation['features']} features): the closest two distinct real subjects reach image "
        f"correlation {closest['image_correlation']:.3f}, label Dice {closest['label_dice']:.3f}, feature distance "
        f"{closest['feature_distance']:.2f}; the generated samples' nearest training cases: correlation median "
        f"{memorisation['generated_image_correlation']['median']:.3f} (max "
        f"{memorisation['generated_image_correlation']['max']:.3f}), Dice median "
        f"{memorisation['generated_label_dice']['median']:.3f} "
        f"(max {memorisation['generated_label_dice']['max']:.3f}). "
        f"**{memorisation['flagged']} of {memorisation['samples']} samples flagged** (nearer a training case than any "
        f"two real subjects; `evaluation/{study}/memorisation.csv`).",
    ]
    flagged = [r for r in read_csv(evaluation_dir(out, study) / "memorisation.csv") if r["flagged"]]
    for row in flagged[:20]:
        lines.append(f"  - `{row['sample']}`: {row['flagged']} (nearest: {row['image_case']}, {row['label_case']})")
    if len(flagged) > 20:
        lines.append(f"  - ... {len(flagged) - 20} more in `memorisation.csv`")
    return [*lines, ""]


def table1_lines(out: Path, study: str) -> list[str]:
    """``### Table 1``: each tumour generator's image quality, size and speed at the study's grid (when measured)."""
    table = evaluation_dir(out, study) / "table1.md"
    if not table.is_file():
        return []
    reference = read_json(table.with_suffix(".json"))["reference"]
    lines = [
        "### Table 1: the generators at this study's grid (paper 003)",
        "",
        "Each generator's first round of pairs (every candidate, before QC; the same tumour requests for both) against",
        f"the real volumes it learnt from (`{Path(reference).name}` of `{Path(reference).parent.name}`), unpaired: 3D",
        "PSNR and SSIM of the FLAIR in [0, 1]; parameters of its saved autoencoder and diffusion UNet; sampling",
        "seconds per volume on this run's device; rho(requested, achieved tumour volume); the share of empty masks.",
        "The paper's figures (full size, GPU) follow for reference.",
        "",
        *table.read_text().splitlines(),
        "",
    ]
    for folder in sorted((out / "generated").glob(f"{study}_*")):
        if (folder / "mosaic.png").is_file():
            mosaic = f"generated/{folder.name}/mosaic.png"
            lines += [f"Pairs of `{folder.name}` accepted by QC:", "", f"![{folder.name}]({mosaic})", ""]
    return lines


def _grid_words(values: Sequence[Any], digits: str = "d") -> str:
    return " x ".join(format(int(v) if digits == "d" else float(v), digits) for v in values)


def model_grid_lines(out: Path, study: str, settings: StudySettings) -> list[str]:
    """``### Models: preset, grid and spacing``: what each generator and nnU-Net model worked on."""
    from nibabel.affines import voxel_sizes

    rows = []
    data = out / "data" / ("brains" if study == "ventricles" else "tumours_prepared")
    shape = read_json(data / "dataset.json")["shape"]
    spacing = read_json(out / "data" / "brains" / "dataset.json")["spacing_mm"] if study == "ventricles" else None
    for bundle, name in STUDY_GENERATORS[study]:
        grid = models_dir(out, bundle) / "grid.json"
        if grid.is_file():  # the grid the generator's weights were made on
            shape, affine = read_grid_reference(grid)
            spacing = voxel_sizes(affine)
        preset = generator_recipe(bundle, settings)["preset"]
        how = {"starter": "starter weights", "weights": "named weights"}.get(
            weights_source(settings, study, bundle), "trained in this run"
        )
        unit = " (2D slices of it)" if bundle == "slice_based_ldm_brats" else ""
        spacing_mm = "-" if spacing is None else _grid_words(spacing, ".3g")
        rows.append(f"| {name} (`{bundle}`) | `{preset}` preset, {how} | {_grid_words(shape)}{unit} | {spacing_mm} |")
    _, base_id, dataset_name, _ = STUDY_SETS[study]
    folders = variant_dataset_folders(out / "nnunet" / "nnUNet_preprocessed", base_id, dataset_name,
                                      settings.trained_variants(study))  # fmt: skip
    for variant, folder in folders.items():
        plans = folder / "nnUNetPlans.json"
        if not plans.is_file():
            continue
        configuration = read_json(plans)["configurations"]["3d_fullres"]
        rows.append(f"| nnU-Net `{variant}` | `3d_fullres`, batch {configuration['batch_size']} | "
                    f"patch {_grid_words(configuration['patch_size'])} | "
                    f"{_grid_words(configuration['spacing'], '.3g')} |")  # fmt: skip
    return [
        "### Models: preset, grid and spacing",
        "",
        "Generators: the preset of their recipe (`paper`: the bundle's own configs, the paper's sizes) and the grid",
        "they work on. nnU-Net: its configuration, batch, patch and spacing from its plans (`nnUNetPlans.json`;",
        "nnU-Net puts the coarsest axis first).",
        "",
        "| model | preset / configuration | grid (voxels) | spacing (mm) |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


def study_section(out: Path, study: str, settings: StudySettings) -> list[str]:
    """``## <title>`` of one finished study: ledger, fixed settings, results, bins, pictures."""
    evaluation = evaluation_dir(out, study)
    comparison = read_csv(evaluation / "comparison.csv")
    design = read_json(evaluation / "design.json")
    lines = [f"## {TITLES[study]}", ""]
    if (out / "generated" / study / "mosaic.png").is_file():
        lines += [f"Generated pairs accepted by QC (`generated/{study}/`, every candidate and its QC verdict in",
                  "`manifest.csv`):", "", f"![generated](generated/{study}/mosaic.png)", ""]  # fmt: skip
    lines += ledger_lines(out, study)
    lines += model_grid_lines(out, study, settings)
    lines += fixed_lines(settings, study, design["bins"])
    lines += ["### Hold-out Dice per training set", "", *variant_table(comparison, "dice"), ""]
    lines += [
        "### Per hold-out bin (Dice)",
        "",
        f"Bins: {design['bins']['rule']}. A bin of fewer than {MIN_CASES} cases gets its means only.",
        "",
        *bin_table(comparison),
        "",
    ]
    lines += fidelity_lines(out, study)
    lines += table1_lines(out, study)
    lines += [
        "### Absolute volume error (mL) per training set",
        "",
        *variant_table(comparison, "abs_volume_error_ml", 2),
        "",
    ]
    lines += [
        f"Per case and seed: `evaluation/{study}/per_case.csv` (with each case's bin); every comparison, per bin and",
        f"metric: `evaluation/{study}/comparison.csv`.",
        "",
        f"![errors](evaluation/{study}/errors.png)",
        "",
        f"![Bland-Altman](evaluation/{study}/bland_altman.png)",
        "",
        f"![training volumes](evaluation/{study}/training_volumes.png)",
        "",
    ]
    return lines


# ----------------------------------------------------------------------------- the whole report


def _describe(values: np.ndarray, unit: str = "", digits: int = 1) -> str:
    """``min / median / max unit`` of an array."""
    return f"{values.min():.{digits}f} / {np.median(values):.{digits}f} / {values.max():.{digits}f} {unit}".rstrip()


def data_lines(output_dir: Path) -> list[str]:
    from shared.viz import save_conditions_summary

    ventricles = read_csv(output_dir / "conditions" / "ventricles.csv")
    tumours = read_csv(output_dir / "conditions" / "tumours.csv")
    enlargement = {  # the demo brains' drawn enlargement; a user's brains have none
        item["case"]: item.get("enlargement")
        for item in read_datalist(output_dir / "data" / "brains" / "datalist.json")
    }
    drawn = [enlargement.get(row["case"]) for row in ventricles]
    save_conditions_summary(
        output_dir / "conditions" / "summary.png", ventricles, tumours, None if None in drawn else drawn
    )
    ventricle_ml = np.array([float(r["ventricle_ml"]) for r in ventricles])
    ratio = np.array([float(r["ratio"]) for r in ventricles]) * 100
    tumour_ml = np.array([float(r["volume_ml"]) for r in tumours])
    sphericity = np.array([float(r["sphericity"]) for r in tumours])
    return [
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


def scale_note(settings: StudySettings, studies: Sequence[str]) -> list[str]:
    iterations = " / ".join(
        str(settings.schedule(s).epochs * settings.schedule(s).iterations_per_epoch) for s in studies
    )
    if settings.scale == "demo":
        return [
            f"Demo scale: each nnU-Net trains for {iterations} iterations ({' / '.join(studies)}) on a few dozen",
            "cases, with one seed, and the hold-outs have a handful of cases, so the intervals are wide and hold no",
            "seed variance. The generators' data is not a control here (no `pool` variant); the study scale",
            "(`--scale study`, README) runs the papers' experiments in miniature with it.",
            "",
        ]
    return [
        f"Study scale: {settings.nnunet_seeds} nnU-Net model(s) per training set (seeds {settings.seed}-"
        f"{settings.seed + settings.nnunet_seeds - 1}), {iterations} iterations each ({' / '.join(studies)}). "
        "Training sets: "
        + "; ".join(
            f"`{v}`: {VARIANT_WORDS[v]}" for v in dict.fromkeys(v for s in studies for v in settings.study_variants(s))
        )
        + ".",
        "",
    ]


def user_data_lines(settings: StudySettings, studies: Sequence[str]) -> list[str]:
    """Where a study file's sets come from and the grid each study works on (nothing for demo data)."""
    from shared.workflow.user_sets import UserSet

    lines = []
    for study in studies:
        real = settings.brains if study == "ventricles" else settings.tumours
        if not isinstance(real, UserSet):
            continue
        sets = {"real": real, "hold-out": settings.holdout(study)[0], "pool": settings.pools.get(study)}
        where = "; ".join(f"{role} `{s.source}` ({s.n_cases} cases, {s.discovery.layout})"
                          for role, s in sets.items() if s is not None)  # fmt: skip
        grid = f"{' x '.join(map(str, real.shape))} voxels at {' x '.join(f'{v:g}' for v in real.spacing)} mm"
        lines.append(f"- {study.capitalize()}: the study file's data, on {grid}: {where}.")
    return [*lines, ""] if lines else []


def write_report(output_dir: Path, settings: StudySettings, studies: Sequence[str], stage_lines: list[str]) -> Path:
    """``report.md``, ``report.html`` and (with studies) ``figures.json`` from the stages written before."""
    brains_info = read_json(output_dir / "data" / "brains" / "dataset.json")
    spacing = " x ".join(f"{s:.3g}" for s in brains_info["spacing_mm"])
    lines = [
        f"# {settings.scale.capitalize()} run",
        "",
        f"Grid {' x '.join(str(n) for n in brains_info['shape'])} voxels at {spacing} mm, "
        f"seed {brains_info.get('seed', settings.seed)}.",
        "",
        *user_data_lines(settings, studies),
    ]
    figures: dict[str, Any] = {}
    if studies:
        figures = {"generators": generator_source(output_dir), **{s: study_figures(output_dir, s) for s in studies}}
        lines += answer_section(output_dir, figures, settings, studies)
    lines += data_lines(output_dir)
    if studies:
        lines += scale_note(settings, studies)
    for study in studies:
        lines += study_section(output_dir, study, settings)
    lines += stage_lines
    path = output_dir / "report.md"
    if studies:
        write_json(output_dir / "figures.json", figures)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    write_report_html(output_dir, "\n".join(lines), settings, studies)
    return path


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
