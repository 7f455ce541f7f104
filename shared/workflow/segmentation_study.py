"""The main command's two studies: synthetic labelled pairs -> nnU-Net sets -> models -> hold-out evaluation.

- **Ventricles** (paper 000): train ``ventricle_mask_ldm`` and ``spade_mri_ldm`` on the demo
  brains, generate pairs biased towards enlarged ventricles, assemble real / synthetic /
  augmented nnU-Net sets (binary ventricles), train a small nnU-Net on each, and evaluate on a
  hold-out of brains with enlarged ventricles.
- **Tumours** (paper 003): prepare the demo tumour cases, train ``slice_based_ldm_brats``,
  generate FLAIR + mask pairs with random consistent tumour conditions, assemble real and
  augmented sets (whole tumour), train, evaluate on a hold-out of new tumour cases.

Each step is a stage of :class:`shared.workflow.pipeline.StageRunner` (skipped when done with the same
parameters). Bundles run through ``python -m monai.bundle run`` and nnU-Net through
``scripts/train_segmentation.py``, each in its own process (nnU-Net takes its folders from the
environment at import), with their logs and progress bars on this terminal. Models, generated
pairs and nnU-Net folders all stay under the output folder.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.io import InputError, read_csv, read_grid_reference, write_csv
from shared.segmentation.nnunet_dataset import assemble_dataset, dataset_folder, dataset_id_of, read_pair_sources
from shared.workflow.chaining import MASK_BUNDLE, ROOT, SPADE_BUNDLE, generate_pairs, run_bundle, run_command
from shared.workflow.generation_rounds import accepted_rows, generate_with_qc
from shared.workflow.pair_qc import TumourQC, VentricleQC
from shared.workflow.starter_weights import STARTER_FOLDER, install_starter_weights, read_starter_manifest

logger = logging.getLogger(__name__)

SBLDM_BUNDLE = ROOT / "bundles" / "slice_based_ldm_brats"

#: Training set of each variant: how it is assembled (``real``, ``synthetic`` or ``augmented``:
#: real + extra pairs) and which pair folders add to the real cases, in order. ``generated``: the
#: LDM pairs QC accepted; ``domain_randomised``: SynthSeg-style images of the real label maps;
#: ``classical``: classically augmented copies of the real cases (x ``classical_copies``).
VARIANT_SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "real": ("real", ()),
    "synthetic": ("synthetic", ("generated",)),
    "augmented": ("augmented", ("generated",)),
    "real_dr": ("augmented", ("domain_randomised",)),
    "real_classical": ("augmented", ("classical",)),
    "augmented_classical": ("augmented", ("classical", "generated")),
}
#: The variants each study can train (paper 000: + domain randomisation; paper 003: + classical augmentation).
STUDY_VARIANTS: dict[str, tuple[str, ...]] = {
    "ventricle": ("real", "synthetic", "augmented", "real_dr"),
    "tumour": ("real", "real_classical", "synthetic", "augmented", "augmented_classical"),
}


def variant_dataset_folders(nnunet_raw: Path, base_id: int, name: str, variants: tuple[str, ...]) -> dict[str, Path]:
    """``{variant: Dataset<id>_<name><Variant>}``; ids follow :data:`VARIANT_SOURCES`' order, so they never move."""
    order = list(VARIANT_SOURCES)
    camel = {v: "".join(part.capitalize() for part in v.split("_")) for v in variants}
    return {v: dataset_folder(nnunet_raw, base_id + order.index(v), f"{name}{camel[v]}") for v in variants}


def merged_pair_manifest(folders: list[Path], output: Path) -> Path:
    """One ``manifest.csv`` (absolute paths) of the accepted pairs of several pair folders, in order."""
    rows = [
        {"image": str(pair.image.resolve()), "label": str(pair.label.resolve()), "source": str(folder)}
        for folder in folders
        for pair in read_pair_sources(folder, "synthetic")
    ]
    return write_csv(output / "manifest.csv", rows, ["image", "label", "source"])


