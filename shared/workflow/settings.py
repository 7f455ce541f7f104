"""A study's settings in one place: the scales' defaults (:data:`SCALES`) and what they compose.

:data:`SCALES` is the only table of defaults of the main command: every flag of
``scripts/run_pipeline.py`` is a key of it, and a flag given on the command line replaces the
scale's value. :func:`resolve_settings` turns one scale plus the flags into a
:class:`StudySettings`, which is made of the parts each stage reads: the demo data recipes
(real sets, hold-outs), the generation settings, the QC tolerances (:class:`VentricleQC`,
:class:`TumourQC`, whose own defaults live in ``pair_qc.py``), nnU-Net's
:class:`TrainingSchedule`, the variants and the protocol (``generators_from``). A newcomer finds
the QC thresholds, the schedule and the variants of a scale here.

Everything in a scale is fixed before a run. The nnU-Net schedule was chosen with
``scripts/learning_curve.py`` on a validation split of the real training subjects (never on the
hold-out; README "nnU-Net on a CPU schedule"); the guidance scale and ``c`` range come from the
mask LDM's own evaluation on its training data (its docs); the hold-out bins are a rule (inside
the small real set's range of the study's quantity; inside only the generators' data; beyond
every model's data), measured from the data ledgers before any segmenter trains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from shared.bounds import Count, NonNegative, Positive, PositiveFloat, check_fields
from shared.io import InputError
from shared.segmentation.nnunet_training import TrainingSchedule
from shared.workflow.demo_recipes import DemoRecipe
from shared.workflow.pair_qc import TumourQC, VentricleQC, qc_settings
from shared.workflow.user_sets import UserSet

#: A study's data: a built-in demo recipe, or a set of the user's (``--study``).
DataSet = DemoRecipe | UserSet

STUDIES = ("ventricles", "tumours")

#: ``pool``: the generators are the shipped starter weights, trained on their own pool of
#: labelled data (their manifests' ledgers); ``real``: every generator is trained on the study's
#: real training subjects only (paper 003's data-scarce protocol).
GENERATORS_FROM = ("pool", "real")

#: Training set of each variant: the labelled data it starts from (``real``: the study's small
#: real set; ``pool``: the data the generators learnt from; ``None``: none) and the pair folders
#: added to it. ``generated``: the LDM pairs QC accepted; ``domain_randomised``: SynthSeg-style
#: images of the real label maps; ``classical``: classically augmented copies of the real cases;
#: ``generated_3d_ldm``: the pairs of paper 003's 3D-LDM baseline (the tumour study's comparator,
#: trained in the run on the slice LDM's data). The order fixes the nnU-Net dataset ids (base + index),
#: so ids never move.
VARIANTS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "real": ("real", ()),
    "synthetic": (None, ("generated",)),
    "augmented": ("real", ("generated",)),
    "real_dr": ("real", ("domain_randomised",)),
    "real_classical": ("real", ("classical",)),
    "augmented_classical": ("real", ("classical", "generated")),
    "pool": ("pool", ()),
    "pool_augmented": ("pool", ("generated",)),
    "synthetic_3d_ldm": (None, ("generated_3d_ldm",)),
    "augmented_3d_ldm": ("real", ("generated_3d_ldm",)),
}
#: The variants each study can train (paper 000: + domain randomisation; paper 003: + classical augmentation).
STUDY_VARIANTS: dict[str, tuple[str, ...]] = {
    "ventricles": ("real", "pool", "synthetic", "augmented", "pool_augmented", "real_dr"),
    "tumours": (
        "real",
        "pool",
        "real_classical",
        "synthetic",
        "augmented",
        "augmented_classical",
        "pool_augmented",
        "synthetic_3d_ldm",
        "augmented_3d_ldm",
    ),
}
#: With ``generators_from real`` the pool is the real set: these variants are the same training
#: sets as the ones they name, so their models are not trained twice.
REAL_PROTOCOL_ALIASES: dict[str, str] = {"pool": "real", "pool_augmented": "augmented"}

#: Offset of the hold-out's seed from the run's seed: its subjects are none of the real ones.
HOLDOUT_SEED_OFFSET = 1000

_DEMO: dict[str, Any] = {
    "seed": 0,
    "generators_from": "pool",
    # real training sets
    "n_brains": 20, "shape": (32, 32, 32), "spacing": None, "brain_enlargement": (1.0, 5.0),
    "n_tumours": 20, "tumour_shape": (64, 64, 64), "tumour_working_shape": (64, 64, 32),
    # hold-outs: parts of (cases, low, high): ventricle enlargement / tumour radius (mm; None: the demo's)
    "ventricle_holdout": ((8, 3.0, 6.0),),
    "tumour_holdout": ((8, None, None),),
    # generated pairs
    "n_generated": 16, "generated_c": (0.0, 1.0), "guidance_scale": 2.0, "qc_rounds": 3,
    # (sampler, steps) of each generator: mask LDM, SPADE LDM (image), slice LDM (tumour): the recipes that
    # hold the quality of the papers' samplers (README "Fewer sampling steps")
    "samplers": {"mask": ("dpm_solver", 5), "image": ("dpm_solver", 15), "tumour": ("ddim", 10)},
    "ventricle_qc": {}, "tumour_qc": {},  # overrides of pair_qc's VentricleQC / TumourQC defaults
    # nnU-Net: AdamW, epochs x 25 iterations per study (scripts/learning_curve.py on a validation split of
    # the real subjects; README "nnU-Net on a CPU schedule"); --nnunet_epochs N sets both studies
    "nnunet_epochs": {"ventricles": 16, "tumours": 16},
    "nnunet_iterations": 25, "nnunet_optimizer": "adamw", "nnunet_lr": 3e-3,
    "nnunet_width": 0.25, "nnunet_seeds": 1,
    # patches per nnU-Net iteration, the same for every training set: the planner's batch grows with the set
    # (2 for 20 cases, 6-8 for 114-160 tumour cases), which gave the larger sets 3-4x the compute of the real
    # set and made the tumour study 2.7 h (README "Equal compute per training set"); None: the planner's
    "nnunet_batch_size": 2,
    "ventricle_variants": ("real", "synthetic", "augmented"),
    "tumour_variants": ("real", "augmented"),
    "domain_randomisation_copies": 2, "classical_copies": 5,
    # image fidelity of the accepted pairs: training steps of the 2.5D feature network, real-vs-real splits
    "fidelity": {"feature_iterations": 400, "resamples": 200},
    # generators_from real: the starter recipes, with the epochs that give about the starters' number of
    # optimiser steps on 20 training subjects instead of their 86-134 (README "Data-scarce protocol"; with
    # half the mask LDM's steps, 600 epochs, its label maps were noise: rho(c, volume) -0.37)
    "scarce_recipes": {
        "ventricle_mask_ldm": {"autoencoder_epochs": 130, "diffusion_epochs": 1000},
        "spade_mri_ldm": {"autoencoder_epochs": 45, "diffusion_epochs": 160},
        # the slice LDM's starter learnt from 114 cases: 5.7x its epochs on 20 (VAE 20 -> 115, diffusion 250 -> 1425,
        # continuation 350 -> 1995); not yet measured on the real set
        "slice_based_ldm_brats": {
            "autoencoder_epochs": 115, "diffusion_epochs": 1425,
            "continuations": [{"diffusion_epochs": 1995, "tumour_loss_weight": 5}],
        },
    },
    # the tumour study's 3D-LDM baseline (variants *_3d_ldm) trains the slice LDM's recipe with this share of its
    # autoencoder epochs: an epoch of the 3D autoencoder on whole volumes took 1.8x one of the slice VAE on the
    # same 114 cases (110 s against 61 s, demo networks), so 0.5 gives both about the same autoencoder compute
    "baseline_autoencoder_epoch_factor": 0.5,
    "device": "cpu",
}  # fmt: skip

#: The main command's scales (``--scale``). ``demo``: minutes on 2 cores, a first look at every
#: stage. ``study``: the papers' segmentation experiments in miniature: real brains with normal
#: ventricles and a hold-out of 24 brains with enlarged ones plus 8 normal ones; a tumour hold-out
#: of 24 cases like the real ones plus 8 larger tumours; twice as many generated pairs as real
#: cases; the controls (``pool``, ``pool_augmented``) and comparators; 3 nnU-Net seeds.
SCALES: dict[str, dict[str, Any]] = {
    "demo": _DEMO,
    "study": {
        **_DEMO,
        "brain_enlargement": (1.0, 2.0),
        "ventricle_holdout": ((24, 4.0, 7.0), (8, 1.0, 2.0)),
        "tumour_holdout": ((24, None, None), (8, 28.0, 34.0)),
        "n_generated": 40, "generated_c": (0.5, 1.25), "guidance_scale": 4.0,
        # validation Dice 0.979 at 400 ventricle iterations, 0.913 at 300 tumour iterations (0.937 at 400, but
        # 21 tumour models of 400 iterations would not fit the study's 2.5 h on 2 cores)
        "nnunet_epochs": {"ventricles": 16, "tumours": 12},
        "nnunet_seeds": 3,
        "ventricle_variants": ("real", "pool", "synthetic", "augmented", "pool_augmented", "real_dr"),
        "tumour_variants": ("real", "pool", "real_classical", "synthetic", "augmented", "augmented_classical",
                            "pool_augmented", "synthetic_3d_ldm", "augmented_3d_ldm"),
    },
}  # fmt: skip


#: The generators whose solver a study chooses (``samplers`` of :data:`SCALES`).
SAMPLED_GENERATORS = ("mask", "image", "tumour")


@dataclass(frozen=True)
class SamplerChoice:
    """One generator's solver and its number of steps.

    Attributes:
        sampler: ``ddim``, ``dpm_solver``, ``pndm`` or ``ddpm`` (``shared.sampling.schedulers.SAMPLERS``).
        steps: sampling steps (network evaluations per sample, twice that with guidance).
    """

    sampler: str
    steps: Positive

    def __post_init__(self) -> None:
        from shared.sampling.schedulers import SAMPLERS

        if self.sampler not in SAMPLERS:
            raise InputError(f"samplers: unknown sampler {self.sampler!r}, expected one of {', '.join(SAMPLERS)}")
        check_fields(self)


@dataclass(frozen=True)
class GenerationSettings:
    """How the generated pairs of a study are asked for and checked.

    Attributes:
        n_generated: pairs per study that pass QC (every synthetic set takes all of them).
        generated_c: ``c`` range of the ventricle requests, in each mask LDM's own normalised units
            (0-1 spans its training data; above 1: larger ventricles than it saw).
        guidance_scale: classifier-free guidance of the mask LDM.
        samplers: ``{"mask" | "image" | "tumour": SamplerChoice}``, the solver of each generator.
        qc_rounds: generation rounds at most; each regenerates the pairs QC rejected.
    """

    n_generated: Positive
    generated_c: tuple[float, float]
    guidance_scale: NonNegative
    samplers: Mapping[str, SamplerChoice]
    qc_rounds: Positive

    def __post_init__(self) -> None:
        check_fields(self)
        low, high = self.generated_c
        if not low <= high:
            raise InputError(f"generated_c: need low <= high, got {self.generated_c}")


@dataclass(frozen=True)
class StudySettings:
    """Everything a study run reads, composed of the parts each stage reads (see :func:`resolve_settings`).

    Attributes:
        scale: the scale the defaults came from.
        seed: seed of the real data, generators, pairs and nnU-Net (seed ``k`` of a variant: ``seed + k``).
        generators_from: :data:`GENERATORS_FROM`.
        brains: the real brains of the ventricle study.
        tumours: the real tumour cases (prepared to the slice LDM's working grid).
        ventricle_holdout, tumour_holdout: the hold-outs, one recipe per part.
        generation: :class:`GenerationSettings`.
        ventricle_qc, tumour_qc: QC tolerances (``pair_qc.py`` defaults with the scale's overrides).
        schedules: per study, nnU-Net's schedule (seeded per model by the stage).
        nnunet_width: factor on nnU-Net's planned features per stage.
        nnunet_seeds: nnU-Net models per variant.
        variants: per study, the training sets (:data:`VARIANTS`).
        domain_randomisation_copies: randomised images per real brain (``real_dr``).
        classical_copies: augmented copies per real tumour case (``*_classical``).
        fidelity: ``feature_iterations`` (2.5D feature network) and ``resamples`` (real-vs-real splits)
            of the image-fidelity stage.
        scarce_recipes: per bundle, config values over its starter recipe for ``generators_from real``.
        baseline_autoencoder_epoch_factor: the 3D-LDM baseline's autoencoder epochs over the slice
            VAE's (its recipe is otherwise the slice LDM's).
        device: ``cpu`` or ``cuda`` for the bundles and nnU-Net.
        pools: per study, a set of the user's the generators learn from (``generators_from pool``;
            without one the generators are weights: the bundle's starter or a named folder).
        generator_weights: per bundle, a folder of weights in the starter layout, used in place of
            the bundle's starter weights (``generators_from pool``).
        generator_recipes: per bundle trained in the run, ``{"preset": name, "overrides": {...}}`` in
            place of its starter recipe: a preset of ``configs/presets/`` or ``paper``
            (the bundle's own configs, the paper's sizes), with config values over it.
    """

    scale: str
    seed: Count
    generators_from: str
    brains: DataSet
    tumours: DataSet
    ventricle_holdout: tuple[DataSet, ...]
    tumour_holdout: tuple[DataSet, ...]
    generation: GenerationSettings
    ventricle_qc: VentricleQC
    tumour_qc: TumourQC
    schedules: Mapping[str, TrainingSchedule]
    nnunet_width: PositiveFloat
    nnunet_seeds: Positive
    variants: Mapping[str, tuple[str, ...]]
    domain_randomisation_copies: Positive
    classical_copies: Positive
    fidelity: Mapping[str, int] = field(default_factory=lambda: {"feature_iterations": 400, "resamples": 200})
    scarce_recipes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    baseline_autoencoder_epoch_factor: PositiveFloat = 0.5
    device: str = "cpu"
    pools: Mapping[str, UserSet] = field(default_factory=dict)
    generator_weights: Mapping[str, str] = field(default_factory=dict)
    generator_recipes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.generators_from not in GENERATORS_FROM:
            raise InputError(
                f"--generators_from {self.generators_from!r}: expected one of {', '.join(GENERATORS_FROM)}"
            )
        check_fields(self)
        for study, variants in self.variants.items():
            allowed = STUDY_VARIANTS[study]
            unknown = [v for v in variants if v not in allowed]
            if unknown or "real" not in variants:
                raise InputError(f"{study} variants {list(variants)}: need 'real' and some of {', '.join(allowed)}")

    def study_variants(self, study: str) -> tuple[str, ...]:
        return tuple(self.variants[study])

    def trained_variants(self, study: str) -> tuple[str, ...]:
        """The variants that get models of their own (the real protocol's aliases share their twin's)."""
        aliases = self.aliases()
        return tuple(v for v in self.study_variants(study) if v not in aliases)

    def aliases(self) -> dict[str, str]:
        """Variants that are another variant's training set in this protocol (``{alias: variant}``)."""
        return dict(REAL_PROTOCOL_ALIASES) if self.generators_from == "real" else {}

    def schedule(self, study: str) -> TrainingSchedule:
        return self.schedules[study]

    def holdout(self, study: str) -> tuple[DataSet, ...]:
        return self.ventricle_holdout if study == "ventricles" else self.tumour_holdout


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"--{name}: two numbers, got {value!r}") from None
    return low, high


