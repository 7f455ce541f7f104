"""The main command's two studies as stages: generators, pairs, nnU-Net sets, models, evaluation.

- **Ventricles** (paper 000): the mask LDM and SPADE LDM (starter weights, or trained on the
  real subjects with ``generators_from real``) make labelled pairs towards enlarged ventricles;
  nnU-Net sets ``real``, ``pool`` (the data the generators learnt from), ``synthetic``,
  ``augmented``, ``pool_augmented`` and the comparators; one small nnU-Net per set and seed;
  evaluation on a hold-out of subjects no model saw.
- **Tumours** (paper 003): the slice-based LDM makes FLAIR + mask pairs with random consistent
  tumour conditions; the same variants with classical augmentation as comparator.

Each step is a stage of :class:`shared.workflow.pipeline.StageRunner`, keyed on the parameters
it reads and on the stages it reads from (``inputs``). Every trained model writes its data
ledger (:mod:`shared.workflow.ledger`); the design stage checks them against the study's plan
(:mod:`shared.workflow.design`) and the hold-out, and fixes the hold-out bins, before any
segmenter trains. Bundles run through ``python -m monai.bundle run`` and nnU-Net through
``scripts/train_segmentation.py``, each in its own process, with their progress on this terminal.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from shared.export.starter_weights import STARTER_FOLDER, install_starter_weights, read_starter_manifest
from shared.io import (
    InputError,
    items_relative_to,
    read_csv,
    read_datalist,
    read_grid_reference,
    read_json,
    sha256_of,
    write_csv,
    write_datalist,
    write_json,
)
from shared.segmentation.nnunet_dataset import (
    assemble_dataset,
    dataset_folder,
    dataset_id_of,
    read_pair_sources,
    variant_name,
)
from shared.segmentation.nnunet_training import TrainingSchedule
from shared.workflow.chaining import (
    MASK_BUNDLE,
    ROOT,
    SPADE_BUNDLE,
    generate_pairs,
    preset_overlay,
    run_bundle,
    run_command,
)
from shared.workflow.design import (
    BINS,
    GENERATOR_STAGES,
    STUDY_GENERATORS,
    HoldoutBins,
    StudyPlan,
    generator_source,
    generators_training_datalist_sections,
    holdout_bins,
    model_name,
    needed_comparators,
    pair_generators,
    plan_study,
    weights_folder,
)
from shared.workflow.generation_rounds import accepted_rows, generate_with_qc
from shared.workflow.ledger import Ledger, check_unseen, datalist_ledger, read_ledger, value_range, write_ledger
from shared.workflow.pair_qc import with_brain_reference, with_reference_icv
from shared.workflow.settings import VARIANTS, StudySettings
from shared.workflow.starter_ledgers import read_starter_ledgers

logger = logging.getLogger(__name__)

SBLDM_BUNDLE = ROOT / "bundles" / "slice_based_ldm_brats"
BUNDLE_FOLDERS = {
    "ventricle_mask_ldm": MASK_BUNDLE,
    "spade_mri_ldm": SPADE_BUNDLE,
    "slice_based_ldm_brats": SBLDM_BUNDLE,
}
#: Stage name of each generator (``starter_<short>`` or ``trained_<short>``).
SHORT_NAMES = {"ventricle_mask_ldm": "mask_ldm", "spade_mri_ldm": "spade_ldm", "slice_based_ldm_brats": "slice_ldm"}
#: Per study: the stage name prefix, the nnU-Net dataset id of ``real``, the dataset name, the label mapping.
STUDY_SETS = {
    "ventricles": ("ventricle", 501, "DemoVentricles", "ventricles"),
    "tumours": ("tumour", 511, "DemoTumours", "whole_tumour"),
}


# ----------------------------------------------------------------------------- paths


def data_dir(out: Path) -> Path:
    return out / "data"


def real_datalist(out: Path, study: str) -> Path:
    return data_dir(out) / ("brains" if study == "ventricles" else "tumours_prepared") / "datalist.json"


def holdout_dir(out: Path, study: str) -> Path:
    return data_dir(out) / ("holdout_brains" if study == "ventricles" else "holdout_tumours")


def pool_dir(out: Path, study: str) -> Path:
    return data_dir(out) / f"pool_{study}"


def models_dir(out: Path, bundle: str) -> Path:
    return out / "models" / bundle


def generated_dir(out: Path, study: str) -> Path:
    return out / "generated" / study


def evaluation_dir(out: Path, study: str) -> Path:
    return out / "evaluation" / study


def variant_dataset_folders(nnunet_raw: Path, base_id: int, name: str, variants: tuple[str, ...]) -> dict[str, Path]:
    """``{variant: Dataset<id>_<name><Variant>}``; ids follow :data:`VARIANTS`' order, so they never move."""
    order = list(VARIANTS)
    return {v: dataset_folder(nnunet_raw, base_id + order.index(v), variant_name(name, v)) for v in variants}


def results_folder(nnunet_root: Path, replicate: int) -> Path:
    """nnU-Net's results folder of the ``replicate``-th seed (the first: nnU-Net's own ``nnUNet_results``)."""
    return nnunet_root / ("nnUNet_results" if replicate == 0 else f"nnUNet_results_seed{replicate}")


def model_folder(results: Path, dataset: Path) -> Path:
    """nnU-Net's model folder of ``dataset`` in a results folder (:func:`results_folder`)."""
    return results / dataset.name / "nnUNetTrainer__nnUNetPlans__3d_fullres"


def prediction_folder(results: Path, dataset: Path) -> Path:
    """Where ``train_segmentation`` writes a dataset's hold-out predictions."""
    return model_folder(results, dataset) / "predictions_Ts"


def seed_suffix(replicate: int) -> str:
    return f"_seed{replicate}" if replicate else ""


# ----------------------------------------------------------------------------- generators


def starter_recipe(bundle: Path) -> dict[str, Any]:
    """The starter manifest of a bundle (its preset, overrides and continuations are the generator's recipe)."""
    return read_starter_manifest(bundle / STARTER_FOLDER)


