"""Run settings: preset + sidecar + explicit overrides -> the frozen configs (one rule for CLI, UI and API).

Precedence, lowest first: the dataclass defaults < a sidecar's recorded settings (``--from-json``) < the preset
< explicit values. Tile sizes that people type are in image pixels (a multiple of 8, at least 64); the configs
hold latent pixels. When a tile size is chosen and no overlap is, the overlap comes from :func:`default_overlap`
(unless the preset fixes one), so the CLI and the web UI always agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from seesr.config import PRESETS, SamplingConfig, TilingConfig, config_from_dict

#: the default latent overlap of the default 96-latent tile (DESIGN.md §8)
_BASE_OVERLAP = TilingConfig.latent_tile_overlap


def default_overlap(latent_tile: int) -> int:
    """Latent overlap for a latent tile side: at least 25 % of the tile and at least min(32, tile/3).

    96 -> 32 (the default config), 64 -> 21, 128 -> 32, 256 -> 64. Always < ``latent_tile``.
    """
    if latent_tile < 8:
        raise ValueError(f"latent tile must be >= 8 latent px, got {latent_tile}")
    overlap = max(min(_BASE_OVERLAP, latent_tile // 3), -(-latent_tile // 4))
    return min(overlap, latent_tile - 1)


def latent_tile_from_pixels(tile_px: int) -> int:
    """Image-pixel tile side (multiple of 8, >= 64) -> latent pixels; ``ValueError`` otherwise."""
    if tile_px < 64 or tile_px % 8:
        raise ValueError(f"tile size must be a multiple of 8 and >= 64 pixels, got {tile_px}")
    return tile_px // 8


def check_preset(preset: str | None) -> None:
    """``ValueError`` naming the valid presets when ``preset`` is not one of them (``None`` is fine)."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")


def resolve_configs(
    *,
    preset: str | None = None,
    sidecar: Mapping[str, Any] | None = None,
    sampling: Mapping[str, Any] | None = None,
    tiling: Mapping[str, Any] | None = None,
    tile_px: int | None = None,
    faithful: bool | None = None,
    base: SamplingConfig | None = None,
    where: str = "settings",
) -> tuple[SamplingConfig, TilingConfig]:
    """The run's configs from every source, in order of precedence.

    Args:
        preset: a key of :data:`seesr.config.PRESETS` (validated).
        sidecar: a parsed sidecar (see :func:`seesr.run.sidecar.read_sidecar`); its ``sampling``/``tiling``.
        sampling: explicit ``SamplingConfig`` fields (``None`` values are ignored).
        tiling: explicit ``TilingConfig`` fields in latent pixels (``None`` values are ignored).
        tile_px: the latent tile side given in image pixels (overridden by ``tiling["latent_tile_size"]``).
        faithful: ``True`` turns on every official quirk (and the official overlap 4 unless set).
        base: sampling defaults used instead of the dataclass defaults (e.g. the UI's start values).
        where: prefix of error messages (the flag set or file the values came from).

    Raises:
        ValueError: unknown preset, unknown or invalid field, bad tile size.
    """
    check_preset(preset)
    s: dict[str, Any] = dataclasses.asdict(base) if base is not None else {}
    t: dict[str, Any] = {}
    if sidecar:
        s.update(sidecar.get("sampling") or {})
        t.update(sidecar.get("tiling") or {})
    preset_tiling: dict[str, Any] = {}
    if preset:
        s_over, preset_tiling = PRESETS[preset]
        s.update(s_over)
        t.update(preset_tiling)
    if faithful:
        s["faithful"] = True
        t.setdefault("latent_tile_overlap", 4)
    s.update({k: v for k, v in (sampling or {}).items() if v is not None})
    explicit_t = {k: v for k, v in (tiling or {}).items() if v is not None}
    if tile_px is not None and "latent_tile_size" not in explicit_t:
        explicit_t["latent_tile_size"] = latent_tile_from_pixels(int(tile_px))
    t.update(explicit_t)
    if "latent_tile_size" in explicit_t and "latent_tile_overlap" not in explicit_t:
        size = int(t["latent_tile_size"])
        fixed = preset_tiling.get("latent_tile_overlap", 4 if faithful or s.get("faithful") else None)
        t["latent_tile_overlap"] = fixed if fixed is not None and fixed < size else default_overlap(size)
    return (
        config_from_dict(SamplingConfig, s, where=f"{where}: sampling"),
        config_from_dict(TilingConfig, t, where=f"{where}: tiling"),
    )


def parse_tags(text: str | Sequence[str] | None) -> list[str]:
    """Tags typed by a person: split on commas, collapse spaces, drop empties and repeats (order kept)."""
    import re

    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else [s for t in text for s in str(t).split(",")]
    out: list[str] = []
    for item in items:
        tag = re.sub(r"\s+", " ", item).strip()
        if tag and tag not in out:
            out.append(tag)
    return out
