"""One-shot jobs (generation, evaluation) run as Ignite engines, so bundle handlers and tracking apply.

A config builds the job with MONAI's ``_mode_: callable`` and named arguments, and the engine
checks at parse time that they fit the function (a renamed or missing parameter fails there,
with the function's name, not half-way through a run)::

    job:
      _target_: shared.sampling.mask_generation.generate_label_maps
      _mode_: callable
      autoencoder: "@autoencoder"
      ...
    evaluator:
      _target_: shared.engines.job.JobEngine
      job: "@job"
      summary: "$shared.sampling.mask_generation.manifest_metrics"

``python -m monai.bundle run --tracking mlflow`` adds an ``MLFlowHandler`` to the handlers of the
config item ``evaluator`` (the list under ``handlers``). A bundle's inference is not a loop over
a dataloader, so :class:`JobEngine` wraps the whole job in one iteration: the job's summary
numbers become ``engine.state.metrics`` (logged by MLflow at the end of the epoch) and the files
it writes (mosaic, manifest, plots) are added to every ``MLFlowHandler``'s artifacts.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ignite.engine import Engine


def _add_artifacts(handler: Any, paths: Sequence[str | os.PathLike]) -> None:
    """Append ``paths`` to an ``MLFlowHandler``'s artifacts (logged when the engine completes)."""
    from monai.handlers import MLFlowHandler

    if isinstance(handler, MLFlowHandler):
        handler.artifacts = (*(a for a in handler.artifacts if a), *(os.fspath(p) for p in paths))


def _mark_failed(handler: Any) -> None:
    """End an ``MLFlowHandler``'s open run with status FAILED (a failed job is not left RUNNING)."""
    from monai.handlers import MLFlowHandler

    if isinstance(handler, MLFlowHandler) and handler.cur_run is not None:
        handler.client.set_terminated(handler.cur_run.info.run_id, status="FAILED")
        handler.cur_run = None


def check_call(function: Callable[..., Any], leading: int = 0, what: str = "job") -> None:
    """Refuse ``function`` (a ``functools.partial`` from ``_mode_: callable``) if its arguments do not fit.

    ``leading`` positional arguments are supplied later (a summary gets the job's result). Raises
    ``InputError`` naming the function and the problem: an unknown or missing parameter.
    """
    from shared.io import InputError

    if not isinstance(function, functools.partial):
        if not callable(function):
            raise InputError(f"{what}: expected a callable, got {type(function).__name__}")
        return
    target = function.func
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
    try:
        inspect.signature(target).bind(*([None] * leading), *function.args, **function.keywords)
    except TypeError as error:
        raise InputError(f"{what} {name}: {error}") from None


class JobEngine(Engine):
    """An Ignite engine that runs ``job`` once and records its summary numbers as metrics.

    Args:
        job: called without arguments (a ``functools.partial`` with every argument named);
            returns what ``summary`` reads, or the summary itself when ``summary`` is None.
        summary: called with the job's result; returns scalar summary numbers, e.g.
            ``{"mean_ventricle_ml": 41.2}``.
        handlers: Ignite/MONAI handlers to attach (``StatsHandler``, ``MLFlowHandler``, ...).
        artifacts: files the job writes, handed to every ``MLFlowHandler`` among ``handlers``.

    Raises:
        InputError: at construction (config parse time) if ``job`` or ``summary`` are partials
            whose arguments do not fit their functions.
    """

    def __init__(
        self,
        job: Callable[[], Any],
        summary: Callable[[Any], Mapping[str, float]] | None = None,
        handlers: Iterable[Any] = (),
        artifacts: Sequence[str | os.PathLike] = (),
    ) -> None:
        check_call(job, what="job")
        if summary is not None:
            check_call(summary, leading=1, what="summary")
        super().__init__(self._run_job)
        self.job = job
        self.summary = summary
        self.handlers = list(handlers)
        for handler in self.handlers:
            _add_artifacts(handler, artifacts)
            handler.attach(self)

    def _run_job(self, engine: Engine, _batch: Any) -> dict[str, float]:
        try:
            result = self.job()
            summary = result if self.summary is None else self.summary(result)
        except BaseException:
            for handler in self.handlers:
                _mark_failed(handler)
            raise
        metrics = {name: float(value) for name, value in summary.items()}
        engine.state.metrics.update(metrics)
        return metrics

    def run(self, data: Iterable[Any] | None = None, max_epochs: int | None = 1, **kwargs: Any) -> Any:
        """Run the job once (one iteration, one epoch) unless other ``data`` is given."""
        return super().run([None] if data is None else data, max_epochs=max_epochs, **kwargs)