def generator_recipe(bundle: str, settings: StudySettings) -> dict[str, Any]:
    """``{"preset", "overrides", "continuations"}`` a generator trains (or was trained) with.

    Weights a study file names carry their own recipe (their ``manifest.json``); otherwise the
    bundle's starter recipe. A recipe the study file gives for a generator trained in the run
    (``settings.generator_recipes``) replaces it. With ``generators_from real`` the scale's
    ``scarce_recipes`` values go over the starter recipe (a ``continuations`` entry replaces the
    starter's).
    """
    if bundle in settings.generator_recipes:
        given = settings.generator_recipes[bundle]
        return {"preset": given["preset"], "overrides": dict(given.get("overrides", {})), "continuations": []}
    named = settings.generator_weights.get(bundle)
    manifest = read_starter_manifest(Path(named)) if named else starter_recipe(BUNDLE_FOLDERS[bundle])
    recipe = {
        "preset": manifest["preset"], "overrides": dict(manifest.get("overrides", {})),
        "continuations": [dict(step) for step in manifest.get("continuations", [])],
    }  # fmt: skip
    if settings.generators_from == "real":
        scarce = dict(settings.scarce_recipes.get(bundle, {}))
        if "continuations" in scarce:
            recipe["continuations"] = [dict(step) for step in scarce.pop("continuations")]
        recipe["overrides"].update(scarce)
    return recipe


def inference_overrides(bundle: str, settings: StudySettings) -> dict[str, Any]:
    """The recipe's config values that inference needs too (network sizes among them)."""
    return dict(generator_recipe(bundle, settings)["overrides"])


def train_bundle(
    bundle: Path, models: Path, datalist: Path, device: str, what: str, recipe: dict[str, Any], seed: int = 0,
    overlays: Sequence[str] = (),
) -> None:  # fmt: skip
    """Autoencoder then diffusion of one bundle with ``recipe`` and ``seed``, models in ``models`` (resumable).

    The recipe's ``continuations`` follow, in order: each resumes the diffusion training from its
    last checkpoint with its own values (more epochs, another loss weight) over the overrides.
    ``overlays``: config files of the bundle between its stage configs and the preset (the 3D-LDM
    baseline's ``configs/baseline_3d_ldm.yaml``).
    """
    overrides = {
        **recipe["overrides"],
        "datalist": str(datalist), "ckpt_dir": str(models), "tb_dir": str(models / "logs"), "device": device,
        "seed": seed,
    }  # fmt: skip
    stage_1 = ["configs/train_autoencoder.yaml"]
    preset = [*overlays, *preset_overlay(recipe["preset"])]
    run_bundle(bundle, [*stage_1, *preset], overrides, f"{what} autoencoder")
    for step, values in enumerate([{}, *recipe.get("continuations", [])]):
        name = f"{what} diffusion" + (f" (continuation {step})" if step else "")
        run_bundle(bundle, [*stage_1, "configs/train_diffusion.yaml", *preset], {**overrides, **values}, name)


#: What a generator's models folder was trained with (its recipe, seed and data), written before training.
TRAINING_RECORD = "training.json"


def keep_only_checkpoints_of(models: Path, training: dict[str, Any]) -> None:
    """Let ``models`` resume only a training of exactly ``training``; anything else in it is removed first.

    A folder of starter weights, of another protocol, recipe, seed or data would otherwise be
    resumed by the bundles (they resume from the newest checkpoint of a fitting architecture).
    """
    record = models / TRAINING_RECORD
    wanted = json.loads(json.dumps(training, default=str))
    if models.exists():
        try:
            same = record.is_file() and read_json(record) == wanted
        except InputError:
            same = False
        if not same:
            logger.info("%s: holds another training's models; removed before training", models)
            shutil.rmtree(models)
    write_json(record, wanted)


def generator_ledger_path(out: Path, bundle: str, stage: str) -> Path:
    return models_dir(out, bundle) / f"ledger_{stage}.json"


def check_starter_grid(folder: Path, shape: tuple[int, ...] | list[int], name: str = "--shape") -> None:
    """Weights work on their own grid only: refuse another one before anything is written.

    Args:
        folder: a starter-layout folder (the bundle's ``starter/`` or one a study file names).
        shape: the study's grid.
        name: what set the grid, for the message (``--shape``, ``data.ventricles.grid.shape``).
    """
    if not (folder / "grid.json").is_file():
        return
    starter_shape, _ = read_grid_reference(folder / "grid.json")
    if tuple(int(n) for n in shape) != tuple(starter_shape):
        what = (
            f"{folder.parent.name}'s starter weights" if folder.name == STARTER_FOLDER else f"the weights in {folder}"
        )
        raise InputError(
            f"{name} {','.join(str(n) for n in shape)}: {what} work on "
            f"{','.join(str(n) for n in starter_shape)}; use that grid or --generators_from real"
        )


def generators_datalist(out: Path, study: str) -> Path:
    """The real protocol's generator datalist, beside the real datalist (:func:`write_generators_datalist`)."""
    return real_datalist(out, study).parent / "generators_datalist.json"


def write_generators_datalist(real: Path, target: Path) -> Path:
    """The real protocol's generator datalist: every real subject trains, the last few validate.

    Written beside the real datalist (``target``), where the bundles look for files that belong
    to the data (the tumour normaliser).
    """
    items = read_datalist(real)
    subjects = [str(i.get("subject") or i.get("case")) for i in items]
    split = generators_training_datalist_sections(subjects)
    validation = [item for item, s in zip(items, subjects) if s in set(split["validation"])]
    return write_datalist(target, {"training": items, "validation": validation})


