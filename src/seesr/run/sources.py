"""Where a run's weights come from, and loading the pipeline from there (CLI, web UI and API alike).

Order: a weights folder typed as ``--weights DIR``; else the official parts typed as flags (``--sd2 --seesr
--ram --dape ...``); else ``SEESR_WEIGHTS``; else the default folder that ``seesr download`` fills
(``~/.cache/seesr/weights``). Typed flags beat the environment so that a stale variable never overrides them.
Nothing falls back silently: the turbo preset without an sd-turbo UNet and a folder without DAPE are errors
unless plain RAM is asked for (``no_dape`` / the ``no-dape`` preset).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

OFFICIAL_PARTS = ("sd2", "seesr", "ram", "dape", "tag_list", "thresholds", "dape_arch", "turbo_unet")

NO_WEIGHTS = (
    "no weights: run `seesr download` (fills the default folder), pass --weights DIR or set SEESR_WEIGHTS, "
    "or give the official parts --sd2 --seesr --ram --dape (and --tag-list --thresholds)"
)


def default_weights_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$SEESR_WEIGHTS``, else ``~/.cache/seesr/weights`` (the folder ``seesr download`` fills)."""
    env = os.environ if env is None else env
    value = env.get("SEESR_WEIGHTS")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "seesr" / "weights"


@dataclasses.dataclass(frozen=True)
class WeightsChoice:
    """The weights a run will load.

    Attributes:
        kind: "folder" (a ``seesr download`` / ``save_pretrained`` folder) or "official" (separate parts).
        folder: the folder for ``kind == "folder"``.
        parts: official part -> path or hub id, for ``kind == "official"``.
        origin: how it was chosen ("--weights", "official flags", "SEESR_WEIGHTS", "default folder"), for messages.
    """

    kind: str
    folder: Path | None = None
    parts: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    origin: str = ""


def choose_weights(
    *,
    weights: str | Path | None = None,
    parts: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> WeightsChoice:
    """Pick the weights from what was typed, then the environment, then the default folder.

    Raises:
        ValueError: both a folder and official parts were typed, or the official parts lack --sd2/--seesr.
    """
    from seesr.errors import WeightsError

    env = os.environ if env is None else env
    given = {k: v for k, v in (parts or {}).items() if v is not None}
    unknown = set(given) - set(OFFICIAL_PARTS)
    if unknown:
        raise ValueError(f"unknown weight parts {sorted(unknown)}; expected {', '.join(OFFICIAL_PARTS)}")
    if weights and given:
        raise ValueError(
            f"pass either --weights or the official parts ({', '.join(sorted(given))}), not both"
        )
    if weights:
        return WeightsChoice("folder", folder=Path(weights).expanduser(), origin="--weights")
    if given:
        missing = [f"--{k}" for k in ("sd2", "seesr") if k not in given]
        if missing:
            raise WeightsError(f"official weights incomplete: also pass {' '.join(missing)}")
        return WeightsChoice(
            "official", parts={k: given.get(k) for k in OFFICIAL_PARTS}, origin="official flags"
        )
    origin = "SEESR_WEIGHTS" if env.get("SEESR_WEIGHTS") else "default folder"
    return WeightsChoice("folder", folder=default_weights_dir(env), origin=origin)


def check_choice(choice: WeightsChoice, *, preset: str | None = None) -> None:
    """Refuse, before loading, what cannot work: a missing folder, turbo without an sd-turbo UNet.

    Raises:
        WeightsError: one line naming the fix.
    """
    from seesr.errors import WeightsError

    if choice.kind == "folder":
        assert choice.folder is not None
        if not choice.folder.is_dir():
            if choice.origin == "default folder":
                raise WeightsError(f"no weights in the default folder {choice.folder}. {NO_WEIGHTS}")
            sep = "=" if choice.origin == "SEESR_WEIGHTS" else " "
            raise WeightsError(
                f"{choice.origin}{sep}{choice.folder}: folder not found (make one with `seesr download DIR`)"
            )
        if (
            preset == "turbo"
            and (choice.folder / "sd2-base").is_dir()
            and not (choice.folder / "sd-turbo").is_dir()
        ):
            raise WeightsError(
                f"--preset turbo needs the sd-turbo UNet, which {choice.folder} lacks: "
                f"run `seesr download {choice.folder} --turbo` (or pass --turbo-unet with the official parts)"
            )
    elif preset == "turbo" and not choice.parts.get("turbo_unet"):
        raise WeightsError(
            "--preset turbo needs the sd-turbo UNet: pass --turbo-unet DIR (e.g. a stabilityai/sd-turbo folder)"
        )


def load_pipeline(
    choice: WeightsChoice,
    *,
    device: Any = "auto",
    dtype: Any = "auto",
    preset: str | None = None,
) -> Any:
    """Load the :class:`~seesr.pipeline.pipeline.SeeSRPipeline` that ``choice`` names.

    Args:
        choice: from :func:`choose_weights`.
        device, dtype: as :func:`seesr.pipeline.devices.resolve_device_dtype` takes them.
        preset: the run's preset: "turbo" loads the sd-turbo UNet.

    Raises:
        WeightsError / FileNotFoundError / ValueError: one line naming what is missing or wrong.
    """
    from seesr.pipeline.devices import resolve_device_dtype
    from seesr.pipeline.pipeline import SeeSRPipeline

    check_choice(choice, preset=preset)
    dev, dt = resolve_device_dtype(device, dtype)
    if choice.kind == "folder":
        extra = {"turbo": True} if preset == "turbo" else {}
        assert choice.folder is not None
        return SeeSRPipeline.from_pretrained(choice.folder, device=dev, dtype=dt, **extra)
    return SeeSRPipeline.from_official(**dict(choice.parts), device=dev, dtype=dt)
