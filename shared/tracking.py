"""One-shot jobs (generation, evaluation) run as Ignite engines, so bundle handlers and tracking apply.

``python -m monai.bundle run --tracking mlflow`` adds an ``MLFlowHandler`` to the handlers of the
config item ``evaluator`` (the list under ``handlers``). A bundle's inference is not a loop over
a dataloader, so :class:`JobEngine` wraps the whole job in one iteration: the job's summary
numbers become ``engine.state.metrics`` (logged by MLflow at the end of the epoch) and the files
it writes (mosaic, manifest, plots) are added to every ``MLFlowHandler``'s artifacts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ignite.engine import Engine


def run_name(prefix: str) -> str:
    """A tracking run name unique to this launch, e.g. ``inference_20261123_041502``.

    MONAI's ``MLFlowHandler`` without a run name reuses any unfinished run of the experiment
    (an interrupted training, a failed job); a name per launch keeps every run apart while the
    trainer and its validator, parsed from one config, still share theirs.
    """
    return f"{prefix}_{time.strftime('%Y%m%d_%H%M%S')}"


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


class JobEngine(Engine):
    """An Ignite engine that runs ``job`` once and records what it returns as metrics.

    Args:
        job: called without arguments; returns scalar summary numbers, e.g.
            ``{"mean_ventricle_ml": 41.2}``.
        handlers: Ignite/MONAI handlers to attach (``StatsHandler``, ``MLFlowHandler``, ...).
        artifacts: files the job writes, handed to every ``MLFlowHandler`` among ``handlers``.
    """

    def __init__(
        self,
        job: Callable[[], Mapping[str, float]],
        handlers: Iterable[Any] = (),
        artifacts: Sequence[str | os.PathLike] = (),
    ) -> None:
        super().__init__(self._run_job)
        self.job = job
        self.handlers = list(handlers)
        for handler in self.handlers:
            _add_artifacts(handler, artifacts)
            handler.attach(self)

    def _run_job(self, engine: Engine, _batch: Any) -> dict[str, float]:
        try:
            summary = self.job()
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
