"""Stage runner for long multi-step commands, and the main command (``scripts/run_pipeline.py``).

A finished stage leaves a marker ``<output_dir>/.stages/<name>.json`` holding its
parameters (with the keys of the stages it reads) and duration; running the command again
skips it (unless its parameters or inputs changed, or ``force`` is set). Stages write their
outputs atomically, so a run interrupted mid-stage simply redoes that stage next time.

The studies' stages are in :mod:`shared.workflow.stages`, their settings in
:mod:`shared.workflow.settings` and the report in :mod:`shared.workflow.report`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.bounds import Count, Positive, PositiveFloat
from shared.conditioning.tables import TUMOURS, VENTRICLES
from shared.demo.dataset import write_brain_dataset, write_tumour_dataset
from shared.demo.grid import make_grid
from shared.io import InputError, read_datalist, read_json, write_csv, write_json
from shared.workflow.demo_recipes import DemoRecipe
from shared.workflow.settings import STUDIES, StudySettings, resolve_settings

if TYPE_CHECKING:
    from shared.workflow.study_file import Study

logger = logging.getLogger(__name__)


class StageRunner:
    """Runs named stages at most once per set of parameters and inputs.

    A stage's key is its own parameters plus the keys of the stages it reads (``inputs``), so a
    change reaches exactly the stages downstream of it: another nnU-Net learning rate retrains
    nnU-Net and re-evaluates, and keeps the data, generators and pairs.

    Args:
        output_dir: where the ``.stages`` markers live.
        force: rerun every stage even if it finished before.
    """

    def __init__(self, output_dir: str | os.PathLike, force: bool = False) -> None:
        self.marker_dir = Path(output_dir) / ".stages"
        self.force = force
        self.ran: list[str] = []

    def _marker(self, name: str) -> Path:
        return self.marker_dir / f"{name}.json"

    def key(self, name: str) -> str:
        """sha256 of a finished stage's parameters (its inputs' keys included)."""
        marker = self._marker(name)
        try:
            params = read_json(marker)["params"]
        except (InputError, KeyError, TypeError) as error:
            raise RuntimeError(f"stage {name} has not finished; a later stage cannot read it") from error
        return _digest(params)

    def full_params(self, params: dict[str, Any], inputs: Sequence[str] = ()) -> dict[str, Any]:
        """``params`` with the keys of ``inputs``, in their JSON form (tuples as lists), as markers hold them."""
        full = {**params, "inputs": {name: self.key(name) for name in inputs}} if inputs else dict(params)
        return json.loads(json.dumps(full, default=str))

    def is_done(self, name: str, params: dict[str, Any], inputs: Sequence[str] = ()) -> bool:
        """True when ``name`` finished before with exactly ``params`` and the same inputs."""
        marker = self._marker(name)
        if self.force or not marker.is_file():
            return False
        try:
            return read_json(marker).get("params") == self.full_params(params, inputs)
        except InputError:
            return False

    def run(self, name: str, params: dict[str, Any], action: Callable[[], Any], inputs: Sequence[str] = ()) -> bool:
        """Run ``action`` unless the stage is done; returns True when it ran.

        ``inputs``: the stages whose outputs it reads (finished before it).
        """
        if self.is_done(name, params, inputs):
            logger.info("[%s] already done, skipped", name)
            return False
        full = self.full_params(params, inputs)
        logger.info("[%s] running", name)
        self._marker(name).unlink(missing_ok=True)  # an interrupted rerun must not look done
        start = time.perf_counter()
        try:
            action()
        except KeyboardInterrupt:
            logger.info("[%s] interrupted after %.1f s; it is redone (or resumed) by the next run", name,
                        time.perf_counter() - start)  # fmt: skip
            raise
        seconds = time.perf_counter() - start
        finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(self._marker(name), {"params": full, "seconds": round(seconds, 2), "finished": finished})
        self.ran.append(name)
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


def _digest(params: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


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
    generators_from: str | None = None,
    n_brains: Count | None = None,
    n_tumours: Count | None = None,
    shape: Sequence[Positive] | None = None,
    spacing: Sequence[PositiveFloat] | PositiveFloat | None = None,
    tumour_shape: Sequence[Positive] | None = None,
    seed: Count | None = None,
    branches: str | Sequence[str] | None = None,
    n_generated: Positive | None = None,
    samplers: Mapping[str, Sequence[Any]] | None = None,
    qc_rounds: Positive | None = None,
    nnunet_epochs: Positive | None = None,
    nnunet_iterations: Positive | None = None,
    nnunet_seeds: Positive | None = None,
    nnunet_optimizer: str | None = None,
    nnunet_lr: PositiveFloat | None = None,
    device: str | None = None,
    study: str | os.PathLike | None = None,
    force: bool = False,
    tracking_uri: str | None = None,
) -> Path:
    """The whole story on the built-in demo data, at ``--scale demo`` or ``study``; returns the report's path.

    A scale is a study file shipped with the project (``scripts/studies/<scale>.yaml``); the
    flags here are values over its settings, and the run writes the study as resolved to
    ``<output_dir>/study.yaml`` (``--study`` reruns it). ``--study`` runs the user's own file.

    Stages: ``demo_brains``, ``demo_tumours``, ``conditions``; then per study (``--branches``,
    default both; ``none`` stops after the data): the ventricle study (hold-out brains of
    subjects no model saw; the mask and SPADE generators; pairs generated towards enlarged
    ventricles and checked by QC; one nnU-Net set per variant; the design check of every data
    ledger against the hold-out, which fixes the hold-out bins; one small nnU-Net per set and
    seed; evaluation) and the tumour study (the slice-based LDM, the same steps); ``report``.
    Every default comes from the scale (``shared.workflow.settings.SCALES``); a flag given here
    replaces it. Finished stages are skipped when run again with the same parameters and inputs
    (see :class:`StageRunner`); an interrupted stage is redone (bundle and nnU-Net training
    resume from their last checkpoint).

    Args:
        output_dir: where everything goes (data, models, generated pairs, nnU-Net folders,
            report); default ``outputs/<scale>``.
        scale: ``demo`` (~14 min on 2 cores) or ``study`` (the papers' experiments in miniature,
            with the ``pool`` control and 3 nnU-Net seeds; 1-2 hours per study and protocol, the tumour
            study with ``--generators_from real`` about 2.7 hours: it trains the 3D-LDM baseline too).
        generators_from: ``pool`` (scale default: the starter weights, trained on their own pool
            of labelled data, which the ``pool`` variants use as a control) or ``real`` (every
            generator trained on the real training subjects only: the data-scarce protocol;
            about 40 min of generator training per study on 2 cores).
        n_brains: real training brains of the ventricle study (scale: 20; ventricle enlargement
            1-5 at demo, 1-2, normal ventricles, at study).
        n_tumours: real tumour cases of the tumour study (scale: 20).
        shape: grid of the demo brains ``X, Y, Z`` (scale: 32,32,32; the starter weights' grid
            unless ``--generators_from real``).
        spacing: voxel size (mm) of the brains, one value or three; default: the demo's
            192 mm field of view over ``shape`` (6 mm at 32^3).
        tumour_shape: grid of the raw demo tumour cases (scale: 64,64,64; prepared to the slice
            LDM's 64x64x32).
        seed: seed of the demo data, every generator and nnU-Net's training (scale: 0; the
            hold-outs use seed + 1000: other subjects).
        branches: studies to run, comma separated: ``ventricles``, ``tumours``; ``none`` for the data only.
        n_generated: synthetic pairs per study that pass QC (scale: 16; 40 = 2x the real cases).
        samplers: ``(sampler, steps)`` of some generators over the scale's: ``mask`` (the mask LDM),
            ``image`` (the SPADE LDM), ``tumour`` (the slice LDM); e.g. ``"{'tumour': ['ddim', 5]}"``.
            Samplers: ``ddim``, ``dpm_solver``, ``pndm``, ``ddpm``. Scale: DPM-Solver++ 5 for masks,
            DPM-Solver++ 15 for images, DDIM 10 for tumours (the README's "Fewer sampling steps": each
            holds its paper's quality).
        qc_rounds: generation rounds at most; each regenerates the pairs QC rejected (scale: 3).
        nnunet_epochs: nnU-Net epochs per model, one value for both studies (scale: 16 x 25 = 400
            iterations, past the knee of the learning curve on a validation split of the real
            subjects; at study scale tumours get 12, 300 iterations, 0.024 Dice below 400, to fit
            the study's budget; README).
        nnunet_iterations: nnU-Net training iterations per epoch (scale: 25).
        nnunet_seeds: nnU-Net models per variant, seeds ``seed``, ``seed + 1`` ... (scale: 1; 3).
        nnunet_optimizer: ``adamw`` (scale default; learns in a few hundred iterations) or ``sgd``
            (nnU-Net's own, for its full schedule: ``--nnunet_epochs 1000 --nnunet_iterations 250 --nnunet_lr 0.01``).
        nnunet_lr: nnU-Net's initial learning rate (scale: 3e-3).
        device: ``cpu`` (scale default) or ``cuda`` for the bundles and nnU-Net.
        study: a study file (YAML; ``docs/your_own_data.md``): the user's own data, the scale, the
            studies and any setting, checked as a whole before anything is written. With it, give
            only ``--output_dir`` (default ``outputs/<study file name>``) and ``--force``; the run
            writes the study as resolved to ``<output_dir>/study.yaml``.
        force: rerun every stage even when it finished before.
        tracking_uri: an MLflow tracking URI (e.g. ``sqlite:///mlruns.db``): the run logs its report
            (``report.md``, ``report.html``, ``figures.json``, ``study.yaml``, the plots) as artifacts and
            each variant's hold-out Dice as a metric; default: no tracking. Also with ``--study``.
    """
    if not isinstance(force, bool):
        raise InputError(f"--force: a flag (true/false), got {force!r}")
    flags = {"generators_from": generators_from, "n_brains": n_brains, "n_tumours": n_tumours, "shape": shape,
             "spacing": spacing, "tumour_shape": tumour_shape, "seed": seed, "n_generated": n_generated,
             "samplers": samplers, "qc_rounds": qc_rounds, "nnunet_epochs": nnunet_epochs,
             "nnunet_iterations": nnunet_iterations, "nnunet_seeds": nnunet_seeds,
             "nnunet_optimizer": nnunet_optimizer, "nnunet_lr": nnunet_lr, "device": device}  # fmt: skip
    flags = {name: value for name, value in flags.items() if value is not None}
    if study is not None:
        beside = [*(["scale"] if scale != "demo" else []), *flags, *(["branches"] if branches is not None else [])]
        if beside:
            raise InputError(f"--{beside[0]}: with --study, set it in the study file (its settings), not beside it")
        return run_study_file(study, output_dir, force, tracking_uri)
    from shared.workflow.study_file import load_study, scale_study_file

    resolve_settings(scale, **flags)  # a bad flag is named as the flag (--shape ...), not as a study-file key
    chosen = load_study(scale_study_file(scale), flags, _studies(branches) if branches is not None else None)
    output_dir = Path(f"outputs/{scale}" if output_dir is None else output_dir).resolve()
    return run_study(chosen, output_dir, force, tracking_uri)


def run_study_file(
    path: str | os.PathLike, output_dir: str | os.PathLike | None = None, force: bool = False,
    tracking_uri: str | None = None,
) -> Path:  # fmt: skip
    """The main command for a study file (see :mod:`shared.workflow.study_file`); returns the report's path."""
    from shared.workflow.study_file import load_study

    study = load_study(path)
    output_dir = Path(f"outputs/{study.path.stem}" if output_dir is None else output_dir).resolve()
    return run_study(study, output_dir, force, tracking_uri)


def run_study(study: Study, output_dir: Path, force: bool = False, tracking_uri: str | None = None) -> Path:
    """Run a checked study; returns the report's path.

    The study as resolved (every default filled in) is written to ``<output_dir>/study.yaml``
    before the first stage, so the run can be repeated exactly with ``--study <output_dir>/study.yaml``.
    With ``tracking_uri`` the report is logged to MLflow at the end (:mod:`shared.workflow.report_tracking`).
    """
    from shared.workflow.report_tracking import check_tracking_uri, log_report
    from shared.workflow.study_file import write_resolved

    check_tracking_uri(tracking_uri)
    check_before_writing(study.settings, study.studies)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_resolved(study, output_dir)
    report = _run_stages(output_dir, study.settings, study.studies, force)
    if tracking_uri is not None:
        run_id = log_report(output_dir, tracking_uri, study.settings.scale, study.studies)
        logger.info("report logged to MLflow run %s (%s)", run_id, tracking_uri)
    return report


def check_before_writing(settings: StudySettings, studies: Sequence[str]) -> None:
    """The checks a run makes before it writes anything: the grids, the starter weights' grid, each study's plan."""
    from shared.workflow.design import generator_source, plan_study, weights_folder
    from shared.workflow.stages import MASK_BUNDLE, SPADE_BUNDLE, check_starter_grid

    brains, tumours = settings.brains, settings.tumours
    make_grid(brains.shape, brains.spacing)
    make_grid(tumours.shape, None if isinstance(tumours, DemoRecipe) else tumours.spacing)
    if "ventricles" in studies:
        for bundle in (MASK_BUNDLE, SPADE_BUNDLE):
            if generator_source(settings, "ventricles", bundle.name) in ("starter", "weights"):
                where = "--shape" if isinstance(brains, DemoRecipe) else "data.ventricles.grid.shape"
                check_starter_grid(weights_folder(settings, bundle.name), list(brains.shape), where)
    for study in studies:
        plan_study(settings, study)  # the starter ledgers exist and the variants are known


def run_studies(output_dir: Path, settings: StudySettings, studies: Sequence[str], force: bool = False) -> Path:
    """The main command's stages for resolved ``settings`` (see :func:`run_demo_pipeline`); returns the report."""
    check_before_writing(settings, studies)
    return _run_stages(output_dir, settings, studies, force)


def _run_stages(output_dir: Path, settings: StudySettings, studies: Sequence[str], force: bool) -> Path:
    """:func:`run_studies` for settings :func:`check_before_writing` has passed."""
    from shared.workflow.report import write_report
    from shared.workflow.stages import read_every_set_first, run_tumour_study, run_ventricle_study

    brains, tumours = settings.brains, settings.tumours
    runner = StageRunner(output_dir, force=force)
    data = output_dir / "data"
    if isinstance(brains, DemoRecipe):
        write_brains = lambda: write_brain_dataset(  # noqa: E731
            data / "brains", brains.n_cases, brains.shape, brains.spacing, brains.seed, (brains.low, brains.high)
        )
    else:
        write_brains = lambda: brains.write_raw(data / "brains")  # noqa: E731
    runner.run("demo_brains", brains.params(), write_brains)
    if isinstance(tumours, DemoRecipe):
        tumour_params = {"n": tumours.n_cases, "shape": list(tumours.shape), "seed": tumours.seed}
        write_tumours = lambda: write_tumour_dataset(  # noqa: E731
            data / "tumours", tumours.n_cases, tumours.shape, None, tumours.seed
        )
    else:  # on the working grid; the tumour study's prepare_tumours stage prepares them for the slice LDM
        tumour_params, write_tumours = tumours.params(), lambda: tumours.write_raw(data / "tumours")
    runner.run("demo_tumours", tumour_params, write_tumours)
    read_every_set_first(runner, output_dir, settings, studies)  # a bad hold-out case stops the run here
    runner.run(
        "conditions", {},
        lambda: write_condition_tables(data / "brains" / "datalist.json", data / "tumours" / "datalist.json",
                                       output_dir / "conditions"),
        inputs=("demo_brains", "demo_tumours"),
    )  # fmt: skip
    read_by_report = ["conditions"]
    if "ventricles" in studies:
        read_by_report += run_ventricle_study(runner, output_dir, settings)
    if "tumours" in studies:
        read_by_report += run_tumour_study(runner, output_dir, settings)
    runner.run(
        "report", {"studies": studies, "settings": repr(settings)},
        lambda: write_report(output_dir, settings, studies, stage_time_lines(runner)),
        inputs=tuple(read_by_report),
    )  # fmt: skip
    return output_dir / "report.md"
