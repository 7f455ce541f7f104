"""The slice VAE, its slice-stacking 3D view and the tumour-conditioned UNet (docs/method.md, section 4)."""

import pytest
import torch

from shared.networks.slice_stack import SliceStackAutoencoder, slices_to_volume, volume_to_slices
from shared.networks.slice_vae import SliceVAE
from shared.networks.tumour_unet import TumourConditionedUNet


def tiny_vae(position_embedding: bool = True) -> SliceVAE:
    torch.manual_seed(0)
    return SliceVAE(channels=(8, 16), latent_channels=3, norm_num_groups=4, position_embedding=position_embedding)


def tiny_unet(fusion: str) -> TumourConditionedUNet:
    torch.manual_seed(0)
    unet = TumourConditionedUNet(
        in_channels=3, out_channels=3, channels=(8, 16), num_res_blocks=1, norm_num_groups=4, fusion=fusion
    )
    with torch.no_grad():  # MONAI zero-initialises output convolutions; make every path count
        for parameter in unet.parameters():
            parameter.normal_(0.0, 0.1)
    return unet.eval()


@pytest.mark.parametrize("position_embedding", [True, False])
def test_decoder_output_depends_on_slice_index_only_with_position_embedding(position_embedding):
    vae = tiny_vae(position_embedding).eval()
    z = torch.randn(1, 3, 4, 4).repeat(2, 1, 1, 1)
    with torch.no_grad():
        out = vae.decode(z, torch.tensor([0, 40]) if position_embedding else None)
        again = vae.decode(z[:1], torch.tensor([0]) if position_embedding else None)
    assert out.shape == (2, 2, 8, 8)
    assert torch.allclose(out[:1], again, atol=1e-6)
    assert (not torch.allclose(out[0], out[1], atol=1e-4)) == position_embedding


def test_slice_vae_shapes_and_missing_positions():
    vae = tiny_vae()
    recon, mu, sigma = vae(torch.randn(3, 2, 8, 8), torch.tensor([1, 2, 3]))
    assert recon.shape == (3, 2, 8, 8) and mu.shape == sigma.shape == (3, 3, 4, 4)
    with pytest.raises(ValueError, match="pass positions"):
        vae.encode(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="expected 2 slice indices"):
        vae.encode(torch.randn(2, 2, 8, 8), torch.tensor([1]))


def test_volume_slice_round_trip_keeps_depth_order():
    volumes = torch.randn(2, 2, 4, 5, 6)
    slices, positions = volume_to_slices(volumes)
    assert slices.shape == (12, 2, 4, 5)
    assert positions.tolist() == list(range(6)) * 2
    assert torch.equal(slices[7], volumes[1, :, :, :, 1])
    assert torch.equal(slices_to_volume(slices, 2), volumes)


def test_stacked_latents_and_chunked_decoding_equal_one_shot():
    vae = tiny_vae().eval()
    volumes = torch.randn(2, 2, 8, 8, 5)
    with torch.no_grad():
        latents = SliceStackAutoencoder(vae, chunk_size=3).encode_stage_2_inputs(volumes)
        one_shot = SliceStackAutoencoder(vae, chunk_size=100).decode_stage_2_outputs(latents)
        chunked = SliceStackAutoencoder(vae, chunk_size=3).decode_stage_2_outputs(latents)
        slice_3 = vae.decode(latents[1:2, :, :, :, 3], torch.tensor([3]))
    assert latents.shape == (2, 3, 4, 4, 5)
    assert one_shot.shape == (2, 2, 8, 8, 5)
    assert torch.allclose(chunked, one_shot, atol=1e-5)
    assert torch.allclose(one_shot[1:2, :, :, :, 3], slice_3, atol=1e-5)


@pytest.mark.parametrize("fusion", ["scale_shift", "time_embedding"])
def test_unet_output_follows_the_tumour_condition(fusion):
    unet = tiny_unet(fusion)
    x, t = torch.randn(1, 3, 8, 8, 8).repeat(2, 1, 1, 1, 1), torch.tensor([10, 10])
    c = torch.rand(2, 9)
    with torch.no_grad():
        out = unet(x, t, context=c)
        same = unet(x, t, context=c[:1].repeat(2, 1))
        flat = unet(x[:1], t[:1], context=c[:1, None, :])  # (B, 1, 9) is accepted too
    assert out.shape == x.shape
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    assert torch.allclose(same[0], same[1], atol=1e-5)
    assert torch.allclose(flat[0], out[0], atol=1e-5)


def test_unet_refuses_wrong_or_missing_condition():
    unet = tiny_unet("scale_shift")
    x, t = torch.randn(2, 3, 8, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="need 9 values per sample"):
        unet(x, t, context=torch.rand(2, 8))
    with pytest.raises(ValueError, match="pass context"):
        unet(x, t)
    with pytest.raises(ValueError, match="fusion must be one of"):
        TumourConditionedUNet(fusion="concat")


def test_paper_size_parameter_count_is_within_5_percent_of_159m():
    def count(module):
        return sum(p.numel() for p in module.parameters())

    authors = count(SliceVAE(position_embedding=False)) + count(TumourConditionedUNet(fusion="time_embedding"))
    paper = count(SliceVAE(position_embedding=True)) + count(TumourConditionedUNet(fusion="scale_shift"))
    assert abs(authors / 159e6 - 1) < 0.05
    assert abs(paper / 159e6 - 1) < 0.05


@pytest.mark.parametrize("fusion", ["scale_shift", "time_embedding"])
def test_null_condition_is_one_unconditional_prediction_whatever_the_batch(fusion):
    from shared.networks.tumour_unet import null_tumour_condition

    unet = tiny_unet(fusion)
    x, t = torch.randn(1, 3, 8, 8, 8).repeat(2, 1, 1, 1, 1), torch.tensor([10, 10])
    c = torch.rand(2, 9)
    with torch.no_grad():
        mixed = unet(x, t, context=torch.cat([null_tumour_condition(1), c[:1]]))
        nulls = unet(x, t, context=null_tumour_condition(2))
        conditional = unet(x[:1], t[:1], context=c[:1])
    assert torch.isfinite(mixed).all() and torch.allclose(nulls[0], nulls[1], atol=1e-6)
    assert torch.allclose(mixed[0], nulls[0], atol=1e-5)  # a null row in a batch is the null prediction
    assert torch.allclose(mixed[1], conditional[0], atol=1e-5)  # and does not change its neighbours
    assert not torch.allclose(nulls[0], conditional[0], atol=1e-4)