def provide_generators(
    runner: Any, out: Path, settings: StudySettings, study: str, real_stage: str, device: str
) -> list[str]:
    """The study's generators: weights (``starter`` / ``weights``), or trained in the run (``pool_set`` / ``real``).

    See :func:`shared.workflow.design.generator_source`. A generator trained on the study file's
    pool set reads it from the pool stage (:func:`add_pool`, which then runs first).

    Each bundle is one stage; each writes one ledger per training stage. Returns the stage names.
    """
    stages = []
    for bundle, name in STUDY_GENERATORS[study]:
        models = models_dir(out, bundle)
        folder = BUNDLE_FOLDERS[bundle]
        source = generator_source(settings, study, bundle)
        if source in ("starter", "weights"):
            stage = f"starter_{SHORT_NAMES[bundle]}"
            weights = weights_folder(settings, bundle)
            params = {"weights": str(weights), "starter_manifest_sha256": sha256_of(weights / "manifest.json")}
            what = "starter weights" if source == "starter" else f"weights of {weights}"

            def action(weights: Path = weights, models: Path = models, bundle: str = bundle, name: str = name,
                       what: str = what) -> None:  # fmt: skip
                shutil.rmtree(models, ignore_errors=True)  # no model trained here earlier stays beside them
                install_starter_weights(weights, models)
                for stage_name, ledger, _ in read_starter_ledgers(weights):
                    write_ledger(
                        generator_ledger_path(out, bundle, stage_name),
                        Ledger(f"{name} {stage_name}", study, ledger.training, ledger.validation,
                               value_range=ledger.value_range, source=f"{what}: {ledger.source}"),
                    )  # fmt: skip

            runner.run(stage, params, action)
        else:
            stage = f"trained_{SHORT_NAMES[bundle]}"
            recipe = generator_recipe(bundle, settings)
            on_pool = source == "pool_set"
            words = "trained in this run on the study's pool set" if on_pool else (
                "trained in this run on the real training subjects")  # fmt: skip

            def action(folder: Path = folder, models: Path = models, bundle: str = bundle, name: str = name,
                       recipe: dict[str, Any] = recipe, on_pool: bool = on_pool,
                       words: str = words) -> None:  # fmt: skip
                if on_pool:  # the pool set as written, with its own validation section
                    datalist = pool_set_datalist(out, study)
                else:  # beside the real datalist: the tumour normaliser the slice LDM reads
                    datalist = write_generators_datalist(real_datalist(out, study), generators_datalist(out, study))
                training = {"recipe": recipe, "seed": settings.seed, "datalist_sha256": sha256_of(datalist)}
                keep_only_checkpoints_of(models, training)
                train_bundle(folder, models, datalist, device, name, recipe, settings.seed)
                for stage_name in GENERATOR_STAGES:
                    write_ledger(generator_ledger_path(out, bundle, stage_name),
                                 datalist_ledger(f"{name} {stage_name}", study, datalist, source=words))  # fmt: skip

            data_stage = pool_stage(study) if on_pool else real_stage
            runner.run(stage, {"recipe": recipe, "seed": settings.seed, "device": device, "on": source}, action,
                       inputs=(data_stage,))  # fmt: skip
        stages.append(stage)
    return stages


def generator_ledgers(out: Path, study: str, settings: StudySettings) -> list[Ledger]:
    """Every generator stage's ledger as written: the study's generators, then its comparators (models/<folder>)."""
    folders = [*(bundle for bundle, _ in STUDY_GENERATORS[study]),
               *(folder for _, _, folder in needed_comparators(settings, study))]  # fmt: skip
    return [read_ledger(generator_ledger_path(out, folder, stage)) for folder in folders for stage in GENERATOR_STAGES]


def write_pool(out: Path, study: str, plan: StudyPlan) -> Path:
    """The data the generators learnt from, drawn again from their recipes; one datalist of its training subjects."""
    folder = pool_dir(out, study)
    wanted = set(plan.pool)
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for k, recipe in enumerate(plan.pool_recipes):
        part = folder / f"part_{k}"
        for item in read_datalist(recipe.write(part), ["training"]):
            key = f"{k}:{item['case']}"
            if item["subject"] in wanted and key not in seen:
                seen.add(key)
                items.append({**item, "case": f"{item['case']}_s{recipe.seed}"})  # unique over the recipes
    items = items_relative_to(items, folder)
    found = {item["subject"] for item in items}
    if found != wanted:
        missing = sorted(wanted - found)
        raise InputError(f"{folder}: the generators' recipes do not give their ledgers' subjects (e.g. {missing[:1]})")
    check_pool_ranges(folder, items, plan.generators, study)
    return write_datalist(folder / "datalist.json", {"training": items})


def check_pool_ranges(folder: Path, items: list[dict[str, Any]], ledgers: tuple[Ledger, ...], study: str) -> None:
    """The drawn pool must be the data the generators saw: each ledger's quantity range, measured again.

    Subject ids follow from a recipe's parameters alone; the range measures the drawn label maps,
    so a demo-data generator that drifted from the one the starters were trained on is caught.

    Raises:
        InputError: a generator stage's range differs from its ledger's by more than 0.01 mL.
    """
    for ledger in ledgers:
        if ledger.value_range is None:
            continue
        labels = [folder / item["label"] for item in items if item["subject"] in set(ledger.training)]
        drawn = value_range(labels, study)
        if drawn is None or max(abs(a - b) for a, b in zip(drawn, ledger.value_range)) > 0.01:
            raise InputError(
                f"{folder}: {ledger.model}'s data drawn again holds {drawn} mL, its ledger {ledger.value_range} mL; "
                "the demo data differ from what the starter weights learnt from"
            )


# ----------------------------------------------------------------------------- nnU-Net sets and ledgers


def merged_pair_manifest(folders: list[Path], output: Path) -> Path:
    """One ``manifest.csv`` (absolute paths) of the accepted pairs of several pair folders, in order.

    Each row keeps its pair's ``case`` and ``subject`` (names and ledgers), not its QC verdict: every
    pair listed was accepted.
    """
    kept = ("case", "subject")
    rows = [
        {
            "image": str(pair.image.resolve()),
            "label": str(pair.label.resolve()),
            "source": str(folder),
            **{key: pair.conditions[key] for key in kept if pair.conditions.get(key)},
        }
        for folder in folders
        for pair in read_pair_sources(folder, "synthetic")
    ]
    columns = list(dict.fromkeys(["image", "label", "source", *(k for row in rows for k in row)]))
    return write_csv(output / "manifest.csv", rows, columns)


def set_ledger(dataset: Path, study: str, model: str, generators: tuple[str, ...]) -> Ledger:
    """The ledger of an nnU-Net set, from its ``provenance.csv``: real subjects, generated pairs, range."""
    rows = [row for row in read_csv(dataset / "provenance.csv") if row["split"] == "train"]
    subjects = [row["subject"] for row in rows if row.get("subject")]
    generated = [row for row in rows if row["origin"] == "synthetic" and not row.get("subject")]
    volumes = [float(row["foreground_ml"]) for row in rows if row["origin"] == "real"]
    return Ledger(
        model, study, tuple(subjects), synthetic_pairs=len(generated), via=generators if generated else (),
        value_range=(round(min(volumes), 3), round(max(volumes), 3)) if volumes else None,
        source=f"{dataset.name} ({len(rows)} cases)",
    )  # fmt: skip


