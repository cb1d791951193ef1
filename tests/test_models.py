"""SeeSRUNet / SeeSRControlNet: parity with the official code, official key set, strict loading (issue 2)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from seesr.errors import WeightsError
from seesr.models.controlnet import SeeSRControlNet
from seesr.models.unet import SD2_BASE_UNET_CONFIG, SeeSRUNet
from tests.conftest import tolerance

SD2_UNET = SD2_BASE_UNET_CONFIG


@pytest.fixture(scope="module")
def tiny(tiny_weights_dir):
    unet = SeeSRUNet.from_pretrained(tiny_weights_dir / "seesr-tiny", subfolder="unet").eval()
    controlnet = SeeSRControlNet.from_pretrained(
        tiny_weights_dir / "seesr-tiny", subfolder="controlnet"
    ).eval()
    return unet, controlnet


@pytest.fixture(scope="module")
def denoiser_ref(fixtures_dir):
    return load_file(fixtures_dir / "reference" / "denoiser.safetensors")


def _run(unet, controlnet, ref):
    with torch.no_grad():
        down, mid = controlnet(
            ref["sample"],
            ref["timestep"],
            ref["encoder_hidden_states"],
            ref["controlnet_cond"],
            image_encoder_hidden_states=ref["image_encoder_hidden_states"],
            conditioning_scale=1.0,
            return_dict=False,
        )
        eps = unet(
            ref["sample"],
            ref["timestep"],
            ref["encoder_hidden_states"],
            image_encoder_hidden_states=ref["image_encoder_hidden_states"],
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
        eps_plain = unet(
            ref["sample"],
            ref["timestep"],
            ref["encoder_hidden_states"],
            image_encoder_hidden_states=ref["image_encoder_hidden_states"],
        ).sample
    return down, mid, eps, eps_plain


def test_denoiser_parity_with_official(tiny, denoiser_ref):
    unet, controlnet = tiny
    down, mid, eps, eps_plain = _run(unet, controlnet, denoiser_ref)
    assert len(down) == 9
    for i, d in enumerate(down):
        ref = denoiser_ref[f"down_block_res_sample_{i:02d}"]
        assert d.shape == ref.shape
        assert (d - ref).abs().max() <= tolerance(ref, 1e-5), f"residual {i}"
    ref_mid = denoiser_ref["mid_block_res_sample"]
    assert (mid - ref_mid).abs().max() <= tolerance(ref_mid, 1e-5)
    assert (eps - denoiser_ref["eps"]).abs().max() <= tolerance(denoiser_ref["eps"], 1e-5)
    ref_plain = denoiser_ref["eps_without_controlnet"]
    assert (eps_plain - ref_plain).abs().max() <= tolerance(ref_plain, 1e-5)


def test_tiny_counts_match_official(tiny):
    unet, controlnet = tiny
    assert len(unet.state_dict()) == 780 and unet.num_rca_modules == 11
    assert sum(p.numel() for p in unet.parameters()) == 623_812
    assert sum(p.numel() for p in unet.rca_parameters()) == 272_320
    assert len(controlnet.state_dict()) == 388 and controlnet.num_rca_modules == 5
    assert sum(p.numel() for p in controlnet.parameters()) == 690_336


def test_rca_requires_soft_prompt_and_bypass_changes_output(tiny, denoiser_ref):
    unet, _ = tiny
    ref = denoiser_ref
    with pytest.raises(ValueError, match="image_encoder_hidden_states"):
        unet(ref["sample"], ref["timestep"], ref["encoder_hidden_states"])
    with torch.no_grad():
        bypassed = unet(ref["sample"], ref["timestep"], ref["encoder_hidden_states"], bypass_rca=True).sample
    assert (bypassed - ref["eps_without_controlnet"]).abs().max() > 1e-3


def _sd2_on_meta():
    with torch.device("meta"):
        unet = SeeSRUNet(**SD2_UNET, use_image_cross_attention=True)
        controlnet = SeeSRControlNet.from_unet(unet, load_weights_from_unet=False)
        stock_unet = UNet2DConditionModel(**SD2_UNET)
        stock_controlnet = ControlNetModel.from_unet(stock_unet, load_weights_from_unet=False)
    return unet, controlnet, stock_unet, stock_controlnet


def _count(model, pred=lambda k: True):
    return sum(p.numel() for k, p in model.named_parameters() if pred(k))


def _rca_keys(prefixes, channels, text_dim=512):
    """The official RCA key names and shapes of spec §2.5 for the given block prefixes."""
    keys = {}
    for prefix, c in zip(prefixes, channels):
        t = f"{prefix}.transformer_blocks.0"
        shapes = {
            "norm.weight": [c],
            "norm.bias": [c],
            "proj_in.weight": [c, c],
            "proj_in.bias": [c],
            "proj_out.weight": [c, c],
            "proj_out.bias": [c],
        }
        for n in ("norm1", "norm2", "norm3"):
            shapes[f"transformer_blocks.0.{n}.weight"] = [c]
            shapes[f"transformer_blocks.0.{n}.bias"] = [c]
        for a in ("attn1", "attn2"):
            kv = text_dim if a == "attn2" else c
            shapes[f"transformer_blocks.0.{a}.to_q.weight"] = [c, c]
            shapes[f"transformer_blocks.0.{a}.to_k.weight"] = [c, kv]
            shapes[f"transformer_blocks.0.{a}.to_v.weight"] = [c, kv]
            shapes[f"transformer_blocks.0.{a}.to_out.0.weight"] = [c, c]
            shapes[f"transformer_blocks.0.{a}.to_out.0.bias"] = [c]
        shapes["transformer_blocks.0.ff.net.0.proj.weight"] = [8 * c, c]
        shapes["transformer_blocks.0.ff.net.0.proj.bias"] = [8 * c]
        shapes["transformer_blocks.0.ff.net.2.weight"] = [c, 4 * c]
        shapes["transformer_blocks.0.ff.net.2.bias"] = [c]
        del t
        keys.update({f"{prefix}.{k}": v for k, v in shapes.items()})
    return keys


def test_sd2_size_key_set_and_parameter_counts():
    unet, controlnet, stock_unet, stock_controlnet = _sd2_on_meta()
    rca = lambda k: ".image_attentions." in k  # noqa: E731
    assert _count(unet) == 1_126_760_324
    assert _count(unet, rca) == 260_849_600
    assert _count(controlnet) == 489_031_440
    assert _count(controlnet, rca) == 124_803_200
    assert unet.num_rca_modules == 16 and controlnet.num_rca_modules == 7

    # non-RCA keys are exactly the stock diffusers ones; RCA keys exactly the official patterns (spec §2.5)
    unet_sd = {k: list(v.shape) for k, v in unet.state_dict().items()}
    assert {k for k in unet_sd if not rca(k)} == set(stock_unet.state_dict())
    down = [
        (f"down_blocks.{b}.image_attentions.{i}", c)
        for b, c in ((0, 320), (1, 640), (2, 1280))
        for i in (0, 1)
    ]
    mid = [("mid_block.image_attentions.0", 1280)]
    up = [
        (f"up_blocks.{b}.image_attentions.{i}", c)
        for b, c in ((1, 1280), (2, 640), (3, 320))
        for i in (0, 1, 2)
    ]
    expected = _rca_keys(*zip(*(down + mid + up)))
    assert {k: v for k, v in unet_sd.items() if rca(k)} == expected

    cn_sd = {k: list(v.shape) for k, v in controlnet.state_dict().items()}
    assert {k for k in cn_sd if not rca(k)} == set(stock_controlnet.state_dict())
    assert {k: v for k, v in cn_sd.items() if rca(k)} == _rca_keys(*zip(*(down + mid)))


def test_save_load_round_trip_is_strict_and_official(tiny, tmp_path):
    unet, controlnet = tiny
    unet.save_pretrained(tmp_path / "unet")
    controlnet.save_pretrained(tmp_path / "controlnet")
    for sub, model in (("unet", unet), ("controlnet", controlnet)):
        assert (tmp_path / sub / "diffusion_pytorch_model.safetensors").is_file()
        config = json.loads((tmp_path / sub / "config.json").read_text())
        assert config["use_image_cross_attention"] is True
        saved = load_file(tmp_path / sub / "diffusion_pytorch_model.safetensors")
        assert set(saved) == set(model.state_dict())
    again = SeeSRUNet.from_pretrained(tmp_path, subfolder="unet")
    for k, v in unet.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_missing_and_unexpected_keys_raise_with_names(tiny_weights_dir, tmp_path):
    folder = tmp_path / "unet"
    shutil.copytree(tiny_weights_dir / "seesr-tiny" / "unet", folder)
    weights = load_file(folder / "diffusion_pytorch_model.safetensors")
    weights.pop("mid_block.image_attentions.0.proj_out.weight")
    weights["bogus.weight"] = torch.zeros(1)
    save_file(weights, folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(WeightsError) as err:
        SeeSRUNet.from_pretrained(folder)
    msg = str(err.value)
    assert "1 missing key(s): mid_block.image_attentions.0.proj_out.weight" in msg
    assert "1 unexpected key(s): bogus.weight" in msg


def test_stock_config_without_rca_flag_is_refused_for_release_weights(tiny_weights_dir, tmp_path):
    """A config that lost use_image_cross_attention must not silently drop the RCA weights."""
    folder = tmp_path / "unet"
    shutil.copytree(tiny_weights_dir / "seesr-tiny" / "unet", folder)
    config = json.loads((folder / "config.json").read_text())
    del config["use_image_cross_attention"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="286 unexpected key"):
        SeeSRUNet.from_pretrained(folder)


def test_bin_weights_load_weights_only(tiny_weights_dir, tmp_path):
    folder = tmp_path / "controlnet"
    folder.mkdir()
    shutil.copy(tiny_weights_dir / "seesr-tiny" / "controlnet" / "config.json", folder)
    sd = load_file(tiny_weights_dir / "seesr-tiny" / "controlnet" / "diffusion_pytorch_model.safetensors")
    torch.save(sd, folder / "diffusion_pytorch_model.bin")
    model = SeeSRControlNet.from_pretrained(folder)
    assert torch.equal(model.state_dict()["controlnet_mid_block.weight"], sd["controlnet_mid_block.weight"])


def test_without_rca_equals_stock_diffusers(fixtures_dir, denoiser_ref):
    config = json.loads((fixtures_dir / "seesr-tiny" / "unet" / "config.json").read_text())
    config["use_image_cross_attention"] = False
    ours = SeeSRUNet.from_config(config).eval()
    stock_config = {k: v for k, v in config.items() if k != "use_image_cross_attention"}
    stock = UNet2DConditionModel.from_config(stock_config).eval()
    full = load_file(fixtures_dir / "seesr-tiny" / "unet" / "diffusion_pytorch_model.safetensors")
    base = {k: v for k, v in full.items() if ".image_attentions." not in k}
    ours.load_state_dict(base, strict=True)
    stock.load_state_dict(base, strict=True)
    ref = denoiser_ref
    with torch.no_grad():
        a = ours(ref["sample"], ref["timestep"], ref["encoder_hidden_states"]).sample
        b = stock(ref["sample"], ref["timestep"], ref["encoder_hidden_states"]).sample
    assert torch.equal(a, b)


def test_controlnet_from_unet_copies_encoder_and_zero_inits_outputs(tiny):
    unet, _ = tiny
    controlnet = SeeSRControlNet.from_unet(unet)
    assert controlnet.num_rca_modules == 5
    assert controlnet.config.use_image_cross_attention is True
    assert controlnet.config.conditioning_embedding_out_channels == (16, 32, 96, 256)
    usd, csd = unet.state_dict(), controlnet.state_dict()
    copied = [k for k in csd if k.split(".")[0] in ("conv_in", "time_embedding", "down_blocks", "mid_block")]
    assert len(copied) > 300 and any(".image_attentions." in k for k in copied)
    for k in copied:
        assert torch.equal(csd[k], usd[k]), k
    for k in csd:
        if k.startswith(
            ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")
        ):
            assert not csd[k].any(), k


def test_turbo_assembly_takes_each_key_from_the_right_file(tiny_weights_dir):
    base = tiny_weights_dir / "sd2turbo-tiny" / "unet"
    seesr = tiny_weights_dir / "seesr-tiny" / "unet"
    model, provenance = SeeSRUNet.from_base_and_rca(base, seesr)
    base_sd = load_file(base / "diffusion_pytorch_model.safetensors")
    seesr_sd = load_file(seesr / "diffusion_pytorch_model.safetensors")
    sd = model.state_dict()
    assert set(provenance) == set(sd) and len(sd) == 780
    rca_keys = [k for k in sd if ".image_attentions." in k]
    assert len(rca_keys) == 286
    for k, v in sd.items():
        src = seesr_sd if k in rca_keys else base_sd
        assert provenance[k].endswith(
            "seesr-tiny/unet/diffusion_pytorch_model.safetensors"
            if k in rca_keys
            else "sd2turbo-tiny/unet/diffusion_pytorch_model.safetensors"
        )
        assert torch.equal(v, src[k]), k
    assert model.config.use_image_cross_attention is True


def test_turbo_assembly_reports_missing_rca(tiny_weights_dir, tmp_path):
    with pytest.raises(WeightsError, match="286 missing key"):
        SeeSRUNet.from_base_and_rca(
            tiny_weights_dir / "sd2turbo-tiny" / "unet", tiny_weights_dir / "sd2turbo-tiny" / "unet"
        )
