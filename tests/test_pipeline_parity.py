"""Faithful SeeSRPipeline vs the official pipeline outputs (fixtures §5c, §13; DESIGN.md §8 tolerances).

The pipeline runs from the LR PNG. Only the draw the official code takes from the *global* RNG (the VAE
posterior sample) is injected; the initial noise and every DDPM step noise come from our own seeded CPU generator
and reproduce the official pipeline generator's stream.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from seesr.config import SamplingConfig, TilingConfig
from seesr.pipeline.pipeline import postprocess
from tests.conftest import tolerance
from tests.tiny_pipeline import RecordedNoise, build_tiny_pipeline, load_lr

CASES = {
    "A": ("coffee_48x64", 4, 5.5, TilingConfig(latent_tile_overlap=4)),
    "B": (
        "astronaut_56x80",
        4,
        5.5,
        TilingConfig(
            latent_tile_size=16, latent_tile_overlap=4, vae_encoder_tile_size=128, vae_decoder_tile_size=8
        ),
    ),
    "turbo": ("coffee_48x64", 2, 1.0, TilingConfig(latent_tile_overlap=32)),
}


def _u8(x: torch.Tensor) -> torch.Tensor:
    return (x[0].permute(1, 2, 0) * 255).round().to(torch.int16)


@pytest.fixture(scope="module")
def tiny_pipe(fixtures_dir):
    return build_tiny_pipeline(fixtures_dir)


@pytest.fixture(scope="module")
def tiny_turbo_pipe(fixtures_dir):
    return build_tiny_pipeline(fixtures_dir, turbo=True)


@pytest.mark.parametrize("case", ["A", "B", "turbo"])
def test_faithful_pipeline_matches_official(case, fixtures_dir, request):
    pipe = request.getfixturevalue("tiny_turbo_pipe" if case == "turbo" else "tiny_pipe")
    ref = load_file(fixtures_dir / "reference" / f"pipeline_{case}.safetensors")
    lr_name, steps, guidance, tiling = CASES[case]
    sampling = SamplingConfig(
        num_inference_steps=steps, guidance_scale=guidance, process_size=208, faithful=True, seed=42
    )
    result = pipe(
        load_lr(fixtures_dir, lr_name),
        sampling,
        tiling,
        noise=RecordedNoise(ref["vae_posterior_eps"]),
        return_trace=True,
        show_progress=False,
    )
    tr = result.trace
    assert torch.equal(_u8(tr["lr_up"]).to(torch.uint8), ref["cond_image_u8"]), (
        "condition image not bit-exact"
    )
    assert torch.equal(tr["prompt_input_ids"], ref["prompt_input_ids"])
    assert torch.equal(tr["timesteps"], ref["timesteps"])
    embeds_key = "prompt_embeds" if case == "turbo" else "prompt_embeds_cfg"
    assert (tr["prompt_embeds"] - ref[embeds_key]).abs().max() <= tolerance(ref[embeds_key], 1e-5)
    assert (tr["image_embeds"] - ref["ram_image_embeds"]).abs().max() <= tolerance(
        ref["ram_image_embeds"], 1e-5
    )
    assert (tr["z_lr"] - ref["z_lr"]).abs().max() <= tolerance(ref["z_lr"], 1e-5)
    assert (tr["x_T"] - ref["x_T"]).abs().max() <= tolerance(ref["x_T"], 1e-5)
    eps_key = "eps" if case == "turbo" else "eps_cfg"
    for i in range(steps):
        assert int(tr[f"step{i}/t"]) == int(ref[f"step{i}/t"])
        for ours, theirs in (("eps", eps_key), ("latents_out", "latents_out")):
            want = ref[f"step{i}/{theirs}"]
            err = (tr[f"step{i}/{ours}"] - want).abs().max()
            assert err <= tolerance(want, 1e-4), f"step {i} {ours}: {err}"
    assert (tr["decoded"] - ref["decoded"]).abs().max() <= tolerance(ref["decoded"], 1e-4)
    assert (_u8(tr["pipeline_out"]) - ref["pipeline_out_u8"].to(torch.int16)).abs().max() <= 2
    final = ref["final_adain_u8"] if "final_adain_u8" in ref else ref["adain_u8"]
    assert (_u8(result.image) - final.to(torch.int16)).abs().max() <= 2
    assert result.prompt.endswith(", ,clean, high-resolution, 8k")


@pytest.mark.parametrize("case", ["A", "turbo"])
@pytest.mark.parametrize("method", ["adain", "wavelet", "nofix"])
def test_postprocess_chain_matches_official(case, method, fixtures_dir):
    """Decoded -> rounded uint8 -> colour fix (truncated) -> PIL bicubic to LR x 4, from the reference decode."""
    ref = load_file(fixtures_dir / "reference" / f"pipeline_{case}.safetensors")
    lr_up = ref["cond_image_u8"].permute(2, 0, 1)[None].float() / 255
    final = ref[f"final_{method}_u8"]
    sr, out = postprocess(
        ref["decoded"],
        lr_up,
        "none" if method == "nofix" else method,
        (final.shape[1], final.shape[0]),
        quantize=True,
    )
    assert torch.equal(_u8(sr).to(torch.uint8), ref["pipeline_out_u8"])
    assert (_u8(out) - final.to(torch.int16)).abs().max() == 0
