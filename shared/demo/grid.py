"""Voxel grids for generated data: shape, spacing, RAS affine and world coordinates."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.io import InputError

#: Field of view (mm) used to derive the spacing when only a shape is given: 64^3 -> 3 mm.
DEFAULT_FOV_MM: tuple[float, float, float] = (192.0, 192.0, 192.0)

#: Smallest grid edge the generators accept (voxels).
MIN_GRID_SIZE = 16
#: Working memory of building one demo case, per voxel (an upper estimate: a few float64 fields at once).
BYTES_PER_VOXEL = 64


def _physical_memory_bytes() -> int:
    """This machine's RAM in bytes (0 where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return 0


@dataclass(frozen=True)
class Grid:
    """A 3D voxel grid centred on the world origin, axes in RAS order (x: left->right,
    y: posterior->anterior, z: inferior->superior).

    Attributes:
        shape: ``(X, Y, Z)`` voxels.
        spacing: voxel size in mm along each axis.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` voxel-to-world matrix; the grid's centre sits at world (0, 0, 0)."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = -(np.asarray(self.shape, dtype=np.float64) - 1) / 2 * np.asarray(self.spacing)
        return affine

    @property
    def fov_mm(self) -> np.ndarray:
        """Field of view in mm per axis, ``(3,)``."""
        return np.asarray(self.shape, dtype=np.float64) * np.asarray(self.spacing)

    def world_coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates (mm) of every voxel centre as three ``(X, Y, Z)`` float32 arrays."""
        axes = [((np.arange(n, dtype=np.float32) - (n - 1) / 2) * s) for n, s in zip(self.shape, self.spacing)]
        x, y, z = np.meshgrid(*axes, indexing="ij")
        return x, y, z


def make_grid(shape: Sequence[int] = (64, 64, 64), spacing: Sequence[float] | float | None = None) -> Grid:
    """Validated :class:`Grid`.

    Args:
        shape: three voxel counts, each at least :data:`MIN_GRID_SIZE`.
        spacing: mm per voxel (one number or three); ``None`` spreads
            :data:`DEFAULT_FOV_MM` over ``shape``.

    Raises:
        InputError: malformed shape or spacing.
    """
    try:
        dims = tuple(int(n) for n in shape)
    except (TypeError, ValueError) as error:
        raise InputError(f"grid shape: expected three integers, got {shape!r}") from error
    if len(dims) != 3 or any(n < MIN_GRID_SIZE for n in dims) or any(n != float(m) for n, m in zip(dims, shape)):
        raise InputError(f"grid shape: expected three integers >= {MIN_GRID_SIZE}, got {tuple(shape)!r}")
    needed = float(np.prod(dims, dtype=np.float64)) * BYTES_PER_VOXEL
    memory = _physical_memory_bytes()
    if memory and needed > memory:
        raise InputError(
            f"grid shape {'x'.join(map(str, dims))}: needs about {needed / 2**30:.0f} GiB to build, "
            f"this machine has {memory / 2**30:.0f} GiB; use a smaller grid"
        )
    if spacing is None:
        sizes = tuple(f / n for f, n in zip(DEFAULT_FOV_MM, dims))
    else:
        values = [spacing] * 3 if np.isscalar(spacing) else list(spacing)  # type: ignore[list-item]
        try:
            sizes = tuple(float(s) for s in values)
        except (TypeError, ValueError) as error:
            raise InputError(f"grid spacing: expected numbers, got {spacing!r}") from error
        if len(sizes) != 3 or not all(np.isfinite(s) and s > 0 for s in sizes):
            raise InputError(f"grid spacing: expected one or three positive numbers (mm), got {spacing!r}")
    return Grid(shape=dims, spacing=sizes)  # type: ignore[arg-type]