def _shape(value: Any, name: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(n) for n in value)
    except (TypeError, ValueError):
        raise InputError(f"--{name}: three whole numbers, got {value!r}") from None
    if len(shape) != 3:
        raise InputError(f"--{name}: three whole numbers, got {value!r}")
    return shape  # type: ignore[return-value]


def _samplers(scale: Mapping[str, Any], given: Any) -> dict[str, SamplerChoice]:
    """The scale's ``(sampler, steps)`` per generator with those of ``--samplers`` over them."""
    if not isinstance(given, Mapping):
        raise InputError(f"--samplers: a dict such as \"{{'mask': ['dpm_solver', 5]}}\", got {given!r}")
    unknown = [k for k in given if k not in SAMPLED_GENERATORS]
    if unknown:
        raise InputError(
            f"--samplers: unknown generator {unknown[0]!r}, expected some of {', '.join(SAMPLED_GENERATORS)}"
        )
    choices = {}
    for generator in SAMPLED_GENERATORS:
        value = given.get(generator, scale[generator])
        if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
            raise InputError(f"--samplers: {generator}: [sampler, steps], got {value!r}")
        sampler, steps = value
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise InputError(f"--samplers: {generator}: steps must be a whole number, got {steps!r}")
        choices[generator] = SamplerChoice(str(sampler), steps)
    return choices


