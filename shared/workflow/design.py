"""A study's design, fixed before anything trains: who learns from which subjects, and the hold-out bins.

:func:`plan_study` lists, from the settings alone (no file is read but the starter manifests),
the subjects every model of a study will learn from: each generator stage (its starter
manifest's ledger with ``generators_from pool``; the real training subjects with ``real``) and
each nnU-Net variant, and the hold-out's subjects. Tests check that no hold-out subject is in
any of them, for every scale and protocol; a run checks the ledgers it actually wrote against
the same rule (:func:`shared.workflow.ledger.check_unseen`) before any segmenter trains.

:func:`holdout_bins` is the rule that splits the hold-out: *inside* the small real set's range
of the study's quantity, *pool_only* (outside it, inside the range of the data the generators
learnt from), or *beyond* every model's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.export.starter_weights import STARTER_FOLDER
from shared.workflow.demo_recipes import parts_subjects
from shared.workflow.ledger import Ledger
from shared.workflow.settings import VARIANTS, DataSet, StudySettings
from shared.workflow.starter_ledgers import read_starter_ledgers

ROOT = Path(__file__).resolve().parents[2]

#: Generator bundles of each study: ``(bundle folder name, name in ledgers)``, in the order they run.
STUDY_GENERATORS: dict[str, tuple[tuple[str, str], ...]] = {
    "ventricles": (("ventricle_mask_ldm", "mask LDM"), ("spade_mri_ldm", "SPADE LDM")),
    "tumours": (("slice_based_ldm_brats", "slice LDM"),),
}
GENERATOR_STAGES = ("autoencoder", "diffusion")
#: Comparator generators of each study: ``(name in ledgers, pair source of VARIANTS, folder name of its
#: models and pairs)``. A comparator
#: trains in the run, with the study's generator's recipe, on the data that generator learnt from
#: (its ledgers are the generator's, under the comparator's name): paper 003's 3D-LDM baseline, a 3D
#: autoencoder on whole volumes under the same conditioned diffusion UNet.
STUDY_COMPARATORS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "ventricles": (),
    "tumours": (("3D-LDM", "generated_3d_ldm", "3d_ldm"),),
}
#: Real subjects the generators validate on in the real protocol (the last ones, also trained on).
REAL_PROTOCOL_VALIDATION = 2


def real_recipe(settings: StudySettings, study: str) -> DataSet:
    return settings.brains if study == "ventricles" else settings.tumours


def generator_source(settings: StudySettings, study: str, bundle: str) -> str:
    """Where ``bundle``'s weights come from in ``study``.

    ``starter`` (the bundle's starter weights), ``weights`` (a folder in the starter layout the
    study file names), ``pool_set`` (trained in the run on the study file's pool set) or ``real``
    (trained in the run on the real training subjects).
    """
    if settings.generators_from == "real":
        return "real"
    if bundle in settings.generator_weights:
        return "weights"
    return "pool_set" if study in settings.pools else "starter"


def weights_folder(settings: StudySettings, bundle: str) -> Path:
    """The starter-layout folder a ``starter`` or ``weights`` generator is installed from."""
    named = settings.generator_weights.get(bundle)
    return Path(named) if named else ROOT / "bundles" / bundle / STARTER_FOLDER


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
        pool_recipes: the data sets of the pool (drawn or read again for the ``pool`` variant).
    """

    generators: tuple[Ledger, ...]
    segmenters: tuple[Ledger, ...]
    holdout: tuple[str, ...]
    real: tuple[str, ...]
    pool: tuple[str, ...]
    pool_recipes: tuple[DataSet, ...]

    def ledgers(self) -> tuple[Ledger, ...]:
        return (*self.generators, *self.segmenters)


def generator_plan(settings: StudySettings, study: str) -> tuple[list[Ledger], list[DataSet]]:
    """The generator stages' ledgers, and the data sets they learnt from (drawn or read again for ``pool``)."""
    ledgers: list[Ledger] = []
    recipes: list[DataSet] = []
    real = real_recipe(settings, study)
    for bundle, name in STUDY_GENERATORS[study]:
        source = generator_source(settings, study, bundle)
        if source in ("starter", "weights"):
            for stage, ledger, recipe in read_starter_ledgers(weights_folder(settings, bundle)):
                ledgers.append(Ledger(f"{name} {stage}", study, ledger.training, ledger.validation,
                                      value_range=ledger.value_range, source=ledger.source))  # fmt: skip
                if recipe not in recipes:
                    recipes.append(recipe)
            continue
        if source == "pool_set":
            data, words = settings.pools[study], "the study's pool set"
            split = data.subjects()
        else:
            data, words = real, "the study's real training subjects"
            split = generators_training_datalist_sections(real.all_subjects())
        for stage in GENERATOR_STAGES:
            ledgers.append(Ledger(f"{name} {stage}", study, tuple(split["training"]), tuple(split["validation"]),
                                  source=words))  # fmt: skip
        if data not in recipes:
            recipes.append(data)
    return ledgers, recipes


def needed_comparators(settings: StudySettings, study: str) -> tuple[tuple[str, str, str], ...]:
    """The study's comparators whose pairs some trained variant uses (entries of :data:`STUDY_COMPARATORS`)."""
    sources = {extra for variant in settings.trained_variants(study) for extra in VARIANTS[variant][1]}
    return tuple(entry for entry in STUDY_COMPARATORS[study] if entry[1] in sources)


def comparator_ledgers(generators: list[Ledger] | tuple[Ledger, ...], name: str) -> list[Ledger]:
    """A comparator's ledgers: the study's generator stages' subjects, under the comparator's name."""
    return [
        Ledger(f"{name} {ledger.model.rsplit(' ', 1)[1]}", ledger.study, ledger.training, ledger.validation,
               value_range=ledger.value_range, source=f"the data of {ledger.model}: {ledger.source}")
        for ledger in generators
    ]  # fmt: skip


def pair_generators(study: str, extras: tuple[str, ...]) -> tuple[str, ...]:
    """Names of the generators whose pairs the pair sources ``extras`` hold (``generated``: the study's own)."""
    names: list[str] = []
    for extra in extras:
        if extra == "generated":
            names += [name for _, name in STUDY_GENERATORS[study]]
        names += [name for name, source, _ in STUDY_COMPARATORS[study] if source == extra]
    return tuple(dict.fromkeys(names))


def plan_study(settings: StudySettings, study: str) -> StudyPlan:
    """Every model's subjects in one study (see the module docstring)."""
    generators, recipes = generator_plan(settings, study)
    own = list(generators)
    for name, _, _ in needed_comparators(settings, study):
        generators += comparator_ledgers(own, name)
    real = tuple(real_recipe(settings, study).all_subjects())
    pool = tuple(sorted({s for ledger in generators for s in ledger.training}))
    segmenters = []
    for variant in settings.trained_variants(study):
        base, extras = VARIANTS[variant]
        subjects = {"real": real, "pool": pool, None: ()}[base]
        via = pair_generators(study, extras)
        synthetic = settings.generation.n_generated if via else 0
        for replicate in range(settings.nnunet_seeds):
            segmenters.append(
                Ledger(
                    model_name(variant, replicate),
                    study,
                    subjects,
                    synthetic_pairs=synthetic,
                    via=via,
                )
            )
    holdout = tuple(parts_subjects(settings.holdout(study)))
    return StudyPlan(tuple(generators), tuple(segmenters), holdout, real, pool, tuple(recipes))


#: The hold-out bins, in report order: inside the small real set's range; outside it but inside the
#: range of the data some generator (or the ``pool`` variant) learnt from; outside every model's data.
BINS = ("inside", "pool_only", "beyond")
BIN_WORDS = {"inside": "inside the real set", "pool_only": "inside the generators' data only", "beyond": "beyond all"}


@dataclass(frozen=True)
class HoldoutBins:
    """The hold-out split, a rule fixed before the run and measured from the ledgers before any segmenter trains.

    A case's bin is where its true quantity lies: ``inside`` the range of the small real set's
    subjects (what ``real`` and ``augmented`` learnt from), ``pool_only`` outside that but inside the
    range of every real subject any model learnt from (the generators' data, ``pool``), or
    ``beyond`` every model's data (below or above). With the generators trained on the real set the
    two ranges are one and ``pool_only`` is empty.

    Attributes:
        quantity: ``ventricle_ml`` or ``tumour_ml``.
        real_range: ``(min, max)`` mL over the small real set's training subjects.
        data_range: ``(min, max)`` mL over every model's real training subjects (contains ``real_range``).
        rule: the rule, in words (for the report).
    """

    quantity: str
    real_range: tuple[float, float]
    data_range: tuple[float, float]
    rule: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "real_range", tuple(float(v) for v in self.real_range))
        object.__setattr__(self, "data_range", tuple(float(v) for v in self.data_range))

    @property
    def edge_ml(self) -> float:
        """The largest quantity any model's real training subjects hold (plots draw it)."""
        return self.data_range[1]

    def bin_of(self, truth_ml: float) -> str:
        value = round(float(truth_ml), 6)
        if self.real_range[0] <= value <= self.real_range[1]:
            return "inside"
        if self.data_range[0] <= value <= self.data_range[1]:
            return "pool_only"
        return "beyond"

    def to_json(self) -> dict[str, Any]:
        return {"quantity": self.quantity, "real_range": list(self.real_range), "data_range": list(self.data_range),
                "rule": self.rule}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HoldoutBins:
        return cls(data["quantity"], tuple(data["real_range"]), tuple(data["data_range"]), data["rule"])


def holdout_bins(real: Ledger, ledgers: list[Ledger] | tuple[Ledger, ...], study: str) -> HoldoutBins:
    """:class:`HoldoutBins` from the ledgers written before any segmenter trains.

    Args:
        real: the ledger of the small real set (the ``real`` variant's nnU-Net set).
        ledgers: every model's ledger (generators and nnU-Net sets); those with a quantity range count.
    """
    ranges = [ledger.value_range for ledger in [real, *ledgers] if ledger.value_range is not None]
    if real.value_range is None or not ranges:
        raise ValueError(f"{study}: the real set's ledger holds no quantity range; the hold-out bins cannot be set")
    real_range = (float(real.value_range[0]), float(real.value_range[1]))
    data_range = (min(r[0] for r in ranges), max(r[1] for r in ranges))
    what = "ventricle volume" if study == "ventricles" else "tumour volume"
    rule = (
        f"true {what} inside {real_range[0]:g}-{real_range[1]:g} mL (the real set's subjects): inside; "
        f"else inside {data_range[0]:g}-{data_range[1]:g} mL (every model's real training subjects, the "
        "generators' included): pool_only; else beyond"
    )
    return HoldoutBins(real.quantity, real_range, data_range, rule)
