"""Smooth random fields defined in world coordinates.

A field is a sum of plane waves with random directions, wavelengths and phases. It is
evaluated analytically at any point, so one seed gives the same anatomy at every grid
size and spacing, and generation costs one pass over the voxels per wave.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WaveField:
    """``f(p) = sum_k a * sin(2 pi <d_k, p> / lambda_k + phi_k)``, scaled so that ``std(f) ~ amplitude``.

    Attributes:
        directions: ``(K, 3)`` unit vectors.
        wavelengths_mm: ``(K,)``.
        phases: ``(K,)`` radians.
        amplitude: target standard deviation of the field.
    """

    directions: np.ndarray
    wavelengths_mm: np.ndarray
    phases: np.ndarray
    amplitude: float

    @classmethod
    def random(
        cls, rng: np.random.Generator, n_waves: int, wavelength_range_mm: tuple[float, float], amplitude: float
    ) -> WaveField:
        """Draw a field: directions uniform on the sphere, wavelengths log-uniform in the range."""
        directions = rng.normal(size=(n_waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        low, high = np.log(wavelength_range_mm[0]), np.log(wavelength_range_mm[1])
        wavelengths = np.exp(rng.uniform(low, high, size=n_waves))
        phases = rng.uniform(0, 2 * np.pi, size=n_waves)
        return cls(directions=directions, wavelengths_mm=wavelengths, phases=phases, amplitude=float(amplitude))

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Evaluate at world points given as three same-shaped arrays (mm); returns float32 of that shape."""
        out = np.zeros(np.shape(x), dtype=np.float32)
        per_wave = np.float32(self.amplitude / np.sqrt(len(self.phases) / 2.0))
        for direction, wavelength, phase in zip(self.directions, self.wavelengths_mm, self.phases):
            k = (2 * np.pi / wavelength) * direction
            out += np.sin(np.float32(k[0]) * x + np.float32(k[1]) * y + np.float32(k[2]) * z + np.float32(phase))
        return out * per_wave
