"""The sampling fast path's switches on tiny networks: outputs close to (or equal to) eager fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.benchmarks.accuracy_guard import compare_outputs, image_psnr, label_dice
from shared.fast_path import FastPath, check_precision, tiled_decode, to_channels_last
from shared.io import InputError, save_volume


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


def test_fast_path_decode_tiles_when_asked_and_checks_the_window_rank():
    decoder = upsampling_decoder(1)
    latent = torch.randn(1, 3, 16, 12, 8)
    with torch.inference_mode():
        whole = FastPath().decode(decoder, latent)
        tiled = FastPath(precision="bf16", decode_roi=[8, 8, 8], decode_overlap=0.5).decode(decoder, latent)
        assert whole.dtype == tiled.dtype == torch.float32
        assert torch.allclose(tiled, whole, atol=0.05)
        with pytest.raises(InputError, match=r"decode_roi: expected 3 sizes for a latent of shape \(1, 3, 16, 12, 8\)"):
            FastPath(decode_roi=[8, 8]).decode(decoder, latent)
    with pytest.raises(InputError, match="decode_roi: expected positive latent window sizes"):
        FastPath(decode_roi=[8, 0, 8])
    assert FastPath("bf16", True, False, [8, 8, 8]).describe() == "bf16, channels-last, tiles [8, 8, 8]"


def test_accuracy_guard_compares_runs_file_by_file(tmp_path):
    affine = np.eye(4)
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (8, 8, 8)).astype(np.float32)
    labels = np.zeros((8, 8, 8), np.int16)
    labels[:4], labels[4:, :4] = 2, 4
    for run, shift, flip in (("fp32", 0.0, 0), ("fast", 0.02, 8)):
        save_volume(tmp_path / run / "images" / "pair_0000.nii.gz", image + shift, affine)
        changed = labels.copy()
        changed[4:, 4:, :flip] = 4  # 4 x 4 x 8 = 128 background voxels become class 4
        save_volume(tmp_path / run / "labels" / "pair_0000.nii.gz", changed, affine)
    result = compare_outputs(tmp_path / "fp32", tmp_path / "fast", data_range=2.0)
    # PSNR of a constant 0.02 error over range 2: 10 log10(4 / 0.0004) = 40 dB
    assert result["samples"] == 1.0 and result["psnr_min"] == pytest.approx(40.0, abs=1e-3)
    # class 2 identical (1.0); class 4: 128 voxels vs 128 + 128 -> 2 * 128 / 384
    assert result["dice_mean"] == pytest.approx((1.0 + 256 / 384) / 2)
    assert label_dice(labels, labels) == 1.0 and image_psnr(image, image, 2.0) == float("inf")
    (tmp_path / "fast" / "labels" / "pair_0000.nii.gz").unlink()
    with pytest.raises(InputError, match=r"pair_0000.nii.gz: missing \(the reference run has pair_0000.nii.gz\)"):
        compare_outputs(tmp_path / "fp32", tmp_path / "fast")


def test_spade_painting_refuses_decode_tiles():
    from shared.sampling.spade_generation import paint_images

    with pytest.raises(InputError, match="tiled decoding is not available for SPADE"):
        paint_images(None, None, None, None, "unused", [0], 0, "unused", fast_path=FastPath(decode_roi=[4, 4, 4]))


def test_slice_pairs_refuse_decode_tiles_that_split_the_slices(tmp_path):
    """Each slice is decoded with its position, so a decode window must span the whole depth."""
    from shared.io import write_json
    from shared.networks.slice_stack import SliceStackAutoencoder
    from shared.networks.slice_vae import SliceVAE
    from shared.sampling.tumour_generation import generate_tumour_pairs

    vae = SliceVAE(channels=(8, 16), latent_channels=3, norm_num_groups=4)
    grid = write_json(tmp_path / "grid.json", {"shape": [16, 16, 8], "affine": np.eye(4).tolist()})
    with pytest.raises(InputError, match=r"decode_roi: the last size must cover all 8 slices .*got \[4, 4, 4\]"):
        generate_tumour_pairs(SliceStackAutoencoder(vae), torch.nn.Identity(), None, None, None, grid, np.zeros((1, 9)),
                              1.0, 0, tmp_path / "out", fast_path=FastPath(decode_roi=[4, 4, 4]))  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch, caplog):
    import shared.fast_path as fast_path

    monkeypatch.setattr(fast_path, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="shared.fast_path"):
        check_precision("bf16", "cpu")
    assert "neither AVX-512-BF16 nor AMX" in caplog.text
    caplog.clear()
    monkeypatch.setattr(fast_path, "cpu_has_native_bf16", lambda: True)
    with caplog.at_level("WARNING", logger="shared.fast_path"):
        check_precision("bf16", "cpu")
    assert caplog.text == ""


def test_preparing_twice_compiles_once():
    network = torch.nn.Linear(2, 2)
    fast = FastPath(compile=True)
    compiled = fast.prepare(network).forward
    assert fast.prepare(network).forward is compiled and not network.training
