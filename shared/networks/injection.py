"""Injecting a per-sample embedding into an existing MONAI network without rewriting its forward.

MONAI's ``AutoencoderKL`` and ``DiffusionModelUNet`` build their blocks once and run them in
their own ``forward``. To give them an extra input (a slice position, a tumour feature vector)
the owning network puts the embedding ``(B, E)`` into an :class:`EmbeddingSlot` for the
duration of one forward pass, and small wrapper modules, swapped in for a block's layers, read
it from there:

- :class:`AddProjectedEmbedding` wraps a convolution: ``conv(x) + Linear(SiLU(e))`` (per channel);
- :class:`ScaleShiftNorm` wraps a normalisation: ``norm(x) * (1 + scale) + shift`` with
  ``(scale, shift) = Linear(SiLU(e))`` (the "scale-shift norm" of improved DDPM);
- :class:`AddEmbedding` wraps an embedding layer: ``layer(t) + e``.

The slot is plain Python state (not a parameter), so state dicts hold only the wrappers' weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class EmbeddingSlot:
    """Holds the embedding ``(B, E)`` of the forward pass in progress."""

    def __init__(self) -> None:
        self._value: torch.Tensor | None = None

    @contextmanager
    def holding(self, value: torch.Tensor) -> Iterator[None]:
        """Make ``value`` available to the wrappers while the block runs."""
        previous, self._value = self._value, value
        try:
            yield
        finally:
            self._value = previous

    @property
    def value(self) -> torch.Tensor:
        """The current embedding; outside :meth:`holding` this is a programming error."""
        if self._value is None:
            raise RuntimeError("embedding slot read outside a forward pass that provides the embedding")
        return self._value


def _per_channel(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` -> ``(B, C, 1, ...)`` broadcastable against ``like`` ``(B, C, *spatial)``."""
    return values.to(like.dtype).reshape(*values.shape, *([1] * (like.ndim - 2)))


class AddProjectedEmbedding(nn.Module):
    """``layer(x) + Linear(SiLU(e))``: an embedding added per channel after ``layer``.

    Args:
        layer: module whose output ``(B, channels, *spatial)`` receives the embedding.
        channels: output channels of ``layer``.
        embedding_dim: ``E``.
        slot: where the owning network puts ``e`` ``(B, E)``.
    """

    def __init__(self, layer: nn.Module, channels: int, embedding_dim: int, slot: EmbeddingSlot) -> None:
        super().__init__()
        self.layer = layer
        self.projection = nn.Sequential(nn.SiLU(), nn.Linear(embedding_dim, channels))
        self.slot = slot

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer(x)
        return h + _per_channel(self.projection(self.slot.value), h)


class ScaleShiftNorm(nn.Module):
    """``norm(x) * (1 + scale) + shift`` with ``(scale, shift)`` projected from the embedding.

    Args:
        norm: the block's normalisation layer (``GroupNorm`` over ``channels``).
        channels: channels normalised by ``norm``.
        embedding_dim: ``E``.
        slot: where the owning network puts ``e`` ``(B, E)``.
    """

    def __init__(self, norm: nn.Module, channels: int, embedding_dim: int, slot: EmbeddingSlot) -> None:
        super().__init__()
        self.norm = norm
        self.projection = nn.Sequential(nn.SiLU(), nn.Linear(embedding_dim, 2 * channels))
        self.slot = slot

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        scale, shift = self.projection(self.slot.value).chunk(2, dim=1)
        return h * (1 + _per_channel(scale, h)) + _per_channel(shift, h)


class AddEmbedding(nn.Module):
    """``layer(t) + e``: the embedding added to another embedding (e.g. the timestep embedding)."""

    def __init__(self, layer: nn.Module, slot: EmbeddingSlot) -> None:
        super().__init__()
        self.layer = layer
        self.slot = slot

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = self.layer(t)
        return h + self.slot.value.to(h.dtype)
