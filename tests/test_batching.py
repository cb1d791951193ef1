"""Batched images and batched latent tiles equal the one-at-a-time runs; pipeline API defects of issue 12."""

from __future__ import annotations

import pytest
import torch

from seesr.config import SamplingConfig, TilingConfig
from seesr.pipeline.denoise import GuidedDenoiser, cond_cache_bytes
from seesr.pipeline.pipeline import GeneratorNoise
from tests.tiny_pipeline import build_tiny_pipeline, load_lr

REL = 1e-5


@pytest.fixture(scope="module")
def pipe(fixtures_dir):
    return build_tiny_pipeline(fixtures_dir)


@pytest.fixture(scope="module")
def lrs(fixtures_dir):
    a = load_lr(fixtures_dir, "coffee_48x64")
    b = torch.flip(a, dims=[-1]).contiguous()  # same size, other content
    return a, b


def _close(x: torch.Tensor, ref: torch.Tensor) -> bool:
    return float((x - ref).abs().max()) <= REL * max(1.0, float(ref.abs().max()))


def _sampling(**kw) -> SamplingConfig:
    # float output (no uint8 rounding): compare before quantisation
    settings = {"num_inference_steps": 3, "process_size": 64, "color_fix": "none", **kw}
    return SamplingConfig(**settings)


def test_batch_of_images_equals_each_image_alone(pipe, lrs):
    a, b = lrs
    sampling = _sampling()
    noises = [GeneratorNoise(torch.Generator().manual_seed(s)) for s in (1, 2)]
    batch = pipe(
        [a * 0.999, b * 0.999],
        sampling,
        noise=noises,
        return_trace=True,
        show_progress=False,
    )
    assert isinstance(batch, list) and len(batch) == 2
    for k, (lr, seed) in enumerate(((a * 0.999, 1), (b * 0.999, 2))):
        alone = pipe(
            lr,
            sampling,
            noise=GeneratorNoise(torch.Generator().manual_seed(seed)),
            return_trace=True,
            show_progress=False,
        )
        assert batch[k].tags == alone.tags and batch[k].prompt == alone.prompt
        assert _close(batch[k].trace["decoded"], alone.trace["decoded"])
        assert _close(batch[k].image, alone.image)
    assert not torch.allclose(batch[0].image, batch[1].image)


def test_batch_tensor_and_size_mismatch(pipe, lrs):
    a, b = lrs
    out = pipe(torch.cat([a, b]), _sampling(num_inference_steps=1), show_progress=False)
    assert len(out) == 2 and tuple(out[0].image.shape) == (1, 3, 192, 256)
    with pytest.raises(ValueError, match="one size"):
        pipe([a, a[..., :40]], _sampling(num_inference_steps=1), show_progress=False)
    with pytest.raises(ValueError, match="one source per image"):
        pipe(
            [a, b],
            _sampling(num_inference_steps=1),
            noise=GeneratorNoise(torch.Generator()),
            show_progress=False,
        )


@pytest.mark.parametrize("faithful", [False, True])
def test_tile_batch_equals_one_tile_loop(pipe, lrs, faithful):
    a = lrs[0]
    sampling = _sampling(faithful=faithful, process_size=128)
    outs = []
    for tile_batch in (1, 3):
        tiling = TilingConfig(latent_tile_size=16, latent_tile_overlap=4, tile_batch=tile_batch)
        outs.append(pipe(a, sampling, tiling, return_trace=True, show_progress=False))
    assert outs[0].settings["latent_tiled"]
    last = f"step{sampling.num_inference_steps - 1}/latents_out"
    assert _close(outs[1].trace[last], outs[0].trace[last])
    assert _close(outs[1].trace["decoded"], outs[0].trace["decoded"])  # before any uint8 quantisation
    tiles = [k for k in outs[0].trace if k.startswith("step0/tile")]
    assert len(tiles) > 3 and tiles == [k for k in outs[1].trace if k.startswith("step0/tile")]


def test_condition_embedding_computed_once_per_tile(pipe, lrs, monkeypatch):
    calls = []
    real = pipe.controlnet.embed_condition
    monkeypatch.setattr(pipe.controlnet, "embed_condition", lambda c: calls.append(c.shape) or real(c))
    tiling = TilingConfig(latent_tile_size=16, latent_tile_overlap=4, tile_batch=2)
    out = pipe(lrs[0], _sampling(process_size=128), tiling, return_trace=True, show_progress=False)
    tiles = [k for k in out.trace if k.startswith("step0/tile")]
    assert len(tiles) > 1 and len(calls) == len(tiles)  # 3 steps, yet one embedding per tile


def test_cond_cache_bytes_matches_the_cache(pipe, lrs):
    lr_up = torch.rand(2, 3, 64, 96)
    text = torch.randn(4, 77, 16)
    denoiser = GuidedDenoiser(
        pipe.unet,
        pipe.controlnet,
        lr_up,
        text,
        torch.randn(2, 145, 512),
        _sampling(),
        TilingConfig(),
        (8, 12),
    )
    sched = pipe.scheduler
    denoiser(torch.randn(2, 4, 8, 12), torch.tensor(500), sched)
    assert denoiser.cache_bytes() == cond_cache_bytes(pipe.controlnet, 8, 12, images=2) > 0


def test_noise_source_without_generator_is_refused(pipe, lrs):
    class NoGenerator:
        def randn(self, name, shape):
            return torch.zeros(shape)

    with pytest.raises(ValueError, match="no .generator"):
        pipe(lrs[0], _sampling(num_inference_steps=1), noise=NoGenerator(), show_progress=False)


def test_cpu_offload_is_refused_clearly(pipe):
    assert getattr(pipe, "model_cpu_offload_seq", None) is None
    with pytest.raises(NotImplementedError, match="does not support model CPU offload"):
        pipe.enable_model_cpu_offload()
    with pytest.raises(NotImplementedError, match="sequential CPU offload"):
        pipe.enable_sequential_cpu_offload()


def test_save_pretrained_refuses_unsupported_arguments(pipe, tmp_path):
    with pytest.raises(ValueError, match=r"unsupported argument\(s\) \['variant'\]"):
        pipe.save_pretrained(tmp_path / "a", variant="fp16")
    with pytest.raises(ValueError, match="safetensors only"):
        pipe.save_pretrained(tmp_path / "b", safe_serialization=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_channels_last_gives_the_same_image(pipe, lrs):
    from seesr.pipeline.compile import set_channels_last

    sampling = _sampling(num_inference_steps=2)
    plain = pipe(lrs[0] * 0.999, sampling, return_trace=True, show_progress=False)
    set_channels_last(pipe, True)
    try:
        assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        fast = pipe(lrs[0] * 0.999, sampling, return_trace=True, show_progress=False)
    finally:
        set_channels_last(pipe, False)
    assert _close(fast.trace["decoded"], plain.trace["decoded"])