def assemble_variant(variant: str, folder: Path, out: Path, study: str, sources: dict[str, Path]) -> None:
    """One variant's nnU-Net set (real or pool cases + pair folders, the hold-out as test) and its ledger."""
    _, _, _, labels = STUDY_SETS[study]
    base, extras = VARIANTS[variant]
    kind = "real" if not extras else ("synthetic" if base is None else "augmented")
    folders = [sources[name] for name in extras]
    extra = None
    if folders:
        extra = (
            folders[0]
            if len(folders) == 1
            else merged_pair_manifest(folders, out / "generated" / "merged" / study / variant).parent
        )
    n_extra = len(read_pair_sources(extra, "synthetic")) if extra is not None else None
    real = sources[base] if base else None
    assemble_dataset(
        kind, dataset_id_of(folder), folder.name.split("_", 1)[1], real, extra, sources["holdout"],
        n_synthetic=n_extra, nnunet_raw=folder.parent, overwrite=True, labels=labels, num_workers=2,
    )  # fmt: skip
    via = pair_generators(study, extras)
    write_ledger(folder / "ledger.json", set_ledger(folder, study, f"nnU-Net {variant}", via))


def usable_variants(variants: tuple[str, ...], pair_folders: dict[str, Path]) -> tuple[str, ...]:
    """``variants``, less those needing a generator's pairs when QC accepted none of them (logged: the report says so).

    ``pair_folders``: ``{pair source: folder}`` of the generators (``generated``, ``generated_3d_ldm``).
    """
    empty = {source for source, folder in pair_folders.items() if not accepted_rows(folder / "manifest.csv")}
    for source in sorted(empty):
        logger.warning("%s: QC accepted no generated pair; the variants that need them are not trained",
                       pair_folders[source])  # fmt: skip
    return tuple(v for v in variants if not empty & set(VARIANTS[v][1]))


def train_nnunet(
    dataset_id: int, nnunet_root: Path, schedule: TrainingSchedule, width: float, device: str, seed: int,
    results: Path,
) -> None:  # fmt: skip
    """``scripts/train_segmentation.py`` for one dataset in its own process (seeded: repeatable on CPU).

    Every model of a dataset shares its raw and preprocessed data under ``nnunet_root``; the model
    goes to ``results`` (e.g. :func:`results_folder` of its seed).
    """
    env = {
        "nnUNet_raw": str(nnunet_root / "nnUNet_raw"),
        "nnUNet_preprocessed": str(nnunet_root / "nnUNet_preprocessed"),
        "nnUNet_results": str(results),
    }
    command = [
        sys.executable, str(ROOT / "scripts" / "train_segmentation.py"), "--dataset_id", str(dataset_id),
        "--epochs", str(schedule.epochs), "--iterations_per_epoch", str(schedule.iterations_per_epoch),
        "--val_iterations_per_epoch", str(schedule.val_iterations_per_epoch), "--width_factor", str(width),
        "--optimizer", schedule.optimizer, "--initial_lr", str(schedule.initial_lr), "--seed", str(seed),
        "--device", device, "--augmentation_processes", "0",
        *(["--batch_size", str(schedule.batch_size)] if schedule.batch_size is not None else []),
    ]  # fmt: skip
    run_command(command, ROOT, f"nnU-Net dataset {dataset_id} (seed {seed})", env=env)


# ----------------------------------------------------------------------------- design, training, evaluation


def write_design(
    out: Path, study: str, settings: StudySettings, plan: StudyPlan, datasets: dict[str, Path]
) -> HoldoutBins:
    """Check every ledger against the plan and the hold-out, fix the bins; ``evaluation/<study>/design.json``.

    Raises:
        InputError: a hold-out subject is in a ledger.
        RuntimeError: a written ledger's subjects are not the plan's (a bug, never a data problem).
    """
    ledgers = generator_ledgers(out, study, settings)
    planned = {ledger.model: ledger for ledger in plan.ledgers()}
    for ledger in ledgers:
        if set(ledger.training) != set(planned[ledger.model].training):
            raise RuntimeError(f"{ledger.model}: its ledger's subjects differ from the study's plan")
    sets = {variant: read_ledger(folder / "ledger.json") for variant, folder in datasets.items()}
    for variant, ledger in sets.items():
        if set(ledger.training) != set(planned[model_name(variant, 0)].training):
            raise RuntimeError(f"nnU-Net {variant}: its set's subjects differ from the study's plan")
    holdout_items = read_datalist(holdout_dir(out, study) / "datalist.json")
    holdout_subjects = [str(item.get("subject") or item.get("case")) for item in holdout_items]
    check_unseen(holdout_subjects, [*ledgers, *sets.values()], f"{study} hold-out")
    bins = holdout_bins(sets["real"], [*ledgers, *sets.values()], study)
    holdout = datalist_ledger(f"{study} hold-out (never trained on)", study, holdout_dir(out, study) / "datalist.json",
                              source="hold-out subjects")  # fmt: skip
    write_json(
        evaluation_dir(out, study) / "design.json",
        {
            "study": study, "generators_from": settings.generators_from, "bins": bins.to_json(),
            "ledgers": [ledger.to_json() for ledger in [*ledgers, *sets.values()]], "holdout": holdout.to_json(),
            "aliases": study_aliases(settings, study, datasets),
            "not_trained": {
                v: "QC accepted no generated pair" for v in settings.trained_variants(study) if v not in datasets
            },
        },
    )  # fmt: skip
    return bins


def study_aliases(settings: StudySettings, study: str, datasets: dict[str, Path]) -> dict[str, str]:
    """The protocol's aliases among this study's variants (``pool`` = ``real`` ... when both are run)."""
    variants = settings.study_variants(study)
    return {a: t for a, t in settings.aliases().items() if a in variants and t in datasets}


