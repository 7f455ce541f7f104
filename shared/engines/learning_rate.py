"""A cosine learning-rate decay that a resumed training continues where it stopped.

Torch's schedulers count their own steps, which a training resumed from a checkpoint (optimiser
and network only) restarts at zero. :class:`CosineLearningRate` sets the rate at the start of every
epoch from the engine's epoch counter alone, so it is the same after a resume.
"""

from __future__ import annotations

import math
from typing import Any

from ignite.engine import Engine, Events


class CosineLearningRate:
    """Ignite handler: ``lr = floor + (base - floor) * (1 + cos(pi * (epoch - 1) / epochs)) / 2`` per epoch.

    Args:
        optimizer: its every parameter group gets the rate.
        base_lr: the rate of the first epoch.
        epochs: the training's epochs (the rate reaches ``floor`` after the last).
        floor: the smallest rate.
        enabled: ``False`` leaves the optimiser's rate alone (a constant rate, the recipe default).
    """

    def __init__(self, optimizer: Any, base_lr: float, epochs: int, floor: float = 0.0, enabled: bool = True) -> None:
        if epochs < 1 or base_lr <= 0 or not 0 <= floor <= base_lr:
            raise ValueError(f"cosine learning rate: need epochs >= 1 and 0 <= floor <= base_lr > 0, got "
                             f"{epochs}, {floor}, {base_lr}")  # fmt: skip
        self.optimizer, self.base_lr, self.epochs, self.floor = optimizer, float(base_lr), int(epochs), float(floor)
        self.enabled = bool(enabled)

    def rate(self, epoch: int) -> float:
        """The rate of ``epoch`` (1-based)."""
        progress = min(max(epoch - 1, 0), self.epochs) / self.epochs
        return self.floor + (self.base_lr - self.floor) * (1.0 + math.cos(math.pi * progress)) / 2.0

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.EPOCH_STARTED, self._set)

    def _set(self, engine: Engine) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.rate(engine.state.epoch)  # ignite counts the epoch before EPOCH_STARTED fires
