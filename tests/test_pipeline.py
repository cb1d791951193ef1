"""SeeSRPipeline behaviour beyond parity: LRE start per scheduler, ablations, seeding, size rules."""

from __future__ import annotations

import pytest
import torch

from seesr.config import SamplingConfig
from seesr.pipeline import schedulers
from seesr.pipeline.sizing import plan_sizes
from tests.tiny_pipeline import build_tiny_pipeline, load_lr


@pytest.fixture(scope="module")
def pipe(tiny_weights_dir):
    return build_tiny_pipeline(tiny_weights_dir)


@pytest.fixture(scope="module")
def lr(tiny_weights_dir):
    return load_lr(tiny_weights_dir, "coffee_48x64")


class Recorder:
    """Stands in for the ControlNet+UNet prediction: records timesteps and returns zeros."""

    def __init__(self):
        self.timesteps, self.soft = [], []

    def __call__(self, latents, t, denoiser, *args, **kwargs):
        self.timesteps.append(float(t))
        self.soft.append(denoiser.embeds)
        return torch.zeros_like(latents)


@pytest.mark.parametrize(
    ("scheduler", "first_t"),
    [("ddpm", 751), ("ddim", 751), ("dpmsolver++", 999), ("unipc", 999), ("euler", 999)],
)
@pytest.mark.parametrize("start", [999, "first"])
def test_lr_latent_start_and_first_denoised_timestep(pipe, lr, monkeypatch, scheduler, first_t, start):
    rec, noised_to = Recorder(), []
    monkeypatch.setattr(pipe, "_predict_noise", rec)
    real = schedulers.noise_lr_latent

    def spy(sched, z, n, t):
        noised_to.append(t)
        return real(sched, z, n, t)

    monkeypatch.setattr(schedulers, "noise_lr_latent", spy)
    sampling = SamplingConfig(
        num_inference_steps=4, scheduler=scheduler, start_timestep=start, process_size=64
    )
    result = pipe(lr, sampling, show_progress=False)
    expected_start = first_t if start == "first" else 999
    assert noised_to == [expected_start]
    assert result.settings["start_timestep"] == expected_start
    assert rec.timesteps[0] == first_t
    assert len(rec.timesteps) == 4


def test_euler_lr_latent_is_in_sigma_space(pipe):
    sched = schedulers.build_scheduler(pipe.scheduler.config, "euler")
    z, n = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 2.0)
    ac = schedulers.alphas_cumprod(sched)[999].double()
    sigma = float(((1 - ac) / ac).sqrt())
    assert torch.allclose(schedulers.noise_lr_latent(sched, z, n, 999), z + sigma * n)
    ddpm = schedulers.build_scheduler(pipe.scheduler.config, "ddpm")
    vp = schedulers.noise_lr_latent(ddpm, z, n, 999)
    assert torch.allclose(vp, float(ac.sqrt()) * z + float((1 - ac).sqrt()) * n, atol=1e-6)


def test_unknown_scheduler_is_a_clear_error(pipe):
    with pytest.raises(ValueError, match="unknown scheduler 'heun'"):
        schedulers.build_scheduler(pipe.scheduler.config, "heun")


@pytest.mark.parametrize(
    ("mode", "soft", "tags_in_prompt"),
    [("full", True, True), ("hard_only", False, True), ("soft_only", True, False), ("none", False, False)],
)
def test_prompt_ablations(pipe, lr, monkeypatch, mode, soft, tags_in_prompt):
    rec = Recorder()
    monkeypatch.setattr(pipe, "_predict_noise", rec)
    calls = []
    real_extract = pipe.extract_prompt
    monkeypatch.setattr(pipe, "extract_prompt", lambda x, **k: calls.append(1) or real_extract(x, **k))
    result = pipe(
        lr, SamplingConfig(num_inference_steps=2, prompt_mode=mode, process_size=64), show_progress=False
    )
    assert all((s is not None) == soft for s in rec.soft)
    assert bool(result.tags) == tags_in_prompt
    assert result.prompt.startswith(", ,") != tags_in_prompt
    assert bool(calls) == (mode != "none")


def test_user_tags_replace_dape_tags(pipe, lr, monkeypatch):
    monkeypatch.setattr(pipe, "_predict_noise", Recorder())
    result = pipe(
        lr, SamplingConfig(num_inference_steps=1, process_size=64), tags=["cat", "sofa"], show_progress=False
    )
    assert result.prompt == "cat, sofa, ,clean, high-resolution, 8k"