def fixed_settings(settings: StudySettings, study: str) -> dict[str, Any]:
    """The settings a study fixed before it ran (for the report)."""
    schedule = settings.schedule(study)
    fixed: dict[str, Any] = {
        "scale": settings.scale, "generators_from": settings.generators_from,
        "variants": list(settings.study_variants(study)), "nnunet_seeds": settings.nnunet_seeds,
        "nnunet_schedule": f"{schedule.optimizer}, {schedule.epochs} x {schedule.iterations_per_epoch} iterations, "
                           f"lr {schedule.initial_lr:g}, width {settings.nnunet_width:g}, "
                           f"batch {schedule.batch_size or 'planned'}",
        "n_generated": settings.generation.n_generated,
        "samplers": {k: f"{v.sampler} {v.steps}" for k, v in settings.generation.samplers.items()},
        "qc_rounds": settings.generation.qc_rounds,
        "holdout": [f"{part.n_cases} cases" + (f", {part.low:g}-{part.high:g}" if part.low is not None else "")
                    for part in settings.holdout(study)],
    }  # fmt: skip
    if study == "ventricles":
        generation = settings.generation
        fixed.update(generated_c=list(generation.generated_c), guidance_scale=generation.guidance_scale,
                     qc=asdict(settings.ventricle_qc))  # fmt: skip
    else:
        fixed.update(qc=asdict(settings.tumour_qc))
    return fixed


def train_models(
    runner: Any, study: str, datasets: dict[str, Path], nnunet_root: Path, settings: StudySettings,
    set_stages: dict[str, str],
) -> list[str]:  # fmt: skip
    """Stages ``nnunet_<study>_<variant>[_seed<k>]``: one model per set and seed, each writing its ledger.

    Seed ``k`` (0, 1, ...) trains with ``seed + k``; all of a seed's variants come first, so an
    interrupted study has whole replicates to show. A model is keyed on its set and schedule only:
    the design check runs before (and stops the study when it fails), but its bins are not read
    here. Returns the stage names.
    """
    schedule = settings.schedule(study)
    names = []
    for replicate in range(settings.nnunet_seeds):
        for variant, folder in datasets.items():
            dataset_id = dataset_id_of(folder)
            seed = settings.seed + replicate
            name = f"nnunet_{study}_{variant}{seed_suffix(replicate)}"

            def action(
                d: int = dataset_id, k: int = replicate, s: int = seed, f: Path = folder, v: str = variant
            ) -> None:
                results = results_folder(nnunet_root, k)
                train_nnunet(d, nnunet_root, schedule, settings.nnunet_width, settings.device, s, results)
                ledger = read_ledger(f / "ledger.json")
                write_ledger(model_folder(results, f) / "ledger.json",
                             Ledger(model_name(v, k), ledger.study, ledger.training, ledger.validation,
                                    ledger.synthetic_pairs, ledger.via, ledger.value_range, ledger.source))  # fmt: skip

            params = {"schedule": asdict(schedule), "width": settings.nnunet_width, "seed": seed,
                      "device": settings.device}  # fmt: skip
            runner.run(name, params, action, inputs=(set_stages[variant],))
            names.append(name)
    return names


def evaluate_study(
    datasets: dict[str, Path], nnunet_root: Path, output_dir: Path, bins: HoldoutBins, replicates: int,
    aliases: dict[str, str], references: tuple[str, ...],
) -> list[dict[str, Any]]:  # fmt: skip
    """Hold-out evaluation of every variant's models (the hold-out is the same in every set).

    Each seed's models are evaluated on their own (the first seed in ``output_dir``, the others in
    ``output_dir/seed_<k>``). Then, for all seeds together: ``per_case.csv`` (with ``seed`` and
    ``bin``), ``summary.csv`` / ``summary.md`` (mean +- SD over seeds and cases, all cases and
    per bin), ``comparison.csv`` (:func:`shared.evaluation.study_statistics.compare_variants`:
    hierarchical intervals, differences against ``references`` with Holm-adjusted p, per bin),
    ``errors.png``, ``bland_altman.png`` and ``training_volumes.png``. ``aliases``: variants whose
    models are another's (the real protocol's ``pool`` is ``real``).
    """
    from shared.evaluation.segmentation_metrics import (
        CASE_COLUMNS,
        evaluate_models,
        label_volumes_ml,
        summarise,
        summary_markdown,
    )
    from shared.evaluation.study_statistics import compare_variants
    from shared.io import atomic_path
    from shared.viz import save_bland_altman_plot, save_error_plot

    truth = next(iter(datasets.values())) / "labelsTs"
    training_volumes = {variant: label_volumes_ml(folder / "labelsTr") for variant, folder in datasets.items()}
    rows: list[dict[str, Any]] = []
    for replicate in range(replicates):
        folder = output_dir if replicate == 0 else output_dir / f"seed_{replicate}"
        evaluate_models(
            {v: prediction_folder(results_folder(nnunet_root, replicate), d) for v, d in datasets.items()},
            truth, folder, bins.edge_ml, training_volumes=training_volumes,
        )  # fmt: skip
        rows += [{**row, "seed": replicate} for row in read_csv(folder / "per_case.csv")]
    for row in rows:
        row["bin"] = bins.bin_of(float(row["truth_ml"]))
    models = list(datasets)
    summary = summarise(rows, bins.edge_ml)
    write_csv(output_dir / "per_case.csv", rows, ("model", "seed", *CASE_COLUMNS, "bin"))
    write_csv(output_dir / "summary.csv", summary, list(summary[0]))
    with atomic_path(output_dir / "summary.md") as tmp:
        tmp.write_text(summary_markdown(summary, f"{truth} ({replicates} seed(s))", bins.edge_ml, True))
    save_error_plot(output_dir / "errors.png", rows, models, bins.edge_ml)
    save_bland_altman_plot(output_dir / "bland_altman.png", rows, models)
    cases = list(dict.fromkeys(str(r["case"]) for r in rows))
    bin_of_case = {str(r["case"]): r["bin"] for r in rows}
    subsets = {"all": cases, **{b: [c for c in cases if bin_of_case[c] == b] for b in BINS}}
    refs = tuple(r for r in references if aliases.get(r, r) in models)
    comparison = compare_variants(rows, refs, subsets, aliases)
    for alias, twin in aliases.items():  # listed as rows of their own, the same models as their twin's
        comparison += [{**row, "model": alias, "same_as": twin} for row in comparison if row["model"] == twin]
    write_csv(output_dir / "comparison.csv", comparison, list(dict.fromkeys(k for row in comparison for k in row)))
    return summary


