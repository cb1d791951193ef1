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


def tagger_for(preset: str | None, no_dape: bool = False) -> str:
    """The loader's tagger: "none" for the no-dape preset (no tags, no soft prompt), "ram" when plain RAM is
    asked for (``--no-dape``), else "dape"."""
    if preset == "no-dape":
        return "none"
    return "ram" if no_dape else "dape"


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
    """Refuse, before loading, what cannot work: a missing ``--weights`` folder; turbo with official parts but
    no ``--turbo-unet``. (A weights folder without sd-turbo is refused by the loader, after the first-run
    download has had its chance to fetch it.)

    Raises:
        WeightsError: one line naming the fix.
    """
    from seesr.errors import WeightsError

    if choice.kind == "folder":
        assert choice.folder is not None
        if not choice.folder.is_dir() and choice.origin == "--weights":
            raise WeightsError(
                f"--weights {choice.folder}: folder not found (make one with `seesr download DIR`)"
            )
    elif preset == "turbo" and not choice.parts.get("turbo_unet"):
        raise WeightsError(
            "--preset turbo needs the sd-turbo UNet: pass --turbo-unet DIR (e.g. a stabilityai/sd-turbo folder)"
        )


def prepare(choice: WeightsChoice, *, preset: str | None = None, allow_download: bool = True) -> None:
    """First-run set-up of the default (or ``SEESR_WEIGHTS``) folder: download what is missing, convert once.

    A folder typed with ``--weights`` and the official parts are used as they are. Call it on every process of a
    distributed job (it downloads on local rank 0 first, see :mod:`seesr.run.distributed`).

    Raises:
        WeightsError: incomplete while downloads are off (``--no-download``, ``HF_HUB_OFFLINE=1``): one line
            saying what would be downloaded and how to do it offline; or the download failed.
    """
    if choice.kind != "folder" or choice.origin == "--weights":
        return
    from seesr.pipeline.convert import prepare_weights
    from seesr.run.distributed import current

    assert choice.folder is not None
    folder = choice.folder
    current().run_on_local_rank0_first(
        lambda: prepare_weights(folder, turbo=preset == "turbo", allow_download=allow_download)
    )


def load_pipeline(
    choice: WeightsChoice,
    *,
    device: Any = "auto",
    dtype: Any = "auto",
    preset: str | None = None,
    no_dape: bool = False,
) -> Any:
    """Load the :class:`~seesr.pipeline.pipeline.SeeSRPipeline` that ``choice`` names (after :func:`prepare`).

    Args:
        choice: from :func:`choose_weights`.
        device, dtype: as :func:`seesr.pipeline.devices.resolve_device_dtype` takes them.
        preset: the run's preset: "turbo" loads the sd-turbo UNet, "no-dape" loads no tagger.
        no_dape: plain RAM instead of DAPE (asked for explicitly; never a silent fallback).

    The pipeline's ``weights_manifest`` attribute holds the folder's download manifest (or ``None``), which
    every sidecar cites.

    Raises:
        WeightsError / FileNotFoundError / ValueError: one line naming what is missing or wrong.
    """
    from seesr import weights
    from seesr.pipeline.devices import resolve_device_dtype
    from seesr.pipeline.loading import check_preset_weights
    from seesr.pipeline.pipeline import SeeSRPipeline
    from seesr.pipeline.sizing import NO_PIXEL_CAP

    check_choice(choice, preset=preset)
    dev, dt = resolve_device_dtype(device, dtype)
    tagger = tagger_for(preset, no_dape)
    if choice.kind == "folder":
        assert choice.folder is not None
        extra = {"turbo": True} if preset == "turbo" else {}
        pipe = SeeSRPipeline.from_pretrained(choice.folder, device=dev, dtype=dt, tagger=tagger, **extra)
        manifest = weights.read_manifest(choice.folder)
    else:
        pipe = SeeSRPipeline.from_official(**dict(choice.parts), device=dev, dtype=dt, tagger=tagger)
        manifest = None
    check_preset_weights(preset or "default", pipe)
    pipe.weights_manifest = manifest
    pipe.max_processed_pixels = NO_PIXEL_CAP  # callers plan each input against the memory budget first
    return pipe
