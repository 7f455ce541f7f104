"""Experiment tracking the bundle configs use: MLflow through MONAI's ``MLFlowHandler``, made complete.

``python -m monai.bundle run ... --tracking mlflow`` appends MONAI's ``MLFlowHandler`` to the
engines' handlers; it records a loss per iteration and the engine's own parameters. A
:class:`RecipeTracking` handler in every engine's handler list adds, to that same run:

* the recipe's hyperparameters (sizes, learning rates, steps, guidance, seed) as parameters;
* every scalar ``*loss*`` of the engine's output per iteration, and its mean per epoch (``epoch_<name>``);
* the final weights (and any other files named) as artifacts, once the engine completes;
* the executed config as an artifact, also when ``output_dir`` was given as a plain path (MONAI
  then names it ``"<path> + '/config_<time>.json'"``, a path that does not exist: repaired here);
* the parent run of a chained command (``scripts/generate_pairs.py``), from the environment
  variable :data:`PARENT_RUN_ENV`, as MLflow's ``mlflow.parentRunId`` tag.

Without ``--tracking`` no ``MLFlowHandler`` is attached and this handler does nothing.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

#: Environment variable holding the MLflow run id that chained bundle runs nest under.
PARENT_RUN_ENV = "BRAIN_MRI_SYNTHESIS_PARENT_RUN_ID"
_BROKEN_CONFIG_PATH = re.compile(r"^(?P<folder>.+) \+ '/(?P<name>config_[^']+\.json)'$")


def run_name(prefix: str) -> str:
    """A tracking run name unique to this launch, e.g. ``inference_20261123_041502``.

    MONAI's ``MLFlowHandler`` without a run name reuses any unfinished run of the experiment
    (an interrupted training, a failed job); a name per launch keeps every run apart while the
    trainer and its validator, parsed from one config, still share theirs.
    """
    return f"{prefix}_{time.strftime('%Y%m%d_%H%M%S')}"


def mlflow_handlers(engine: Engine) -> list[Any]:
    """The ``MLFlowHandler`` instances attached to ``engine`` (found through their STARTED callbacks)."""
    from monai.handlers import MLFlowHandler

    found = []
    for callback, *_ in engine._event_handlers.get(Events.STARTED, []):
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, MLFlowHandler) and owner not in found:
            found.append(owner)
    return found


def _scalar_losses(output: Any) -> dict[str, float]:
    """Scalar ``*loss*`` values of an engine output (a dict, or a decollated list of dicts: the first)."""
    if isinstance(output, Sequence) and not isinstance(output, (str, bytes)) and output:
        output = output[0]
    if not isinstance(output, Mapping):
        return {}
    values = {}
    for name, value in output.items():
        if "loss" not in str(name):
            continue
        try:
            number = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError, RuntimeError):
            continue
        if math.isfinite(number):
            values[str(name)] = number
    return values


def repaired_artifact_path(path: str) -> str:
    """MONAI's executed-config artifact ``"/out + '/config_X.json'"`` (a plain ``output_dir``) -> a real path."""
    match = _BROKEN_CONFIG_PATH.match(str(path))
    return os.path.join(match.group("folder"), match.group("name")) if match else str(path)


class RecipeTracking:
    """Adds the recipe, every loss, the weights and the chain's parent to the engine's MLflow run.

    Args:
        params: the recipe's hyperparameters, logged once as run parameters (lists as text).
        artifacts: files to log when the engine completes (the final weights); missing ones are skipped.
        tag: prefix of the run's ``stage`` tag (``train_autoencoder``, ``inference`` ...).
    """

    def __init__(self, params: Mapping[str, Any] | None = None, artifacts: Sequence[str] = (), tag: str = "") -> None:
        self.params = {str(k): v for k, v in (params or {}).items()}
        self.artifacts = [str(a) for a in artifacts]
        self.tag = tag
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._handlers: list[Any] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED(once=1), self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _runs(self) -> list[tuple[Any, str]]:
        return [(h.client, h.cur_run.info.run_id) for h in self._handlers if h.cur_run is not None]

    def _started(self, engine: Engine) -> None:
        """After MONAI's handler opened its run: parameters, tags, and the repaired config path."""
        from mlflow.entities import Param, RunTag

        self._handlers = mlflow_handlers(engine)
        for handler in self._handlers:
            handler.artifacts = [repaired_artifact_path(a) for a in (handler.artifacts or []) if a] or None
        parent = os.environ.get(PARENT_RUN_ENV)
        for client, run_id in self._runs():
            logged = client.get_run(run_id).data.params
            params = [Param(k, str(v)[:6000]) for k, v in self.params.items() if k not in logged]
            tags = [RunTag("stage", self.tag)] if self.tag else []
            if parent and parent != run_id:
                tags.append(RunTag("mlflow.parentRunId", parent))
            client.log_batch(run_id, params=params, tags=tags)

    def _iteration(self, engine: Engine) -> None:
        if not self._handlers:
            return
        from mlflow.entities import Metric

        losses = _scalar_losses(engine.state.output)
        for name, value in losses.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
            self._counts[name] = self._counts.get(name, 0) + 1
        stamp = int(time.time() * 1000)
        metrics = [Metric(f"iteration_{k}", v, stamp, engine.state.iteration) for k, v in losses.items()]
        for client, run_id in self._runs():
            if metrics:
                client.log_batch(run_id, metrics=metrics)

    def _epoch(self, engine: Engine) -> None:
        if not self._handlers:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        means = {name: self._sums[name] / self._counts[name] for name in self._sums}
        own = set(engine.state.metrics)  # an engine that averages its losses itself (VaeGanTrainer) keeps its own
        metrics = [
            Metric(f"epoch_{k}", v, stamp, engine.state.epoch) for k, v in means.items() if f"epoch_{k}" not in own
        ]
        self._sums, self._counts = {}, {}
        for client, run_id in self._runs():
            if metrics:
                client.log_batch(run_id, metrics=metrics)

    def _completed(self, engine: Engine) -> None:
        for client, run_id in self._runs():
            for path in self.artifacts:
                if Path(path).is_file():
                    client.log_artifact(run_id, path, artifact_path="models")