def run_models_and_evaluation(
    runner: Any, out: Path, study: str, settings: StudySettings, datasets: dict[str, Path],
    set_stages: dict[str, str], design_stage: str,
) -> None:  # fmt: skip
    nnunet_root = out / "nnunet"
    model_stages = train_models(runner, study, datasets, nnunet_root, settings, set_stages)
    aliases = study_aliases(settings, study, datasets)

    # differences against the small real set, the generators' data, and (tumours) classical augmentation alone
    references = ("real", "pool", *(("real_classical",) if "real_classical" in datasets else ()))

    def evaluate() -> None:
        bins = HoldoutBins.from_json(read_json(evaluation_dir(out, study) / "design.json")["bins"])
        evaluate_study(datasets, nnunet_root, evaluation_dir(out, study), bins, settings.nnunet_seeds, aliases,
                       references)  # fmt: skip

    runner.run(f"evaluate_{study}", {"references": list(references), "aliases": aliases}, evaluate,
               inputs=(design_stage, *model_stages))  # fmt: skip


def datalist_pairs(datalist: Path, sections: tuple[str, ...] | None = None) -> list[tuple[Path, Path]]:
    """``(image, label)`` files of a datalist's items (every section by default)."""
    return [(Path(item["image"]), Path(item["label"])) for item in read_datalist(datalist, sections)]


def fidelity_stage(
    runner: Any, out: Path, study: str, settings: StudySettings, datasets: dict[str, Path], sources: dict[str, Path],
    source_stages: dict[str, str],
) -> str | None:  # fmt: skip
    """Stage ``fidelity_<study>``: the accepted pairs against the data their generators learnt from.

    Fréchet distance and MMD (3D: the real-data nnU-Net's encoder, seed 0; 2.5D: a 2D network
    trained on the real training images), each beside real-vs-real; MS-SSIM diversity; brain
    shape; the memorisation audit (:func:`shared.evaluation.pair_fidelity.measure_pair_fidelity`).
    Writes ``evaluation/<study>/fidelity.json``, ``fidelity.csv`` and ``memorisation.csv``.
    Returns the stage name (``None`` when QC accepted no pair: there is nothing to measure).
    """
    generated = generated_dir(out, study)
    rows = accepted_rows(generated / "manifest.csv")
    if len(rows) < 2 or "real" not in datasets:
        return None
    reference_source = sources["pool"] if "pool" in sources else sources["real"]
    real_model = model_folder(results_folder(out / "nnunet", 0), datasets["real"])
    trained = (real_model / "fold_all" / "checkpoint_final.pth").is_file()
    name = f"fidelity_{study}"

    def action() -> None:
        from shared.evaluation.pair_fidelity import measure_pair_fidelity

        pairs = [(generated / row["image"], generated / row["label"]) for row in rows]
        result = measure_pair_fidelity(
            pairs, datalist_pairs(reference_source), datalist_pairs(sources["real"]), study,
            real_model if trained else None, settings.fidelity["resamples"], settings.fidelity["feature_iterations"],
            seed=settings.seed, device=settings.device,
        )  # fmt: skip
        folder = evaluation_dir(out, study)
        write_csv(
            folder / "fidelity.csv", result["distances"], list(dict.fromkeys(k for r in result["distances"] for k in r))
        )
        write_csv(folder / "memorisation.csv", result["memorisation_rows"], list(result["memorisation_rows"][0]))
        write_json(folder / "fidelity.json", {k: v for k, v in result.items() if k not in ("memorisation_rows",)})

    inputs = (source_stages["generated"], source_stages["pool" if "pool" in sources else "real"],
              source_stages["real"], f"nnunet_{study}_real")  # fmt: skip
    params = {"reference": str(reference_source), "seed": settings.seed, "fidelity": dict(settings.fidelity),
              "nnunet_3d_features": trained}  # fmt: skip
    runner.run(name, params, action,
               inputs=tuple(dict.fromkeys(inputs)))  # fmt: skip
    return name


def build_sets(
    runner: Any, out: Path, study: str, settings: StudySettings, plan: StudyPlan, sources: dict[str, Path],
    source_stages: dict[str, str],
) -> tuple[dict[str, Path], dict[str, str]]:  # fmt: skip
    """Stages ``<study>_set_<variant>``: one nnU-Net set per trained variant. Returns ``(datasets, stages)``."""
    prefix, base_id, name, labels = STUDY_SETS[study]
    pair_folders = {"generated": generated_dir(out, study),
                    **{source: sources[source] for _, source, _ in needed_comparators(settings, study)}}  # fmt: skip
    variants = usable_variants(settings.trained_variants(study), pair_folders)
    datasets = variant_dataset_folders(out / "nnunet" / "nnUNet_raw", base_id, name, variants)
    stages = {}
    for variant, folder in datasets.items():
        base, extras = VARIANTS[variant]
        needs = ["holdout", *([base] if base else []), *extras]
        stage = f"{prefix}_set_{variant}"
        runner.run(
            stage, {"variant": variant, "labels": labels, "dataset": folder.name},
            lambda v=variant, f=folder: assemble_variant(v, f, out, study, sources),
            inputs=tuple(dict.fromkeys(source_stages[n] for n in needs)),
        )  # fmt: skip
        stages[variant] = stage
    return datasets, stages


def design_stage(
    runner: Any, out: Path, study: str, settings: StudySettings, plan: StudyPlan, datasets: dict[str, Path],
    inputs: list[str],
) -> str:  # fmt: skip
    name = f"design_{study}"
    params = {
        "check": "no hold-out subject in any ledger",
        "bins": "inside the real set's range / inside the generators' data only / beyond all",
        "generators_from": settings.generators_from,
    }
    runner.run(name, params, lambda: write_design(out, study, settings, plan, datasets), inputs=tuple(inputs))
    return name


# ----------------------------------------------------------------------------- the two studies


def holdout_stage(runner: Any, out: Path, settings: StudySettings, study: str) -> None:
    """The study's hold-out on the working grid (``holdout_brains`` / ``holdout_tumours``)."""
    from shared.workflow.demo_recipes import write_parts

    parts = settings.holdout(study)
    stage = "holdout_brains" if study == "ventricles" else "holdout_tumours"
    runner.run(stage, {"parts": [part.params() for part in parts]}, lambda: write_parts(parts, holdout_dir(out, study)))