def test_start_from_noise_ignores_the_lr_latent(pipe, lr, monkeypatch):
    monkeypatch.setattr(pipe, "_predict_noise", Recorder())
    sampling = SamplingConfig(num_inference_steps=1, start_point="noise", process_size=64)
    result = pipe(lr, sampling, return_trace=True, show_progress=False)
    assert torch.equal(result.trace["x_T"], result.trace["init_noise"])
    assert "z_lr" not in result.trace and result.settings["start_timestep"] is None


def test_same_seed_same_bytes_other_seed_differs(pipe, lr):
    def run(seed):
        s = SamplingConfig(num_inference_steps=2, process_size=64, seed=seed)
        return pipe(lr, s, show_progress=False).image

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_output_size_and_range_with_float_scale(pipe, lr, monkeypatch):
    monkeypatch.setattr(pipe, "_predict_noise", Recorder())
    result = pipe(
        lr, SamplingConfig(num_inference_steps=1, upscale=2.5, process_size=64), show_progress=False
    )
    assert tuple(result.image.shape) == (1, 3, 120, 160)
    assert float(result.image.min()) >= 0 and float(result.image.max()) <= 1


def test_callback_reports_every_step_and_can_cancel(pipe, lr, monkeypatch):
    monkeypatch.setattr(pipe, "_predict_noise", Recorder())
    seen = []
    pipe(
        lr,
        SamplingConfig(num_inference_steps=3, process_size=64),
        callback=lambda i, n: seen.append((i, n)),
        show_progress=False,
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]

    def cancel(i, n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipe(lr, SamplingConfig(num_inference_steps=3, process_size=64), callback=cancel, show_progress=False)


def test_bad_image_values_are_rejected(pipe):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        pipe(torch.full((1, 3, 8, 8), 2.0), SamplingConfig(num_inference_steps=1), show_progress=False)
    with pytest.raises(ValueError, match="shape"):
        pipe(torch.zeros(1, 4, 8, 8), SamplingConfig(num_inference_steps=1), show_progress=False)


@pytest.mark.parametrize(
    ("lr_wh", "upscale", "process", "processed", "target"),
    [
        ((64, 48), 4, 208, (272, 208), (256, 192)),  # enlarged (pipeline_A)
        ((80, 56), 4, 208, (320, 224), (320, 224)),  # not enlarged (pipeline_B)
        ((512, 400), 4, 512, (2048, 1600), (2048, 1600)),  # process_size is a minimum, not a target
        ((1, 1), 4, 512, (512, 512), (4, 4)),
        ((1, 40), 4, 512, (512, 20480), (4, 160)),  # enlarged to short side 128 first
    ],
)
def test_size_rules(lr_wh, upscale, process, processed, target):
    plan = plan_sizes(lr_wh, upscale, process, max_pixels=None)  # the official chain, no refusals
    assert plan.processed == processed and plan.target == target
    assert plan.processed[0] % 8 == 0 and plan.processed[1] % 8 == 0


def test_size_rules_refuse_a_runaway_enlargement_by_default():
    with pytest.raises(ValueError, match="1x40 would be processed at 512x20480"):
        plan_sizes((1, 40), 4, 512)  # 10 Mpx of work for a 4x160 result
    assert plan_sizes((32, 32), 4, 512).processed == (512, 512)  # small photos are still enlarged


def test_save_pretrained_folder_round_trip(pipe, lr, tmp_path, monkeypatch):
    from seesr.pipeline.pipeline import SeeSRPipeline

    pipe.save_pretrained(tmp_path / "w")
    for sub in ("vae", "text_encoder", "tokenizer", "scheduler", "unet", "controlnet", "dape"):
        assert (tmp_path / "w" / sub).is_dir(), sub
    again = SeeSRPipeline.from_pretrained(tmp_path / "w")
    for name in ("unet", "controlnet", "vae", "text_encoder", "dape"):
        a, b = getattr(pipe, name).state_dict(), getattr(again, name).state_dict()
        assert set(a) == set(b), name
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert again.extract_tags(lr) == pipe.extract_tags(lr)


def test_from_pretrained_rejects_unknown_folder(tmp_path):
    from seesr.errors import WeightsError
    from seesr.pipeline.pipeline import SeeSRPipeline

    with pytest.raises(WeightsError, match="not a seesr weights folder"):
        SeeSRPipeline.from_pretrained(tmp_path)


def test_bf16_pipeline_keeps_dape_in_fp32_and_returns_float32(tiny_weights_dir, lr):
    from seesr.pipeline.pipeline import SeeSRPipeline
    from tests.tiny_pipeline import official_parts

    pipe16 = SeeSRPipeline.from_official(**official_parts(tiny_weights_dir), device="cpu", dtype="bf16")
    assert pipe16.unet.dtype == torch.bfloat16 and pipe16.vae.dtype == torch.bfloat16
    assert pipe16.dape.dtype == torch.float32
    result = pipe16(lr, SamplingConfig(num_inference_steps=2, process_size=64), show_progress=False)
    assert result.image.dtype == torch.float32 and bool(torch.isfinite(result.image).all())
    assert result.settings["dtype"] == "bfloat16"


def test_decoder_hands_over_uint8_codes_on_the_8bit_chain(pipe, lr, monkeypatch):
    """Without a trace the tiled decoder writes the output's uint8 codes tile by tile; the image is the same
    bytes as the traced run, which finishes the float decoder output."""
    from seesr.config import TilingConfig
    from seesr.pipeline import pipeline as pl

    lr8 = torch.round(lr * 255) / 255  # an 8-bit image
    seen: list[torch.dtype] = []
    original = pl.finishing.finish_image

    def spy(decoded, *args, **kwargs):
        seen.append(decoded.dtype)
        return original(decoded, *args, **kwargs)

    monkeypatch.setattr(pl.finishing, "finish_image", spy)
    sampling = SamplingConfig(num_inference_steps=1, process_size=64)
    tiling = TilingConfig(vae_decoder_tile_size=8)  # the 24x32 latent in several decoder tiles
    plain = pipe(lr8, sampling, tiling, show_progress=False).image
    traced = pipe(lr8, sampling, tiling, show_progress=False, return_trace=True).image
    assert seen == [torch.uint8, torch.float32]
    assert torch.equal(plain, traced)


def test_adain_result_takes_the_decoder_codes_memory(pipe, lr, monkeypatch):
    """On the 8-bit chain at the output size the finished image is the decoder's uint8 codes array, colour-fixed
    in place (one full-size array after decoding), and the same bytes as the traced run."""
    from seesr.config import TilingConfig
    from seesr.pipeline import pipeline as pl

    lr8 = torch.round(lr * 255) / 255
    pointers: list[int] = []
    original = pl.SeeSRPipeline.decode_latents

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        pointers.append(out.data_ptr())
        return out

    monkeypatch.setattr(pl.SeeSRPipeline, "decode_latents", spy)
    sampling = SamplingConfig(num_inference_steps=1, process_size=64, color_fix="adain")
    for tile in (8, 64):  # tiled decoder, whole decoder
        tiling = TilingConfig(vae_decoder_tile_size=tile)
        plain = pipe(lr8, sampling, tiling, show_progress=False, output_dtype=torch.uint8).image
        assert plain.data_ptr() == pointers[-1], tile
        traced = pipe(lr8, sampling, tiling, show_progress=False, return_trace=True, output_dtype=torch.uint8)
        assert traced.image.data_ptr() != pointers[-1]
        assert torch.equal(plain, traced.image), tile


def test_one_step_keeps_no_condition_embeddings(pipe, lr):
    """The per-tile condition embedding is cached for later steps only: one step recomputes nothing and keeps
    nothing (the cache would be memory without reuse); the noise prediction is the same either way."""
    from seesr.config import TilingConfig
    from seesr.pipeline.denoise import GuidedDenoiser

    sampling = SamplingConfig(num_inference_steps=1, process_size=64)
    tiling = TilingConfig(latent_tile_size=16, latent_tile_overlap=4)
    cond = torch.round(torch.nn.functional.interpolate(lr, scale_factor=4) * 255).to(torch.uint8)
    h, w = cond.shape[-2] // 8, cond.shape[-1] // 8
    text = torch.randn(
        2, 77, pipe.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(0)
    )
    latents = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(999)
    scheduler = schedulers.build_scheduler(pipe.scheduler.config, "ddpm", "trailing")
    eps = {}
    for keep in (True, False):
        den = GuidedDenoiser(
            pipe.unet, pipe.controlnet, cond, text, None, sampling, tiling, (h, w), cache_cond=keep
        )
        with torch.no_grad():
            eps[keep] = den(latents, t, scheduler)
        assert (den.cache_bytes() > 0) is keep
    assert torch.equal(eps[True], eps[False])
