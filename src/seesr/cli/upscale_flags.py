"""The flags of `seesr upscale` (argument definitions only; the command lives in :mod:`seesr.cli.upscale`)."""

from __future__ import annotations

import argparse

from seesr.config import PRESETS  # one preset table for the CLI and the UI

#: flag dest -> SamplingConfig field
SAMPLING_FLAGS = {
    "prompt": "prompt",
    "added_prompt": "added_prompt",
    "negative_prompt": "negative_prompt",
    "guidance_scale": "guidance_scale",
    "conditioning_scale": "conditioning_scale",
    "steps": "num_inference_steps",
    "process_size": "process_size",
    "upscale": "upscale",
    "seed": "seed",
    "color_fix": "color_fix",
    "start_point": "start_point",
    "start_timestep": "start_timestep",
    "scheduler": "scheduler",
    "timestep_spacing": "timestep_spacing",
}
TILING_FLAGS = (
    "latent_tile_size",
    "latent_tile_overlap",
    "vae_encoder_tile_size",
    "vae_decoder_tile_size",
    "vae_mode",
    "tile_batch",
)


def _start_timestep(value: str) -> int | str:
    if value == "first":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [0, 999] or 'first', got {value!r}"
        ) from None


def _color_fix(value: str) -> str:
    value = value.lower()
    return "none" if value == "nofix" else value  # "nofix" is the official spelling


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every flag of ``seesr upscale`` on ``p``."""
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", "--output-dir", dest="output", metavar="OUTDIR", help="output folder")

    w = p.add_argument_group("weights")
    w.add_argument("--weights", metavar="DIR", help="folder from `seesr download` / save_pretrained")
    w.add_argument("--sd2", help="SD-2-base folder or hub id (official layout)")
    w.add_argument("--seesr", help="SeeSR folder with unet/ and controlnet/")
    w.add_argument("--ram", help="ram_swin_large_14m.pth")
    w.add_argument("--dape", help="DAPE.pth")
    w.add_argument("--tag-list", dest="tag_list", help="RAM tag list (ram_tag_list.txt)")
    w.add_argument("--thresholds", help="RAM per-class thresholds (ram_tag_list_threshold.txt)")
    w.add_argument("--dape-arch", dest="dape_arch", help="DAPE architecture config (optional)")
    w.add_argument("--turbo-unet", dest="turbo_unet", help="sd-turbo folder for --preset turbo")
    w.add_argument(
        "--no-download",
        dest="no_download",
        action="store_true",
        help="never download, nor let any library call the Hub (HF_HUB_OFFLINE=1): a missing or incomplete "
        "default folder is an error saying what to fetch",
    )
    w.add_argument(
        "--no-dape",
        dest="no_dape",
        action="store_true",
        help="tag with plain RAM instead of DAPE (the folder must keep the raw RAM checkpoint)",
    )

    s = p.add_argument_group("sampling (defaults: the official test_seesr.py)")
    s.add_argument("--preset", choices=sorted(PRESETS), help="named settings; explicit flags override it")
    s.add_argument("--faithful", action="store_true", default=None, help="reproduce every official quirk")
    s.add_argument("--prompt", help="user text after the tags (default empty)")
    s.add_argument(
        "--added-prompt", dest="added_prompt", help="appended text (default 'clean, high-resolution, 8k')"
    )
    s.add_argument("--negative-prompt", dest="negative_prompt", help="CFG negative text")
    s.add_argument("--guidance-scale", dest="guidance_scale", type=float, help="CFG weight (default 5.5)")
    s.add_argument(
        "--conditioning-scale", dest="conditioning_scale", type=float, help="ControlNet scale (1.0)"
    )
    s.add_argument("--steps", "--num-inference-steps", dest="steps", type=int, help="denoising steps (50)")
    s.add_argument("--process-size", dest="process_size", type=int, help="minimum processed side (512)")
    s.add_argument("--upscale", "--scale", dest="upscale", type=float, help="output scale factor (4)")
    s.add_argument("--seed", type=int, help="seed of each image's generator (42)")
    s.add_argument(
        "--sample-times", dest="sample_times", type=int, help="samples per image (1); seeds seed+k"
    )
    s.add_argument(
        "--color-fix",
        "--align-method",
        dest="color_fix",
        type=_color_fix,
        choices=["adain", "wavelet", "none"],
    )
    s.add_argument("--start-point", dest="start_point", choices=["lr", "noise"], help="LR embedding or noise")
    s.add_argument("--start-timestep", dest="start_timestep", type=_start_timestep, help="999 or 'first'")
    s.add_argument("--scheduler", help="ddpm (default), ddim, dpmsolver++, unipc, euler")
    s.add_argument("--timestep-spacing", dest="timestep_spacing", choices=["leading", "trailing", "linspace"])
    s.add_argument("--tags", help="comma-separated tags replacing DAPE's (e.g. 'dog, grass')")
    s.add_argument(
        "--from-json", dest="from_json", metavar="SIDECAR", help="re-run with a sidecar's settings"
    )

    t = p.add_argument_group("tiling")
    t.add_argument(
        "--tile-size", dest="tile_size", type=int, help="latent diffusion tile in pixels (x8 latents)"
    )
    t.add_argument(
        "--latent-tile-size",
        "--latent-tiled-size",
        dest="latent_tile_size",
        type=int,
        help="latent tile (96)",
    )
    t.add_argument(
        "--latent-tile-overlap",
        "--latent-tiled-overlap",
        dest="latent_tile_overlap",
        type=int,
        help="latent overlap (32)",
    )
    t.add_argument(
        "--vae-encoder-tile-size",
        "--vae-encoder-tiled-size",
        dest="vae_encoder_tile_size",
        type=int,
        help="pixels (1024)",
    )
    t.add_argument(
        "--vae-decoder-tile-size",
        "--vae-decoder-tiled-size",
        dest="vae_decoder_tile_size",
        type=int,
        help="latent px (224)",
    )

    t.add_argument(
        "--tile-batch",
        dest="tile_batch",
        type=int,
        help="latent tiles per ControlNet/UNet call (default: 4, else 2, on a GPU when the memory budget allows, "
        "1 on the CPU and with --faithful; more: fewer, bigger calls, more memory)",
    )
    t.add_argument(
        "--vae-mode",
        dest="vae_mode",
        choices=["exact", "bounded"],
        help="tiled VAE: exact (all tiles in memory) or bounded (a few tiles in memory, the others waiting in "
        "files under $SEESR_SPILL_DIR or ~/.cache/seesr/spill, or recomputed when the disk is short; same output); "
        "default: from the budget",
    )

    m = p.add_argument_group("memory plan")
    m.add_argument(
        "--max-memory",
        dest="max_memory",
        metavar="SIZE",
        help="memory budget, e.g. 8GB (default: 60%% of RAM on the CPU, 90%% of the GPU's memory); tile sizes "
        "and the VAE mode are chosen to fit it, and inputs that cannot fit are refused before loading",
    )
    m.add_argument(
        "--plan",
        action="store_true",
        help="print each input's plan (sizes, tiles, VAE mode, predicted memory and time) and exit",
    )

    r = p.add_argument_group("runtime and files")
    r.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    r.add_argument(
        "--split",
        choices=["images", "tiles"],
        default="images",
        help="under torchrun/accelerate: share out the images (default) or every image's latent tiles "
        "(one all-reduce per denoising step; rank 0 writes)",
    )
    r.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], help="auto: fp16 on CUDA, else fp32")
    r.add_argument("--format", help="output format: png (default), jpg, webp (lossless), tif")
    r.add_argument("--bit-depth", dest="bit_depth", type=int, choices=[8, 16], help="output bits (8)")
    r.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    r.add_argument("--allow-truncated", dest="allow_truncated", action="store_true", help="accept cut files")
    r.add_argument(
        "--max-pixels", dest="max_pixels", type=int, help="input pixel cap, checked before decoding"
    )
    r.add_argument(
        "--max-output-pixels",
        dest="max_output_pixels",
        type=int,
        help="output pixel cap (default: none; what cannot fit --max-memory is refused by the plan)",
    )
    r.add_argument("--save-prompts", dest="save_prompts", action="store_true", help="also write txt/NAME.txt")

    f = p.add_argument_group("throughput")
    f.add_argument(
        "--batch-size",
        dest="batch_size",
        type=int,
        help="images of one size per pipeline call (1); each keeps its own seed and equals its lone run up to "
        "float round-off; made smaller when a batch would not fit --max-memory",
    )
    f.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the UNet and ControlNet block by block (minutes on the first call; needs a C compiler "
        "on the CPU; not with --faithful)",
    )
    f.add_argument(
        "--channels-last",
        dest="channels_last",
        action="store_true",
        help="UNet, ControlNet and VAE in channels_last memory format (not with --faithful)",
    )