def _holdout_parts(
    parts: Sequence[Sequence[Any]], kind: str, shape: tuple[int, int, int], spacing: Any, seed: int,
    prepared_shape: tuple[int, int, int] | None,
) -> tuple[DemoRecipe, ...]:  # fmt: skip
    """Hold-out recipes ``(n, low, high)``, one per part, with consecutive subject indices of one seed."""
    recipes, first = [], 0
    for part in parts:
        n, low, high = part
        recipes.append(
            DemoRecipe(
                kind, int(n), shape, seed, validation_fraction=0.0, spacing=spacing,
                low=None if low is None else float(low), high=None if high is None else float(high),
                first_index=first, prepared_shape=prepared_shape, prepared_validation_fraction=0.0,
            )
        )  # fmt: skip
        first += int(n)
    return tuple(recipes)


def resolve_settings(scale: str = "demo", **flags: Any) -> StudySettings:
    """The scale's defaults with ``flags`` over them (``None``: the scale's value), checked as a whole.

    Raises:
        InputError: an unknown scale or flag, or a value of the wrong type or range.
    """
    if scale not in SCALES:
        raise InputError(f"--scale {scale!r}: expected one of {', '.join(SCALES)}")
    unknown = sorted(set(flags) - set(SCALES[scale]))
    if unknown:
        raise InputError(f"--{unknown[0]}: not a setting of the main command")
    values = {**SCALES[scale], **{k: v for k, v in flags.items() if v is not None}}
    seed = int(values["seed"])
    shape, tumour_shape = _shape(values["shape"], "shape"), _shape(values["tumour_shape"], "tumour_shape")
    working = _shape(values["tumour_working_shape"], "tumour_working_shape")
    spacing = values["spacing"]
    spacing = tuple(float(s) for s in spacing) if isinstance(spacing, (list, tuple)) else spacing
    low, high = _pair(values["brain_enlargement"], "brain_enlargement")
    brains = DemoRecipe("brains", int(values["n_brains"]), shape, seed, 0.2, spacing, low, high)
    tumours = DemoRecipe("tumours", int(values["n_tumours"]), tumour_shape, seed, 0.2, prepared_shape=working)
    holdout_seed = seed + HOLDOUT_SEED_OFFSET
    epochs = values["nnunet_epochs"]
    epochs = dict(epochs) if isinstance(epochs, Mapping) else dict.fromkeys(STUDIES, epochs)
    schedules = {
        study: TrainingSchedule(
            int(epochs[study]),
            int(values["nnunet_iterations"]),
            2,
            float(values["nnunet_lr"]),
            str(values["nnunet_optimizer"]),
            batch_size=None if values["nnunet_batch_size"] is None else int(values["nnunet_batch_size"]),
        )
        for study in STUDIES
    }
    return StudySettings(
        scale=scale, seed=seed, generators_from=str(values["generators_from"]), brains=brains, tumours=tumours,
        ventricle_holdout=_holdout_parts(values["ventricle_holdout"], "brains", shape, spacing, holdout_seed, None),
        tumour_holdout=_holdout_parts(values["tumour_holdout"], "tumours", tumour_shape, None, holdout_seed, working),
        generation=GenerationSettings(
            int(values["n_generated"]), _pair(values["generated_c"], "generated_c"),
            float(values["guidance_scale"]), _samplers(SCALES[scale]["samplers"], values["samplers"]),
            int(values["qc_rounds"]),
        ),
        ventricle_qc=qc_settings("ventricles", **dict(values["ventricle_qc"])),  # type: ignore[arg-type]
        tumour_qc=qc_settings("tumours", **dict(values["tumour_qc"])),  # type: ignore[arg-type]
        schedules=schedules, nnunet_width=float(values["nnunet_width"]), nnunet_seeds=int(values["nnunet_seeds"]),
        variants={"ventricles": tuple(values["ventricle_variants"]), "tumours": tuple(values["tumour_variants"])},
        domain_randomisation_copies=int(values["domain_randomisation_copies"]),
        classical_copies=int(values["classical_copies"]), fidelity=dict(values["fidelity"]),
        scarce_recipes={k: dict(v) for k, v in values["scarce_recipes"].items()},
        baseline_autoencoder_epoch_factor=float(values["baseline_autoencoder_epoch_factor"]),
        device=str(values["device"]),
    )  # fmt: skip


def with_schedule(settings: StudySettings, **changes: Any) -> StudySettings:
    """``settings`` with other nnU-Net schedule values (e.g. ``initial_lr``) in every study."""
    return replace(settings, schedules={s: replace(v, **changes) for s, v in settings.schedules.items()})
