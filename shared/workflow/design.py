"""A study's design, fixed before anything trains: who learns from which subjects, and the hold-out bins.

:func:`plan_study` lists, from the settings alone (no file is read but the starter manifests),
the subjects every model of a study will learn from: each generator stage (its starter
manifest's ledger with ``generators_from pool``; the real training subjects with ``real``) and
each nnU-Net variant, and the hold-out's subjects. Tests check that no hold-out subject is in
any of them, for every scale and protocol; a run checks the ledgers it actually wrote against
the same rule (:func:`shared.workflow.ledger.check_unseen`) before any segmenter trains.

:func:`holdout_bins` is the rule that splits the hold-out: *inside* the training data (a truth
volume at most the largest any model's real training subjects hold) or *beyond* it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.workflow.demo_recipes import DemoRecipe, parts_subjects
from shared.workflow.ledger import Ledger
from shared.workflow.settings import VARIANTS, StudySettings
from shared.workflow.starter_weights import STARTER_FOLDER, read_starter_ledgers

ROOT = Path(__file__).resolve().parents[2]

#: Generator bundles of each study: ``(bundle folder name, name in ledgers)``, in the order they run.
STUDY_GENERATORS: dict[str, tuple[tuple[str, str], ...]] = {
    "ventricles": (("ventricle_mask_ldm", "mask LDM"), ("spade_mri_ldm", "SPADE LDM")),
    "tumours": (("slice_based_ldm_brats", "slice LDM"),),
}
GENERATOR_STAGES = ("autoencoder", "diffusion")
#: Real subjects the generators validate on in the real protocol (the last ones, also trained on).
REAL_PROTOCOL_VALIDATION = 2


def real_recipe(settings: StudySettings, study: str) -> DemoRecipe:
    return settings.brains if study == "ventricles" else settings.tumours


def generators_training_datalist_sections(recipe_subjects: list[str]) -> dict[str, list[str]]:
    """The real protocol's generator split: train on every real subject, validate on the last few."""
    return {"training": list(recipe_subjects), "validation": list(recipe_subjects[-REAL_PROTOCOL_VALIDATION:])}


def model_name(variant: str, replicate: int) -> str:
    return f"nnU-Net {variant} (seed {replicate})"


@dataclass(frozen=True)
class StudyPlan:
    """The subjects of one study, from its settings.

    Attributes:
        generators: one ledger per generator stage (subjects only; no quantity range).
        segmenters: one per nnU-Net model (variant x seed).
        holdout: the hold-out's subjects.
        real: the small real training set's subjects.
        pool: the subjects the generators learnt from (the ``pool`` variant's).
        pool_recipes: the demo recipes of the pool's data (drawn again for the ``pool`` variant).
    """

    generators: tuple[Ledger, ...]
    segmenters: tuple[Ledger, ...]
    holdout: tuple[str, ...]
    real: tuple[str, ...]
    pool: tuple[str, ...]
    pool_recipes: tuple[DemoRecipe, ...]

    def ledgers(self) -> tuple[Ledger, ...]:
        return (*self.generators, *self.segmenters)


def generator_plan(settings: StudySettings, study: str) -> tuple[list[Ledger], list[DemoRecipe]]:
    """The generator stages' ledgers, and the recipes of the data they learnt from."""
    ledgers: list[Ledger] = []
    recipes: list[DemoRecipe] = []
    real = real_recipe(settings, study)
    for bundle, name in STUDY_GENERATORS[study]:
        if settings.generators_from == "pool":
            for stage, ledger, recipe in read_starter_ledgers(ROOT / "bundles" / bundle / STARTER_FOLDER):
                ledgers.append(Ledger(f"{name} {stage}", study, ledger.training, ledger.validation,
                                      value_range=ledger.value_range, source=ledger.source))  # fmt: skip
                if recipe not in recipes:
                    recipes.append(recipe)
        else:
            split = generators_training_datalist_sections(real.all_subjects())
            for stage in GENERATOR_STAGES:
                ledgers.append(Ledger(f"{name} {stage}", study, tuple(split["training"]), tuple(split["validation"]),
                                      source="the study's real training subjects"))  # fmt: skip
            if real not in recipes:
                recipes.append(real)
    return ledgers, recipes


def plan_study(settings: StudySettings, study: str) -> StudyPlan:
    """Every model's subjects in one study (see the module docstring)."""
    generators, recipes = generator_plan(settings, study)
    real = tuple(real_recipe(settings, study).all_subjects())
    pool = tuple(sorted({s for ledger in generators for s in ledger.training}))
    via = tuple(dict.fromkeys(ledger.model.rsplit(" ", 1)[0] for ledger in generators))
    segmenters = []
    for variant in settings.trained_variants(study):
        base, extras = VARIANTS[variant]
        subjects = {"real": real, "pool": pool, None: ()}[base]
        synthetic = settings.generation.n_generated if "generated" in extras else 0
        for replicate in range(settings.nnunet_seeds):
            segmenters.append(
                Ledger(
                    model_name(variant, replicate),
                    study,
                    subjects,
                    synthetic_pairs=synthetic,
                    via=via if synthetic else (),
                )
            )
    holdout = tuple(parts_subjects(settings.holdout(study)))
    return StudyPlan(tuple(generators), tuple(segmenters), holdout, real, pool, tuple(recipes))


@dataclass(frozen=True)
class HoldoutBins:
    """The hold-out split declared before a run: inside or beyond the training data.

    Attributes:
        quantity: ``ventricle_ml`` or ``tumour_ml``.
        edge_ml: the largest quantity any model's real training subjects hold.
        rule: the rule, in words (for the report).
    """

    quantity: str
    edge_ml: float
    rule: str

    def bin_of(self, truth_ml: float) -> str:
        return "beyond" if round(float(truth_ml), 6) > self.edge_ml else "inside"

    def to_json(self) -> dict[str, Any]:
        return {"quantity": self.quantity, "edge_ml": self.edge_ml, "rule": self.rule}


def holdout_bins(ledgers: list[Ledger] | tuple[Ledger, ...], study: str) -> HoldoutBins:
    """:class:`HoldoutBins` from the ledgers written before any segmenter trains."""
    ranges = [ledger.value_range for ledger in ledgers if ledger.value_range is not None]
    if not ranges:
        raise ValueError(f"{study}: no ledger holds a quantity range; the hold-out bins cannot be set")
    edge = round(max(r[1] for r in ranges), 3)
    what = "ventricle volume" if study == "ventricles" else "tumour volume"
    rule = f"inside: true {what} <= {edge:g} mL, the largest of any model's real training subjects; beyond: above it"
    return HoldoutBins(ledgers[0].quantity, edge, rule)