def user_pool_stage(runner: Any, out: Path, settings: StudySettings, study: str) -> None:
    """The study file's pool set on the working grid (``pool_brains`` / ``pool_tumours``)."""
    pool = settings.pools[study]
    runner.run(pool_stage(study), {"pool": pool.params()}, lambda: write_user_pool(out, study, pool))


def read_every_set_first(runner: Any, out: Path, settings: StudySettings, studies: Sequence[str]) -> None:
    """Every hold-out and every pool the studies read, on the working grid before any model trains.

    A case that cannot be brought to the working grid (a head larger than its field of view, an
    unreadable file) then stops the run at its start, not after an hour of the first study. The
    studies' own calls of these stages find them done.
    """
    for study in studies:
        holdout_stage(runner, out, settings, study)
        if study in settings.pools and settings.generators_from != "real":
            user_pool_stage(runner, out, settings, study)


def run_ventricle_study(runner: Any, out: Path, settings: StudySettings) -> list[str]:
    """Stages of the ventricle study (see the module docstring); the real brains are the ``demo_brains`` stage's.

    Returns the stages the report reads (evaluation, fidelity).
    """
    study = "ventricles"
    plan = plan_study(settings, study)
    real = real_datalist(out, study)
    holdout = holdout_dir(out, study)
    generated = generated_dir(out, study)
    holdout_stage(runner, out, settings, study)
    sources = {"real": real, "holdout": holdout / "datalist.json", "generated": generated,
               "domain_randomised": out / "generated" / "domain_randomised"}  # fmt: skip
    source_stages = {"real": "demo_brains", "holdout": "holdout_brains", "generated": "generate_ventricle_pairs",
                     "domain_randomised": "domain_randomised_brains"}  # fmt: skip
    generator_stages = provide_data_and_generators(runner, out, settings, study, plan, sources, source_stages)
    mask, spade = (models_dir(out, bundle) for bundle, _ in STUDY_GENERATORS[study])
    generation = settings.generation

    def generate_round(folder: Path, count: int, seed: int, requests: Any) -> Path:
        conditions = [float(c) for c in requests] if requests else {"uniform": list(generation.generated_c)}
        device = settings.device
        mask_values = {**inference_overrides("ventricle_mask_ldm", settings), "ckpt_dir": str(mask), "device": device}
        spade_values = {**inference_overrides("spade_mri_ldm", settings), "ckpt_dir": str(spade), "device": device}
        mask_solver, image_solver = generation.samplers["mask"], generation.samplers["image"]
        return generate_pairs(
            folder, count, conditions, generation.guidance_scale, mask_sampler=mask_solver.sampler,
            mask_steps=mask_solver.steps, image_sampler=image_solver.sampler, image_steps=image_solver.steps, seed=seed,
            preset=generator_recipe("ventricle_mask_ldm", settings)["preset"],
            spade_preset=generator_recipe("spade_mri_ldm", settings)["preset"],
            mask_overrides=mask_values, spade_overrides=spade_values,
        )  # fmt: skip

    def generate() -> None:
        from shared.evaluation.segmentation_metrics import label_volumes_ml

        icv = float(np.median(label_volumes_ml(out / "data" / "brains" / "labels")))
        real_images = [item["image"] for item in read_datalist(real)]
        qc = with_brain_reference(with_reference_icv(settings.ventricle_qc, icv), real_images)
        generate_with_qc(generated, generate_round, "ventricles", qc, generation.n_generated, settings.seed,
                         generation.qc_rounds)  # fmt: skip

    runner.run(
        "generate_ventricle_pairs",
        {"generation": {"n_generated": generation.n_generated, "generated_c": list(generation.generated_c),
                        "guidance_scale": generation.guidance_scale, "qc_rounds": generation.qc_rounds,
                        "samplers": {k: asdict(generation.samplers[k]) for k in ("mask", "image")}},
         "qc": asdict(settings.ventricle_qc), "seed": settings.seed,
         "device": settings.device},
        generate, inputs=("demo_brains", *generator_stages),
    )  # fmt: skip
    if "real_dr" in settings.study_variants(study):
        from shared.segmentation.domain_randomisation import write_randomised_pairs

        runner.run(
            "domain_randomised_brains", {"copies": settings.domain_randomisation_copies, "seed": settings.seed},
            lambda: write_randomised_pairs(real, sources["domain_randomised"], settings.domain_randomisation_copies,
                                           settings.seed),
            inputs=("demo_brains",),
        )  # fmt: skip
    datasets, set_stages = build_sets(runner, out, study, settings, plan, sources, source_stages)
    design = design_stage(runner, out, study, settings, plan, datasets, [*generator_stages, *set_stages.values()])
    run_models_and_evaluation(runner, out, study, settings, datasets, set_stages, design)
    fidelity = fidelity_stage(runner, out, study, settings, datasets, sources, source_stages)
    return [f"evaluate_{study}", *([fidelity] if fidelity else [])]


def provide_data_and_generators(
    runner: Any, out: Path, settings: StudySettings, study: str, plan: StudyPlan, sources: dict[str, Path],
    source_stages: dict[str, str],
) -> list[str]:  # fmt: skip
    """The generators and the ``pool`` source, in the order their data needs; returns the generator stages."""
    if study in settings.pools and settings.generators_from == "pool":
        add_pool(runner, out, study, settings, plan, sources, source_stages, [])
        return provide_generators(runner, out, settings, study, source_stages["real"], settings.device)
    generator_stages = provide_generators(runner, out, settings, study, source_stages["real"], settings.device)
    add_pool(runner, out, study, settings, plan, sources, source_stages, generator_stages)
    return generator_stages


def pool_stage(study: str) -> str:
    return "pool_brains" if study == "ventricles" else "pool_tumours"


def pool_set_datalist(out: Path, study: str) -> Path:
    """The study file's pool set as written on the working grid (its training and validation sections)."""
    return pool_dir(out, study) / "set" / "datalist.json"


