"""Frozen run configurations (DESIGN.md §2.3): what travels with a run, not with the weights.

Every config is a frozen dataclass. ``config_from_dict`` builds one from a plain mapping (e.g. parsed YAML or a
sidecar JSON) and rejects unknown keys, so a typo in a config file is an error instead of a silently ignored knob.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

ColorFix = Literal["adain", "wavelet", "none"]
StartPoint = Literal["lr", "noise"]
PromptMode = Literal["full", "hard_only", "soft_only", "none"]


@dataclass(frozen=True)
class SamplingConfig:
    """How one image is sampled (spec §1.1, §1.3, §1.5; DESIGN.md §8 for defaults).

    Attributes:
        num_inference_steps: denoising steps (official 50).
        guidance_scale: classifier-free guidance weight; CFG is on iff > 1.
        conditioning_scale: multiplier of the ControlNet residuals.
        upscale: output size = LR size x upscale (any float > 0).
        process_size: minimum processed side; smaller inputs are enlarged first (spec §1.3 step 4).
        prompt: user text inserted after the tags.
        added_prompt: text appended to the prompt.
        negative_prompt: text of the unconditional CFG branch.
        start_point: "lr" = LR embedding (LRE, noised LR latent); "noise" = pure noise (paper Table 5 ablation).
        start_timestep: timestep the LR latent is noised to: 999 (official) or "first" (the scheduler's first step).
        scheduler: "ddpm" (official) or one of "ddim", "dpmsolver++", "unipc", "euler".
        timestep_spacing: None keeps the scheduler config's spacing; else "leading", "trailing", "linspace".
        color_fix: "adain" (official default), "wavelet" or "none".
        prompt_mode: "full" (tags + soft prompt), "hard_only" (RCA bypassed), "soft_only" (empty tag text),
            "none" (no DAPE: no tags, RCA bypassed) — the paper's ablations.
        faithful: reproduce every official quirk (spec §9 items 1, 2, 8, 9, 12).
        seed: seed of the per-image generator (a fresh generator per image, order-independent).
    """

    num_inference_steps: int = 50
    guidance_scale: float = 5.5
    conditioning_scale: float = 1.0
    upscale: float = 4.0
    process_size: int = 512
    prompt: str = ""
    added_prompt: str = "clean, high-resolution, 8k"
    negative_prompt: str = "dotted, noise, blur, lowres, smooth"
    start_point: StartPoint = "lr"
    start_timestep: int | str = 999
    scheduler: str = "ddpm"
    timestep_spacing: str | None = None
    color_fix: ColorFix = "adain"
    prompt_mode: PromptMode = "full"
    faithful: bool = False
    seed: int = 42

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if not self.upscale > 0:
            raise ValueError(f"upscale must be > 0, got {self.upscale}")
        if self.process_size < 8:
            raise ValueError(f"process_size must be >= 8, got {self.process_size}")
        _check_choice("start_point", self.start_point, ("lr", "noise"))
        _check_choice("color_fix", self.color_fix, ("adain", "wavelet", "none"))
        _check_choice("prompt_mode", self.prompt_mode, ("full", "hard_only", "soft_only", "none"))
        if isinstance(self.start_timestep, str):
            _check_choice("start_timestep", self.start_timestep, ("first",))
        elif not 0 <= int(self.start_timestep) < 1000:
            raise ValueError(f"start_timestep must be in [0, 999] or 'first', got {self.start_timestep}")


@dataclass(frozen=True)
class TilingConfig:
    """Tiled latent diffusion and tiled VAE (spec §1.7, §1.8).

    Attributes:
        latent_tile_size: latent tile side (x8 pixels); official 96.
        latent_tile_overlap: latent overlap; default 32 (>= 25 % of the tile, DESIGN.md §8); official 4.
        vae_encoder_tile_size: encoder tile side in image pixels (official 1024).
        vae_decoder_tile_size: decoder tile side in latent pixels (official 224).
        vae_mode: "exact" (GroupNorm-synchronised tiles, all alive at once; official) or "bounded" (one tile in
            memory at a time: memory independent of the image size).
        vae_bounded_stats: how the bounded mode gets the shared GroupNorm statistics: "spill" (the exact algorithm
            with the tiles parked in files between GroupNorms: bit-identical output, disk traffic), "recompute"
            (exact by recomputation: bit-identical output, no disk, about 5-12x the VAE time) or "sampled" (from
            ``vae_live_tiles`` tiles; about 1-1.5x the time, approximate).
        vae_live_tiles: bounded mode: most tiles' activations in memory at once ("spill": the rest wait in
            files; "sampled": the tiles the statistics come from; "recompute" always holds one).
        tile_batch: latent tiles of equal size run together in one ControlNet/UNet call (1 = one at a time;
            larger trades memory for fewer, bigger calls; results equal up to float round-off).
    """

    latent_tile_size: int = 96
    latent_tile_overlap: int = 32
    vae_encoder_tile_size: int = 1024
    vae_decoder_tile_size: int = 224
    vae_mode: str = "exact"
    vae_bounded_stats: str = "spill"
    vae_live_tiles: int = 4
    tile_batch: int = 1

    def __post_init__(self) -> None:
        if self.tile_batch < 1:
            raise ValueError(f"tile_batch must be >= 1, got {self.tile_batch}")
        if self.latent_tile_size < 8:
            raise ValueError(f"latent_tile_size must be >= 8, got {self.latent_tile_size}")
        if not 0 <= self.latent_tile_overlap < self.latent_tile_size:
            raise ValueError(
                f"latent_tile_overlap must be in [0, latent_tile_size={self.latent_tile_size}), "
                f"got {self.latent_tile_overlap}"
            )
        _check_choice("vae_mode", self.vae_mode, ("exact", "bounded"))
        _check_choice("vae_bounded_stats", self.vae_bounded_stats, ("spill", "recompute", "sampled"))
        if self.vae_live_tiles < 1:
            raise ValueError(f"vae_live_tiles must be >= 1, got {self.vae_live_tiles}")
        if self.vae_encoder_tile_size < 64 or self.vae_decoder_tile_size < 8:
            raise ValueError(
                "vae tile sizes too small: encoder >= 64 px, decoder >= 8 latent px, got "
                f"{self.vae_encoder_tile_size}, {self.vae_decoder_tile_size}"
            )
        if self.vae_encoder_tile_size % 8:
            raise ValueError(
                f"vae_encoder_tile_size must be a multiple of 8 (the VAE's downsampling), got "
                f"{self.vae_encoder_tile_size}"
            )


#: Named settings shared by `seesr upscale --preset` and the web UI:
#: preset -> (SamplingConfig overrides, TilingConfig overrides); explicit settings still win.
PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}),
    "faithful": ({"faithful": True}, {"latent_tile_overlap": 4}),  # official test_seesr.py overlap
    "turbo": (
        {"num_inference_steps": 2, "timestep_spacing": "trailing", "guidance_scale": 1.0},
        {"latent_tile_overlap": 32},
    ),
    "no-lre": ({"start_point": "noise"}, {}),  # paper Table 5: start from pure noise
    "hard-only": ({"prompt_mode": "hard_only"}, {}),
    "soft-only": ({"prompt_mode": "soft_only"}, {}),
    "no-dape": ({"prompt_mode": "none"}, {}),
}


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "config") -> T:
    """Build the frozen dataclass ``cls`` from ``data``; unknown keys raise ``ValueError`` naming them.

    Nested dataclass fields are built recursively from nested mappings; lists become tuples.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; expected some of {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints.get(key), value, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    candidates = typing.get_args(hint) if _is_union(hint) else (hint,)
    for cand in candidates:
        if dataclasses.is_dataclass(cand) and isinstance(value, Mapping):
            return config_from_dict(cand, value, where=where)  # type: ignore[arg-type]
    if isinstance(value, list):
        return tuple(value)
    return value


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-friendly dict of a config dataclass (tuples become lists, paths strings)."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return convert(config)


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The top-level mapping of the YAML file at ``path`` (an empty file gives ``{}``): the one YAML reader.

    Raises:
        FileNotFoundError: ``path`` is not a file (the message names ``what`` and the path).
        ValueError: the file is not valid YAML or its top level is not a mapping.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return dict(data)


def load_yaml_config(cls: type[T], path: str | Path) -> T:
    """Read a YAML file into ``cls`` (unknown keys rejected)."""
    return config_from_dict(cls, read_yaml_mapping(path), where=str(path))
