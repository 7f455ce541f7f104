"""The sampling fast path: precision, memory layout, compilation and tiled decoding (issue 7).

Every switch is a value in the bundles' inference configs; with the defaults (``fp32``, no
channels-last, no compilation, no tiling) sampling is plain eager fp32, the reference that the
accuracy guard compares against.

- ``precision``: ``fp32``; ``bf16`` (autocast, CPU and CUDA); ``fp16`` (autocast, CUDA only).
- ``channels_last``: 4D weights to ``channels_last`` and 5D weights to ``channels_last_3d``.
- ``compile``: ``torch.compile`` of the network's forward.
- tiled decoding: a latent ``(B, C, *S)`` decoded window by window with MONAI's
  ``sliding_window_inference`` (Gaussian blending), so memory stays bounded on large grids.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from shared.io import InputError

logger = logging.getLogger(__name__)
PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512-BF16 or AMX); without it oneDNN has no bf16 kernels.

    Measured on an AVX2-only AMD EPYC with torch 2.14.1: a bf16 ``Conv3d`` (64 -> 64 channels,
    32^3) fell back to ``slow_conv3d`` and took 32 s against 0.14 s in fp32.
    """
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def check_precision(precision: str, device: torch.device | str) -> None:
    """Refuse an unknown precision, and fp16 off CUDA (CPU autocast in fp16 is slow and lossy)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise InputError(f"precision: fp16 needs a CUDA device, got {torch.device(device)}; use bf16 on a CPU")
    if precision == "bf16" and torch.device(device).type == "cpu" and not cpu_has_native_bf16():
        logger.warning(
            "precision bf16: this CPU has neither AVX-512-BF16 nor AMX, so bf16 convolutions run on slow reference "
            "kernels (10-40x slower than fp32 here); use fp32 (with channels_last) on this machine"
        )


@dataclass(frozen=True)
class FastPath:
    """Switches of the sampling fast path (defaults: plain eager fp32).

    Attributes:
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; CUDA only for fp16).
        channels_last: channels-last memory layout for the networks' weights and inputs.
        compile: wrap each network's forward in ``torch.compile``.
        decode_roi: latent window of tiled decoding (``None``: the whole latent at once).
        decode_overlap: overlap of neighbouring windows, as a fraction of the window.
    """

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    decode_roi: Sequence[int] | None = None
    decode_overlap: float = 0.25

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.decode_roi is not None:
            roi = tuple(int(s) for s in self.decode_roi)
            if not roi or min(roi) < 1:
                raise InputError(f"decode_roi: expected positive latent window sizes, got {self.decode_roi!r}")
            object.__setattr__(self, "decode_roi", roi)
        if not 0.0 <= self.decode_overlap < 1.0:
            raise InputError(f"decode_overlap: expected a value in [0, 1), got {self.decode_overlap}")

    @contextlib.contextmanager
    def inference(self, device: torch.device | str) -> Iterator[None]:
        """``torch.inference_mode`` with autocast at ``precision`` on ``device``."""
        check_precision(self.precision, device)
        with torch.inference_mode():
            if self.precision == "fp32":
                yield
            else:
                with torch.autocast(torch.device(device).type, dtype=AUTOCAST_DTYPES[self.precision]):
                    yield

    def prepare(self, network: torch.nn.Module) -> torch.nn.Module:
        """``network`` in eval mode, with its weights channels-last and its forward compiled if asked."""
        network.eval()
        if self.channels_last:
            to_channels_last(network)
        if self.compile and not getattr(network, "_fast_path_compiled", False):  # once, however often prepared
            network.forward = torch.compile(network.forward)  # type: ignore[method-assign]
            network._fast_path_compiled = True
        return network

    def layout(self, tensor: torch.Tensor) -> torch.Tensor:
        """An input tensor in the memory layout of the prepared networks."""
        return channels_last_tensor(tensor) if self.channels_last else tensor

    def decode(self, decode: Callable[[torch.Tensor], torch.Tensor], latent: torch.Tensor) -> torch.Tensor:
        """``decode(latent)`` as float32, window by window when ``decode_roi`` is set (see :func:`tiled_decode`)."""
        latent = self.layout(latent)
        if self.decode_roi is None:
            return decode(latent).float()
        if len(self.decode_roi) != latent.dim() - 2:
            raise InputError(
                f"decode_roi: expected {latent.dim() - 2} sizes for a latent of shape {tuple(latent.shape)}, "
                f"got {list(self.decode_roi)}"
            )
        return tiled_decode(decode, latent, self.decode_roi, self.decode_overlap).float()

    def describe(self) -> str:
        """One line naming the switches, e.g. ``bf16, channels-last, compiled, tiles [16, 16, 16]``."""
        parts = [self.precision]
        parts += ["channels-last"] if self.channels_last else []
        parts += ["compiled"] if self.compile else []
        parts += [f"tiles {list(self.decode_roi)}"] if self.decode_roi else []
        return ", ".join(parts)


def channels_last_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A 4D tensor as ``channels_last``, a 5D one as ``channels_last_3d``; other ranks unchanged."""
    if tensor.dim() == 4:
        return tensor.contiguous(memory_format=torch.channels_last)
    if tensor.dim() == 5:
        return tensor.contiguous(memory_format=torch.channels_last_3d)
    return tensor


def to_channels_last(network: torch.nn.Module) -> torch.nn.Module:
    """Every 4D/5D parameter and buffer of ``network`` in channels-last layout, in place.

    ``Module.to(memory_format=...)`` takes one rank only; networks mixing 2D and 3D
    convolutions (or with 5D and 4D buffers) need each tensor converted by its own rank.
    """
    for tensor in [*network.parameters(), *network.buffers()]:
        tensor.data = channels_last_tensor(tensor.data)
    return network


def tiled_decode(
    decode: Callable[[torch.Tensor], torch.Tensor],
    latent: torch.Tensor,
    roi_size: Sequence[int] | int,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
) -> torch.Tensor:
    """Decode ``latent`` ``(B, C, *S)`` window by window (``roi_size`` in latent voxels), Gaussian-blended.

    The decoder may upsample (e.g. x4 per axis): MONAI's ``sliding_window_inference`` places
    each decoded window at the scaled position. Choose ``roi_size * overlap`` as an integer so
    the scaled windows align. Returns the decoded volume ``(B, C_out, *(S * factor))``.
    """
    from monai.inferers import sliding_window_inference

    if not 0.0 <= overlap < 1.0:
        raise InputError(f"decode overlap: expected a value in [0, 1), got {overlap}")
    return sliding_window_inference(latent, roi_size, sw_batch_size, decode, overlap=overlap, mode="gaussian")
