"""The sampling fast path's switches on tiny networks: outputs close to (or equal to) eager fp32."""

from __future__ import annotations

import pytest
import torch

from shared.fast_path import FastPath, check_precision, tiled_decode, to_channels_last
from shared.io import InputError


def tiny_mixed_network() -> torch.nn.Module:
    """A 3D block followed by a 2D block on the flattened depth (both layouts in one network)."""

    class Mixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv3d = torch.nn.Sequential(
                torch.nn.Conv3d(2, 8, 3, padding=1), torch.nn.GroupNorm(4, 8), torch.nn.SiLU(), torch.nn.Conv3d(8, 2, 1)
            )
            self.conv2d = torch.nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv3d(x)  # (B, 2, X, Y, Z)
            b, c, h, w, d = y.shape
            slices = y.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)
            return self.conv2d(slices).reshape(b, d, c, h, w).permute(0, 2, 3, 4, 1)

    torch.manual_seed(0)
    return Mixed()


def test_bf16_autocast_stays_close_to_fp32():
    network = tiny_mixed_network().eval()
    x = torch.randn(2, 2, 12, 12, 8)
    with FastPath().inference("cpu"):
        reference = network(x)
    with FastPath(precision="bf16").inference("cpu"):
        fast = network(x)
    assert fast.dtype == torch.bfloat16
    error = (fast.float() - reference).abs().max() / reference.abs().max()
    assert error < 0.03


def test_channels_last_layout_keeps_outputs():
    network = tiny_mixed_network().eval()
    x = torch.randn(1, 2, 12, 12, 8)
    with torch.inference_mode():
        reference = network(x)
    path = FastPath(channels_last=True)
    path.prepare(network)
    assert network.conv3d[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert network.conv2d.weight.is_contiguous(memory_format=torch.channels_last)
    with path.inference("cpu"):
        fast = network(path.layout(x))
    assert torch.allclose(fast, reference, atol=1e-5)


def test_inference_mode_is_on_inside_the_context():
    with FastPath().inference("cpu"):
        assert torch.is_inference_mode_enabled()
    assert not torch.is_inference_mode_enabled()


def test_bad_precisions_are_refused():
    with pytest.raises(InputError, match="precision: expected one of fp32, bf16, fp16, got 'int8'"):
        FastPath(precision="int8")
    with pytest.raises(InputError, match="fp16 needs a CUDA device, got cpu; use bf16 on a CPU"):
        check_precision("fp16", "cpu")
    with pytest.raises(InputError, match="fp16 needs a CUDA device"), FastPath(precision="fp16").inference("cpu"):
        pass


def test_channels_last_leaves_other_ranks_alone():
    network = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Conv3d(1, 2, 3))
    to_channels_last(network)
    assert network[0].weight.is_contiguous()
    assert network[1].weight.is_contiguous(memory_format=torch.channels_last_3d)


def upsampling_decoder(kernel: int) -> torch.nn.Module:
    """x2 upsampling decoder ``(B, 3, *S) -> (B, 1, *(2S))``; ``kernel`` 1: pointwise, 3: with a halo."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv3d(3, 4, 1),
        torch.nn.Upsample(scale_factor=2, mode="nearest"),
        torch.nn.Conv3d(4, 1, kernel, padding=kernel // 2),
    ).eval()


def test_tiled_decoding_of_a_pointwise_decoder_equals_one_shot():
    decoder = upsampling_decoder(1)
    latent = torch.randn(1, 3, 16, 12, 8)
    with torch.inference_mode():
        one_shot = decoder(latent)
        tiled = tiled_decode(decoder, latent, roi_size=(8, 8, 8), overlap=0.5)
    assert tiled.shape == one_shot.shape == (1, 1, 32, 24, 16)
    assert torch.allclose(tiled, one_shot, atol=1e-5)


def test_tiled_decoding_with_a_halo_stays_close_to_one_shot():
    decoder = upsampling_decoder(3)
    latent = torch.randn(1, 3, 16, 16, 8)
    with torch.inference_mode():
        one_shot = decoder(latent)
        tiled = tiled_decode(decoder, latent, roi_size=(8, 8, 8), overlap=0.5)
    # windows see zero padding at their borders; the Gaussian blend keeps that error small (here ~3 %)
    assert (tiled - one_shot).abs().mean() < 0.05 * one_shot.abs().mean()
    interior = (slice(None), slice(None), slice(12, 20), slice(12, 20))  # one window's centre: no border effect
    assert torch.allclose(tiled[interior][..., 6:10], one_shot[interior][..., 6:10], atol=0.05)


def test_tiled_decoding_refuses_a_bad_overlap():
    with pytest.raises(InputError, match=r"decode overlap: expected a value in \[0, 1\), got 1.0"):
        tiled_decode(upsampling_decoder(1), torch.randn(1, 3, 8, 8, 8), roi_size=4, overlap=1.0)