def write_user_pool(out: Path, study: str, pool: Any) -> Path:
    """The study file's pool set on the working grid, and the ``pool`` variant's datalist of its training subjects."""
    folder = pool_dir(out, study)
    shutil.rmtree(folder, ignore_errors=True)
    items = items_relative_to(read_datalist(pool.write(folder / "set"), ["training"]), folder)
    return write_datalist(folder / "datalist.json", {"training": items})


def add_pool(
    runner: Any, out: Path, study: str, settings: StudySettings, plan: StudyPlan, sources: dict[str, Path],
    source_stages: dict[str, str], generator_stages: list[str],
) -> None:  # fmt: skip
    """The ``pool`` source: the generators' own data (drawn again from their recipes, or the study
    file's pool set), or the real set (``generators_from real``)."""
    stage = pool_stage(study)
    if settings.generators_from == "real":
        sources["pool"], source_stages["pool"] = sources["real"], source_stages["real"]
        return
    if study in settings.pools:  # written before the generators that train on it (see provide_generators)
        user_pool_stage(runner, out, settings, study)
    elif any(VARIANTS[v][0] == "pool" for v in settings.trained_variants(study)) or needed_comparators(settings, study):
        # the pool variants' data; the comparators learn from it too
        runner.run(stage, {"recipes": [r.params() for r in plan.pool_recipes]}, lambda: write_pool(out, study, plan),
                   inputs=tuple(generator_stages))  # fmt: skip
    else:
        return
    sources["pool"], source_stages["pool"] = pool_dir(out, study) / "datalist.json", stage


def tumour_pairs_stage(
    runner: Any, out: Path, settings: StudySettings, stage: str, pairs: Path, models: Path, recipe: dict[str, Any],
    what: str, trained_stages: Sequence[str], overlays: Sequence[str] = (),
) -> None:  # fmt: skip
    """Stage ``stage``: a tumour generator's pairs in rounds through the tumour QC, into ``pairs``.

    The slice LDM's (``models/slice_based_ldm_brats``) and each comparator's (``overlays``: its
    config files, e.g. the 3D-LDM baseline's) with the same seed, sampler and rounds, so all
    generators get the same tumour requests. ``what`` names the generator in the bundle run's messages.
    """
    prepared = real_datalist(out, "tumours")
    generation = settings.generation
    sampler = generation.samplers["tumour"]

    def generate_round(folder: Path, count: int, seed: int, requests: Any) -> Path:
        run_bundle(
            SBLDM_BUNDLE, ["configs/inference.yaml", *overlays, *preset_overlay(recipe["preset"])],
            {**recipe["overrides"], "ckpt_dir": str(models), "datalist": str(prepared), "output_dir": str(folder),
             "num_samples": count, "sampler": sampler.sampler, "num_inference_steps": sampler.steps, "seed": seed,
             "device": settings.device},
            f"tumour pairs ({what})",
        )  # fmt: skip
        return folder / "manifest.csv"

    runner.run(
        stage,
        {"n_generated": generation.n_generated, "sampler": asdict(sampler), "qc_rounds": generation.qc_rounds,
         "qc": asdict(settings.tumour_qc), "seed": settings.seed, "device": settings.device},
        lambda: generate_with_qc(
            pairs, generate_round, "tumours",
            with_brain_reference(settings.tumour_qc, [i["image"] for i in read_datalist(prepared)]),
            generation.n_generated, settings.seed, generation.qc_rounds,
        ),
        inputs=("prepare_tumours", *trained_stages),
    )  # fmt: skip


def run_tumour_study(runner: Any, out: Path, settings: StudySettings) -> list[str]:
    """Stages of the tumour study (see the module docstring); the raw real cases are the ``demo_tumours`` stage's.

    Returns the stages the report reads (evaluation, fidelity).
    """
    from shared.tumour_preprocessing import prepare_tumour_dataset
    from shared.workflow.comparators import provide_comparators, table1_stage

    study = "tumours"
    plan = plan_study(settings, study)
    prepared = real_datalist(out, study).parent
    holdout = holdout_dir(out, study)
    generated = generated_dir(out, study)
    tumours = settings.tumours
    runner.run(
        "prepare_tumours", {"shape": list(tumours.prepared_shape), "validation": tumours.prepared_validation_fraction},
        lambda: prepare_tumour_dataset(out / "data" / "tumours" / "datalist.json", prepared, tumours.prepared_shape,
                                       tumours.prepared_validation_fraction),
        inputs=("demo_tumours",),
    )  # fmt: skip
    holdout_stage(runner, out, settings, study)
    sources = {"real": prepared / "datalist.json", "holdout": holdout / "datalist.json", "generated": generated,
               "classical": out / "generated" / "classical"}  # fmt: skip
    source_stages = {"real": "prepare_tumours", "holdout": "holdout_tumours", "generated": "generate_tumour_pairs",
                     "classical": "classical_augmentation"}  # fmt: skip
    generator_stages = provide_data_and_generators(runner, out, settings, study, plan, sources, source_stages)
    comparator_stages = provide_comparators(runner, out, settings, plan, sources, source_stages)
    tumour_pairs_stage(
        runner, out, settings, "generate_tumour_pairs", generated, models_dir(out, "slice_based_ldm_brats"),
        generator_recipe("slice_based_ldm_brats", settings), "slice_based_ldm_brats", generator_stages,
    )  # fmt: skip
    if any("classical" in VARIANTS[v][1] for v in settings.study_variants(study)):
        from shared.segmentation.classical_augmentation import write_augmented_pairs

        runner.run(
            "classical_augmentation", {"copies": settings.classical_copies, "seed": settings.seed},
            lambda: write_augmented_pairs(sources["real"], sources["classical"], settings.classical_copies,
                                          settings.seed, ["training", "validation"]),
            inputs=("prepare_tumours",),
        )  # fmt: skip
    table1 = table1_stage(runner, out, settings, sources, source_stages) if comparator_stages else None
    datasets, set_stages = build_sets(runner, out, study, settings, plan, sources, source_stages)
    design = design_stage(runner, out, study, settings, plan, datasets,
                          [*generator_stages, *comparator_stages, *set_stages.values()])  # fmt: skip
    run_models_and_evaluation(runner, out, study, settings, datasets, set_stages, design)
    fidelity = fidelity_stage(runner, out, study, settings, datasets, sources, source_stages)
    return [f"evaluate_{study}", *([fidelity] if fidelity else []), *([table1] if table1 else [])]
