"""Paper 003's 3D-LDM baseline in the tumour study: trained in the run, its pairs, and Table 1 of both generators.

Paper 003 compares its slice-based LDM with a 3D-LDM (a 3D autoencoder on whole volumes under
the same conditioned diffusion UNet) in two tables: image quality (Table 1: PSNR, SSIM,
parameters, seconds per volume) and segmentation (Table 2: "3D-LDM only", "real + 3D-LDM").
Here the baseline is the bundle's ``configs/baseline_3d_ldm.yaml``, trained in every run (no
weights ship for it) with the slice LDM's recipe on the data the slice LDM learnt from: the
starter's cases drawn again (``generators_from pool``), the study file's pool set, or the real
training subjects (``generators_from real``). Its autoencoder gets
``baseline_autoencoder_epoch_factor`` of the slice VAE's epochs, about the same compute.

Its pairs are asked for with the slice LDM's seed, so both generators get the same tumour
requests, and pass the same QC. Table 1 measures each generator's first round (every candidate,
before QC) against the real volumes it learnt from, at the study's grid, in the same run.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from shared.io import InputError, write_json
from shared.workflow.design import GENERATOR_STAGES, StudyPlan, generator_source, needed_comparators
from shared.workflow.ledger import datalist_ledger, write_ledger
from shared.workflow.settings import StudySettings
from shared.workflow.stages import (
    SBLDM_BUNDLE,
    evaluation_dir,
    generated_dir,
    generator_ledger_path,
    generator_recipe,
    generators_datalist,
    keep_only_checkpoints_of,
    models_dir,
    pool_dir,
    pool_set_datalist,
    pool_stage,
    real_datalist,
    train_bundle,
    tumour_pairs_stage,
    write_generators_datalist,
)

#: The bundle's overlay that turns its stage configs into the 3D-LDM baseline's.
BASELINE_OVERLAY = "configs/baseline_3d_ldm.yaml"
STUDY = "tumours"
TABLE1_STAGE = "table1_tumours"


def comparator_pairs(out: Path, folder: str) -> Path:
    """A comparator's pairs (``generated/tumours_<folder>``), laid out as the slice LDM's."""
    return generated_dir(out, f"{STUDY}_{folder}")


def baseline_recipe(settings: StudySettings) -> dict[str, Any]:
    """The slice LDM's recipe with ``baseline_autoencoder_epoch_factor`` of its autoencoder epochs.

    Raises:
        InputError: the slice LDM's recipe names no ``autoencoder_epochs`` (a study file's recipe
            without it): the baseline's share cannot be computed.
    """
    recipe = generator_recipe("slice_based_ldm_brats", settings)
    epochs = recipe["overrides"].get("autoencoder_epochs")
    if epochs is None:
        raise InputError(
            "the slice LDM's recipe gives no autoencoder_epochs: the 3D-LDM baseline (variants *_3d_ldm) takes "
            "a share of them; give it in the recipe or drop those variants"
        )
    epochs = max(1, round(float(epochs) * settings.baseline_autoencoder_epoch_factor))
    return {**recipe, "overrides": {**recipe["overrides"], "autoencoder_epochs": epochs}}


def slice_ldm_data(out: Path, settings: StudySettings, plan: StudyPlan) -> tuple[Path, str, str]:
    """The data the slice LDM learnt from, as a datalist with its training and validation sections.

    Returns:
        ``(datalist, stage that writes it, words for the ledger)``.
    """
    source = generator_source(settings, STUDY, "slice_based_ldm_brats")
    if source == "real":
        return generators_datalist(out, STUDY), "prepare_tumours", "the slice LDM's data: the real set"
    if source == "pool_set":
        return pool_set_datalist(out, STUDY), pool_stage(STUDY), "the slice LDM's data: the study's pool set"
    if len(plan.pool_recipes) != 1:
        raise InputError(
            f"the slice LDM's weights learnt from {len(plan.pool_recipes)} data sets; the 3D-LDM baseline needs one"
        )
    return (pool_dir(out, STUDY) / "part_0" / "datalist.json", pool_stage(STUDY),
            "the slice LDM's data, drawn again from its manifest")  # fmt: skip


def provide_comparators(
    runner: Any, out: Path, settings: StudySettings, plan: StudyPlan, sources: dict[str, Path],
    source_stages: dict[str, str],
) -> list[str]:  # fmt: skip
    """Train each needed comparator and generate its pairs; adds their pair folders to ``sources``.

    Stages ``trained_<folder>`` (models and ledgers) and ``generate_tumour_pairs_<folder>`` (pairs
    through the tumour QC, the slice LDM's seed and rounds). Returns the training stages.
    """
    stages = []
    for name, pair_source, folder in needed_comparators(settings, STUDY):
        models = models_dir(out, folder)
        recipe = baseline_recipe(settings)
        datalist, data_stage, words = slice_ldm_data(out, settings, plan)

        def train(models: Path = models, recipe: dict[str, Any] = recipe, datalist: Path = datalist,
                  words: str = words, name: str = name, data_stage: str = data_stage,
                  folder: str = folder) -> None:  # fmt: skip
            if data_stage == "prepare_tumours":  # the real protocol's split, as the slice LDM's
                write_generators_datalist(real_datalist(out, STUDY), datalist)
            if not datalist.is_file():
                raise InputError(f"{datalist}: the slice LDM's data is not written; the 3D-LDM baseline needs it")
            training = {"recipe": recipe, "seed": settings.seed, "datalist": str(datalist), "overlay": BASELINE_OVERLAY}
            keep_only_checkpoints_of(models, training)
            train_bundle(SBLDM_BUNDLE, models, datalist, settings.device, name, recipe, settings.seed,
                         overlays=[BASELINE_OVERLAY])  # fmt: skip
            for stage in GENERATOR_STAGES:
                write_ledger(generator_ledger_path(out, folder, stage),
                             datalist_ledger(f"{name} {stage}", STUDY, datalist, source=words))  # fmt: skip

        stage = f"trained_{folder}"
        runner.run(stage, {"recipe": recipe, "seed": settings.seed, "device": settings.device,
                           "overlay": BASELINE_OVERLAY, "data": str(datalist)}, train,
                   inputs=(data_stage,))  # fmt: skip
        stages.append(stage)
        pairs, pairs_stage = comparator_pairs(out, folder), f"generate_tumour_pairs_{folder}"
        tumour_pairs_stage(runner, out, settings, pairs_stage, pairs, models, recipe, name, [stage],
                           overlays=[BASELINE_OVERLAY])  # fmt: skip
        sources[pair_source], source_stages[pair_source] = pairs, pairs_stage
    return stages


def weights_parameters_m(models: Path) -> float:
    """Parameters (millions) in a generator's saved networks (``model_autoencoder.pt`` and ``model.pt``)."""
    from shared.checkpoints import load_weights

    total = 0
    for file in ("model_autoencoder.pt", "model.pt"):
        total += sum(t.numel() for t in load_weights(models / file).values() if hasattr(t, "numel"))
    return total / 1e6


def table1_stage(
    runner: Any, out: Path, settings: StudySettings, sources: dict[str, Path], source_stages: dict[str, str]
) -> str:  # fmt: skip
    """Stage ``table1_tumours``: paper 003's Table 1 for the slice LDM and each comparator, at the study's grid.

    Each generator's first round (every candidate, before QC) against the real volumes it learnt
    from (the ``pool`` source, or the real set), unpaired: PSNR, SSIM, parameters, seconds per
    volume, rho(requested, achieved volume), empty masks. Writes ``evaluation/tumours/table1.csv``
    and ``table1.md`` (with the paper's figures beside).
    """
    from shared.sampling.tumour_evaluation import table1_row, update_results_table

    reference_key = "pool" if "pool" in sources else "real"
    generators = [("SBLDM", models_dir(out, "slice_based_ldm_brats"), generated_dir(out, STUDY), "generated")]
    generators += [(name, models_dir(out, folder), comparator_pairs(out, folder), pair_source)
                   for name, pair_source, folder in needed_comparators(settings, STUDY)]  # fmt: skip
    sampler = settings.generation.samplers["tumour"]

    def action() -> None:
        table = evaluation_dir(out, STUDY) / "table1.csv"
        table.unlink(missing_ok=True)
        rows = []
        for method, models, pairs, _ in generators:
            manifest = pairs / "rounds" / "round_0" / "manifest.csv"
            row = table1_row(manifest, sources[reference_key], weights_parameters_m(models), settings.seed)
            update_results_table(table, {"method": method, "sampler": sampler.sampler, "steps": sampler.steps, **row})
            rows.append({"method": method, **row})
        write_json(table.with_suffix(".json"), {"reference": str(sources[reference_key]), "rows": rows})

    inputs = (source_stages[reference_key], *(source_stages[source] for *_, source in generators))
    runner.run(TABLE1_STAGE, {"reference": reference_key, "seed": settings.seed, "sampler": asdict(sampler)}, action,
               inputs=tuple(dict.fromkeys(inputs)))  # fmt: skip
    return TABLE1_STAGE