def assemble_study_sets(
    datasets: dict[str, Path],
    real: Path,
    test: Path,
    pair_folders: dict[str, Path],
    merged_root: Path,
    **kwargs: Any,
) -> dict[str, Path]:
    """Every variant's nnU-Net set (``datasets``: variant -> folder); extra pairs from ``pair_folders``.

    A variant with several pair folders gets a merged manifest under ``merged_root/<variant>``.
    ``kwargs`` go to :func:`shared.segmentation.nnunet_dataset.assemble_dataset` (labels, real_sections ...).
    """
    written = {}
    for variant, folder in datasets.items():
        kind, sources = VARIANT_SOURCES[variant]
        extra = None
        if sources:
            folders = [pair_folders[s] for s in sources]
            extra = folders[0] if len(folders) == 1 else merged_pair_manifest(folders, merged_root / variant).parent
        n_extra = len(read_pair_sources(extra, "synthetic")) if extra is not None else None
        written[variant] = assemble_dataset(
            kind, dataset_id_of(folder), folder.name.split("_", 1)[1], real, extra, test,
            n_synthetic=n_extra, nnunet_raw=folder.parent, overwrite=True, **kwargs,
        )  # fmt: skip
    return written


@dataclass(frozen=True)
class StudySettings:
    """Sizes of the segmentation studies (defaults: the CPU demo, ~30 minutes on 2 cores).

    Attributes:
        n_generated: synthetic pairs per study (accepted by QC); the synthetic and augmented sets take all of them.
        n_holdout: hold-out cases per study (never seen by any generator or segmenter).
        holdout_enlargement: ventricle enlargement range of the ventricle hold-out (demo brains: 1-5).
        generated_c: ``c`` range of the generated ventricle pairs (``c > 1``: larger than any training case).
        guidance_scale: classifier-free guidance of the mask model.
        sampling_steps: DDIM steps of every generator (mask, SPADE and slice-based LDM).
        train_generators: train the three generators on the run's own data with the recipes of
            their starter manifests, instead of using the shipped starter weights.
        qc_rounds: generation rounds at most; each regenerates the pairs QC rejected.
        max_c_error: QC tolerance of ventricle pairs on ``|achieved c - requested c|``.
        icv_tolerance: QC range of a generated brain's ICV, as factors of the real brains' median.
        max_volume_error: QC tolerance of tumour pairs on the normalised volume.
        max_centre_error: QC tolerance of tumour pairs on the normalised centre.
        nnunet_epochs: nnU-Net epochs per model.
        nnunet_iterations: nnU-Net training iterations per epoch.
        nnunet_optimizer: ``adamw`` (learns in hundreds of iterations) or ``sgd`` (nnU-Net's default).
        nnunet_lr: nnU-Net's initial learning rate.
        nnunet_width: factor on nnU-Net's planned features per stage.
        tumour_shape: working grid of the slice-based LDM (``X, Y, Z``).
        volume_threshold_ml: split of the ventricle evaluation by ground-truth volume.
        nnunet_seeds: nnU-Net models per variant, seeds ``seed``, ``seed + 1``, ...
        ventricle_variants: training sets of the ventricle study (:data:`VARIANT_SOURCES`).
        tumour_variants: training sets of the tumour study (:data:`VARIANT_SOURCES`).
        domain_randomisation_copies: randomised images per real brain (variant ``real_dr``).
        classical_copies: classically augmented copies per real tumour case (``*_classical``).
        device: ``cpu`` or ``cuda`` for the bundles and nnU-Net.
    """

    n_generated: int = 16
    n_holdout: int = 8
    holdout_enlargement: tuple[float, float] = (3.0, 6.0)
    generated_c: tuple[float, float] = (0.0, 1.0)
    guidance_scale: float = 2.0
    sampling_steps: int = 10
    train_generators: bool = False
    qc_rounds: int = 3
    max_c_error: float = 0.35
    icv_tolerance: tuple[float, float] = (0.7, 1.4)
    max_volume_error: float = 0.5
    max_centre_error: float = 0.5
    nnunet_epochs: int = 16
    nnunet_iterations: int = 25
    nnunet_optimizer: str = "adamw"
    nnunet_lr: float = 3e-3
    nnunet_width: float = 0.25
    tumour_shape: tuple[int, int, int] = (64, 64, 32)
    volume_threshold_ml: float = 50.0
    nnunet_seeds: int = 1
    ventricle_variants: tuple[str, ...] = ("real", "synthetic", "augmented")
    tumour_variants: tuple[str, ...] = ("real", "augmented")
    domain_randomisation_copies: int = 2
    classical_copies: int = 5
    device: str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.nnunet_seeds, bool) or not isinstance(self.nnunet_seeds, int) or self.nnunet_seeds < 1:
            raise InputError(f"--nnunet_seeds: an integer >= 1, got {self.nnunet_seeds!r}")
        for study, variants in (("ventricle", self.ventricle_variants), ("tumour", self.tumour_variants)):
            allowed = STUDY_VARIANTS[study]
            unknown = [v for v in variants if v not in allowed]
            if unknown or "real" not in variants:
                raise InputError(f"{study} variants {list(variants)}: need 'real' and some of {', '.join(allowed)}")
        for name in ("domain_randomisation_copies", "classical_copies"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name}: an integer >= 1, got {getattr(self, name)!r}")

    def params(self) -> dict[str, Any]:
        """JSON-friendly settings (stage parameters)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def starter_recipe(bundle: Path) -> dict[str, Any]:
    """The starter manifest of a bundle (its preset and overrides are the generator's recipe)."""
    return read_starter_manifest(bundle / STARTER_FOLDER)


def recipe_overrides(bundle: Path) -> dict[str, Any]:
    """The starter recipe's config values; inference needs them too (network sizes among them)."""
    return dict(starter_recipe(bundle).get("overrides", {}))


def preset_file(bundle: Path) -> str:
    """``configs/presets/<preset>.yaml`` of the bundle's starter recipe."""
    return f"configs/presets/{starter_recipe(bundle)['preset']}.yaml"


def train_bundle(bundle: Path, models: Path, datalist: Path, device: str, what: str) -> None:
    """Autoencoder then diffusion of one bundle with its starter recipe, models in ``models`` (resumable).

    The recipe's ``continuations`` follow, in order: each resumes the diffusion training from its
    last checkpoint with its own values (more epochs, another loss weight) over the overrides.
    """
    recipe = starter_recipe(bundle)
    overrides = {
        **recipe.get("overrides", {}),
        "datalist": str(datalist), "ckpt_dir": str(models), "tb_dir": str(models / "logs"), "device": device,
    }  # fmt: skip
    stage_1 = ["configs/train_autoencoder.yaml"]
    preset = preset_file(bundle)
    run_bundle(bundle, [*stage_1, preset], overrides, f"{what} autoencoder")
    for step, values in enumerate([{}, *recipe.get("continuations", [])]):
        name = f"{what} diffusion" + (f" (continuation {step})" if step else "")
        run_bundle(bundle, [*stage_1, "configs/train_diffusion.yaml", preset], {**overrides, **values}, name)


def provide_generator(bundle: Path, models: Path, datalist: Path, settings: StudySettings, what: str) -> None:
    """Train the bundle (``train_generators``) or install its checksum-verified starter weights."""
    if settings.train_generators:
        train_bundle(bundle, models, datalist, settings.device, what)
    else:
        install_starter_weights(bundle / STARTER_FOLDER, models)


def check_starter_grid(bundle: Path, shape: tuple[int, ...] | list[int]) -> None:
    """Starter weights work on their own grid only: refuse another one before anything is written."""
    folder = bundle / STARTER_FOLDER
    if not (folder / "grid.json").is_file():
        return
    starter_shape, _ = read_grid_reference(folder / "grid.json")
    if tuple(int(n) for n in shape) != tuple(starter_shape):
        raise InputError(
            f"--shape {','.join(str(n) for n in shape)}: {bundle.name}'s starter weights work on "
            f"{','.join(str(n) for n in starter_shape)}; use that grid or --train_generators"
        )


def usable_variants(variants: tuple[str, ...], generated: Path) -> tuple[str, ...]:
    """``variants``, less those needing LDM pairs when QC accepted none (logged: the report says so)."""
    if accepted_rows(generated / "manifest.csv"):
        return variants
    logger.warning("%s: QC accepted no generated pair; the variants that need them are not trained", generated)
    return tuple(v for v in variants if "generated" not in VARIANT_SOURCES[v][1])


def results_folder(nnunet_root: Path, replicate: int) -> Path:
    """nnU-Net's results folder of the ``replicate``-th seed (the first: nnU-Net's own ``nnUNet_results``)."""
    return nnunet_root / ("nnUNet_results" if replicate == 0 else f"nnUNet_results_seed{replicate}")


def train_nnunet(dataset_id: int, nnunet_root: Path, settings: StudySettings, seed: int, replicate: int = 0) -> None:
    """``scripts/train_segmentation.py`` for one dataset in its own process (seeded: repeatable on CPU).

    Every replicate shares raw and preprocessed data; its model goes to :func:`results_folder`.
    """
    env = {
        "nnUNet_raw": str(nnunet_root / "nnUNet_raw"),
        "nnUNet_preprocessed": str(nnunet_root / "nnUNet_preprocessed"),
        "nnUNet_results": str(results_folder(nnunet_root, replicate)),
    }
    command = [
        sys.executable, str(ROOT / "scripts" / "train_segmentation.py"), "--dataset_id", str(dataset_id),
        "--epochs", str(settings.nnunet_epochs), "--iterations_per_epoch", str(settings.nnunet_iterations),
        "--val_iterations_per_epoch", "2", "--width_factor", str(settings.nnunet_width),
        "--optimizer", settings.nnunet_optimizer, "--initial_lr", str(settings.nnunet_lr), "--seed", str(seed),
        "--device", settings.device, "--augmentation_processes", "0",
    ]  # fmt: skip
    run_command(command, ROOT, f"nnU-Net dataset {dataset_id} (seed {seed})", env=env)


def prediction_folder(nnunet_root: Path, dataset: Path, replicate: int = 0) -> Path:
    """Where ``train_segmentation`` writes a dataset's hold-out predictions."""
    model = results_folder(nnunet_root, replicate) / dataset.name / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    return model / "predictions_Ts"


def evaluate_study(
    datasets: dict[str, Path], nnunet_root: Path, output_dir: Path, volume_threshold_ml: float, replicates: int = 1
) -> list[dict[str, Any]]:
    """Hold-out evaluation of each variant's models (the hold-out is the same in every dataset).

    Each seed's models are evaluated on their own (the first seed in ``output_dir``, the others
    in ``output_dir/seed_<k>``); with several seeds ``per_case.csv`` (with a ``seed`` column),
    ``summary.csv`` / ``summary.md`` (mean +- SD over seeds and cases) and ``errors.png`` are
    then written for all of them together. ``comparison.csv``: the variants against real on the
    per-case means over seeds (bootstrap CIs, paired differences, Wilcoxon p);
    ``bland_altman.png``: predicted against true volume.
    """
    from shared.io import atomic_path
    from shared.segmentation.metrics import (
        CASE_COLUMNS,
        evaluate_models,
        label_volumes_ml,
        summarise,
        summary_markdown,
    )  # fmt: skip
    from shared.viz import save_bland_altman_plot, save_error_plot
    from shared.workflow.study_statistics import compare_variants, mean_over_seeds

    truth = next(iter(datasets.values())) / "labelsTs"
    training_volumes = {variant: label_volumes_ml(folder / "labelsTr") for variant, folder in datasets.items()}
    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for replicate in range(replicates):
        folder = output_dir if replicate == 0 else output_dir / f"seed_{replicate}"
        summary = evaluate_models(
            {variant: prediction_folder(nnunet_root, dataset, replicate) for variant, dataset in datasets.items()},
            truth, folder, volume_threshold_ml, training_volumes=training_volumes,
        )  # fmt: skip
        rows += [{**row, "seed": replicate} for row in read_csv(folder / "per_case.csv")]
    models = list(datasets)
    if replicates > 1:
        summary = summarise(rows, volume_threshold_ml)
        write_csv(output_dir / "per_case.csv", rows, ("model", "seed", *CASE_COLUMNS))
        write_csv(output_dir / "summary.csv", summary, list(summary[0]))
        with atomic_path(output_dir / "summary.md") as tmp:
            tmp.write_text(summary_markdown(summary, f"{truth} ({replicates} seeds)", volume_threshold_ml, True))
        save_error_plot(output_dir / "errors.png", rows, models, volume_threshold_ml)
    save_bland_altman_plot(output_dir / "bland_altman.png", rows, models)
    comparison = compare_variants(mean_over_seeds(rows))
    write_csv(output_dir / "comparison.csv", comparison, list(dict.fromkeys(k for row in comparison for k in row)))
    return summary


def train_and_evaluate(
    runner: Any,
    study: str,
    datasets: dict[str, Path],
    nnunet_root: Path,
    out: Path,
    settings: StudySettings,
    params: dict[str, Any],
) -> None:
    """Stages ``nnunet_<study>_<variant>[_seed<k>]`` (one model per dataset and seed) and ``evaluate_<study>``.

    Seed ``k`` (0, 1, ...) of a variant trains with ``seed + k``; all of a seed's variants come
    first, so an interrupted study has whole replicates to show.
    """
    seed = int(params["seed"])
    for replicate in range(settings.nnunet_seeds):
        suffix = f"_seed{replicate}" if replicate else ""
        for variant, folder in datasets.items():
            dataset_id = dataset_id_of(folder)
            runner.run(
                f"nnunet_{study}_{variant}{suffix}", params,
                lambda d=dataset_id, k=replicate: train_nnunet(d, nnunet_root, settings, seed + k, k),
            )  # fmt: skip
    runner.run(
        f"evaluate_{study}",
        params,
        lambda: evaluate_study(
            datasets, nnunet_root, out / "evaluation" / study, settings.volume_threshold_ml, settings.nnunet_seeds
        ),
    )


def run_ventricle_study(runner: Any, out: Path, brains: Path, data: dict[str, Any], settings: StudySettings) -> None:
    """Stages of the ventricle study (see the module docstring); ``brains`` is the demo brain folder."""
    from shared.demo.dataset import write_brain_dataset

    params = {**data, **settings.params()}
    models = out / "models"
    holdout = out / "data" / "holdout_brains"
    generated = out / "generated" / "ventricles"
    nnunet_root = out / "nnunet"
    variants = settings.ventricle_variants
    datasets = variant_dataset_folders(nnunet_root / "nnUNet_raw", 501, "DemoVentricles", variants)
    runner.run(
        "holdout_brains",
        params,
        lambda: write_brain_dataset(
            holdout, settings.n_holdout, data["shape"], data["spacing"], data["seed"] + 1000,
            settings.holdout_enlargement, validation_fraction=0.0,
        ),
    )  # fmt: skip
    datalist = brains / "datalist.json"
    mask_models, spade_models = models / "ventricle_mask_ldm", models / "spade_mri_ldm"
    generators = "trained" if settings.train_generators else "starter"
    runner.run(
        f"{generators}_mask_ldm", params,
        lambda: provide_generator(MASK_BUNDLE, mask_models, datalist, settings, "mask LDM"),
    )  # fmt: skip
    runner.run(
        f"{generators}_spade_ldm", params,
        lambda: provide_generator(SPADE_BUNDLE, spade_models, datalist, settings, "SPADE LDM"),
    )  # fmt: skip

    device = settings.device

    def generate_round(folder: Path, count: int, seed: int, requests: Any) -> Path:
        conditions = [float(c) for c in requests] if requests else {"uniform": list(settings.generated_c)}
        return generate_pairs(
            folder, count, conditions, settings.guidance_scale,
            mask_steps=settings.sampling_steps, image_steps=settings.sampling_steps, seed=seed,
            preset=starter_recipe(MASK_BUNDLE)["preset"],
            mask_overrides={**recipe_overrides(MASK_BUNDLE), "ckpt_dir": str(mask_models), "device": device},
            spade_overrides={**recipe_overrides(SPADE_BUNDLE), "ckpt_dir": str(spade_models), "device": device},
        )  # fmt: skip

    def generate() -> None:
        from shared.segmentation.metrics import label_volumes_ml

        icv = float(np.median(label_volumes_ml(brains / "labels")))
        qc = VentricleQC(
            icv_range_ml=(settings.icv_tolerance[0] * icv, settings.icv_tolerance[1] * icv),
            max_c_error=settings.max_c_error,
        )
        generate_with_qc(generated, generate_round, "ventricles", qc, settings.n_generated, data["seed"],
                         settings.qc_rounds)  # fmt: skip

    runner.run("generate_ventricle_pairs", params, generate)
    pair_folders = {"generated": generated, "domain_randomised": out / "generated" / "domain_randomised"}
    if "real_dr" in variants:
        from shared.segmentation.domain_randomisation import write_randomised_pairs

        runner.run(
            "domain_randomised_brains", params,
            lambda: write_randomised_pairs(datalist, pair_folders["domain_randomised"],
                                           settings.domain_randomisation_copies, data["seed"]),
        )  # fmt: skip
    usable = usable_variants(variants, generated)
    datasets = {v: folder for v, folder in datasets.items() if v in usable}
    runner.run(
        "ventricle_sets",
        params,
        lambda: assemble_study_sets(datasets, datalist, holdout, pair_folders, out / "generated" / "merged",
                                    labels="ventricles"),
    )  # fmt: skip
    train_and_evaluate(runner, "ventricles", datasets, nnunet_root, out, settings, params)


def run_tumour_study(runner: Any, out: Path, tumours: Path, data: dict[str, Any], settings: StudySettings) -> None:
    """Stages of the tumour study (see the module docstring); ``tumours`` is the demo tumour folder."""
    from shared.demo.dataset import write_tumour_dataset
    from shared.tumour_preprocessing import prepare_tumour_dataset

    params = {**data, **settings.params()}
    prepared = out / "data" / "tumours_prepared"
    holdout_raw, holdout = out / "data" / "holdout_tumours_raw", out / "data" / "holdout_tumours"
    models = out / "models" / "slice_based_ldm_brats"
    generated = out / "generated" / "tumours"
    nnunet_root = out / "nnunet"
    variants = settings.tumour_variants
    datasets = variant_dataset_folders(nnunet_root / "nnUNet_raw", 511, "DemoTumours", variants)
    shape = settings.tumour_shape
    runner.run("prepare_tumours", params, lambda: prepare_tumour_dataset(tumours / "datalist.json", prepared, shape))

    def make_holdout() -> None:
        write_tumour_dataset(holdout_raw, settings.n_holdout, data["tumour_shape"], None, data["seed"] + 1000,
                             validation_fraction=0.0)  # fmt: skip
        prepare_tumour_dataset(holdout_raw / "datalist.json", holdout, shape, validation_fraction=0.0)

    runner.run("holdout_tumours", params, make_holdout)
    generators = "trained" if settings.train_generators else "starter"
    runner.run(
        f"{generators}_slice_ldm", params,
        lambda: provide_generator(SBLDM_BUNDLE, models, prepared / "datalist.json", settings, "slice-based LDM"),
    )  # fmt: skip

    def generate_round(folder: Path, count: int, seed: int, requests: Any) -> Path:
        run_bundle(
            SBLDM_BUNDLE, ["configs/inference.yaml", preset_file(SBLDM_BUNDLE)],
            {**recipe_overrides(SBLDM_BUNDLE), "ckpt_dir": str(models), "datalist": str(prepared / "datalist.json"),
             "output_dir": str(folder), "num_samples": count, "num_inference_steps": settings.sampling_steps,
             "seed": seed, "device": settings.device},
            "tumour pairs (slice_based_ldm_brats)",
        )  # fmt: skip
        return folder / "manifest.csv"

    qc = TumourQC(max_volume_error=settings.max_volume_error, max_centre_error=settings.max_centre_error)
    runner.run(
        "generate_tumour_pairs", params,
        lambda: generate_with_qc(generated, generate_round, "tumours", qc, settings.n_generated, data["seed"],
                                 settings.qc_rounds),
    )  # fmt: skip
    pair_folders = {"generated": generated, "classical": out / "generated" / "classical"}
    real_sections = ["training", "validation"]
    if any("classical" in VARIANT_SOURCES[v][1] for v in variants):
        from shared.segmentation.classical_augmentation import write_augmented_pairs

        runner.run(
            "classical_augmentation", params,
            lambda: write_augmented_pairs(prepared / "datalist.json", pair_folders["classical"],
                                          settings.classical_copies, data["seed"], real_sections),
        )  # fmt: skip
    usable = usable_variants(variants, generated)
    datasets = {v: folder for v, folder in datasets.items() if v in usable}
    runner.run(
        "tumour_sets",
        params,
        lambda: assemble_study_sets(datasets, prepared / "datalist.json", holdout / "datalist.json", pair_folders,
                                    out / "generated" / "merged", labels="whole_tumour", real_sections=real_sections),
    )  # fmt: skip
    train_and_evaluate(runner, "tumours", datasets, nnunet_root, out, settings, params)


def generator_figures(out: Path, study: str) -> dict[str, Any]:
    """The generator's own quality, from ``generated/<study>/manifest.csv`` and ``qc.json``.

    Ventricles: Spearman rho of requested ``c`` against achieved ventricle volume and the
    median ICV ratio to the real training brains, over the first round's candidates (what the
    generator gives before QC) and over the accepted pairs. Tumours: the share of non-empty
    masks and rho of requested against achieved volume, the same two ways.
    """
    from scipy.stats import spearmanr

    from shared.io import read_json

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
            from shared.segmentation.metrics import label_volumes_ml

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
    """Per variant: mean Dice, IoU and volume MAE on the hold-out (all cases)."""
    summary = read_csv(out / "evaluation" / study / "summary.csv")
    return {
        row["model"]: {m: float(row[f"{m}_mean"]) for m in ("dice", "iou", "abs_volume_error_ml")}
        for row in summary
        if row["subset"] == "all"
    }


def answer_lines(out: Path, study: str) -> list[str]:
    """The report's opening table of one study: best variant per metric, with its CI."""
    from shared.workflow.study_statistics import best_by_metric

    comparison = read_csv(out / "evaluation" / study / "comparison.csv")
    rows = [{**r, "mean": float(r["mean"])} for r in comparison]
    lines = ["| study | metric | best variant | mean (95% CI) | vs real: difference (95% CI), Wilcoxon p |",
             "|---|---|---|---|---|"]  # fmt: skip
    for row in best_by_metric(rows):
        if row["model"] == "real":
            versus = "-"
        else:
            versus = (f"{float(row['vs_real_mean_difference']):+.3f} ({float(row['vs_real_ci_low']):+.3f}, "
                      f"{float(row['vs_real_ci_high']):+.3f}), p = {float(row['vs_real_wilcoxon_p']):.3g}")  # fmt: skip
        lines.append(
            f"| {study} | {row['metric']} | {row['model']} | {row['mean']:.3f} "
            f"({float(row['ci_low']):.3f}, {float(row['ci_high']):.3f}) | {versus} |"
        )
    return lines


def generator_lines(study: str, figures: dict[str, Any]) -> list[str]:
    """One Markdown table row per generator figure group (before QC, accepted)."""
    qc = figures["qc"]
    reasons = ", ".join(f"{k}: {v}" for k, v in qc["reasons"].items()) or "none"
    lines = []
    for name in ("raw", "accepted"):
        f = figures[name]
        if study == "ventricles":
            quality = f"rho(c, ventricle volume) {f['rho_c_volume']:.2f}; ICV / real median {f['icv_ratio_median']:.2f}"
        else:
            quality = f"rho(requested, achieved volume) {f['rho_volume']:.2f}; non-empty {f['non_empty_fraction']:.0%}"
        label = "first round, before QC" if name == "raw" else "accepted by QC"
        lines.append(f"| {study} | {label} | {f['n']} | {quality} |")
    lines.append(f"| {study} | QC | {qc['candidates']} candidates in {qc['rounds']} rounds | "
                 f"{qc['rejected']} rejected ({reasons}) |")  # fmt: skip
    return lines


def study_report_lines(out: Path, study: str, title: str) -> list[str]:
    """Markdown lines of one finished study for ``report.md`` (summary table, pictures)."""
    evaluation = out / "evaluation" / study
    summary = read_csv(evaluation / "summary.csv")
    lines = [f"## {title}", ""]
    if (out / "generated" / study / "mosaic.png").is_file():
        lines += [f"Generated pairs accepted by QC (`generated/{study}/`, every candidate and its QC verdict in",
                  "`manifest.csv`):", "", f"![generated](generated/{study}/mosaic.png)", ""]  # fmt: skip
    lines += ["| model | subset | n | Dice | IoU | MAE (mL) |", "|---|---|---|---|---|---|"]
    for row in summary:
        if not int(row["n"]):
            continue
        lines.append(
            f"| {row['model']} | {row['subset']} | {row['n']} | {_mean_sd(row, 'dice')} | {_mean_sd(row, 'iou')} "
            f"| {_mean_sd(row, 'abs_volume_error_ml', 2)} |"
        )
    lines += [
        "",
        f"Per case: `evaluation/{study}/per_case.csv`; paired differences against real, bootstrap CIs and",
        f"Wilcoxon p-values: `evaluation/{study}/comparison.csv`.",
        "",
        f"![errors](evaluation/{study}/errors.png)",
        "",
        f"![Bland-Altman](evaluation/{study}/bland_altman.png)",
        "",
        f"![training volumes](evaluation/{study}/training_volumes.png)",
        "",
    ]
    return lines


def _mean_sd(row: dict[str, str], metric: str, digits: int = 3) -> str:
    mean, sd = row.get(f"{metric}_mean", ""), row.get(f"{metric}_sd", "")
    if mean == "":
        return "-"
    return f"{float(mean):.{digits}f} ± {float(sd or 0):.{digits}f}"
