"""Where weights come from: local folders, hub ids (with mirrors), the default folder, downloads and their
manifest (issue 11). Every source is public and listed with its evidence in docs/decisions.md.

Nothing here imports torch. Public API:

* :func:`default_weights_dir` — ``$SEESR_WEIGHTS`` else ``~/.cache/seesr/weights``;
* :func:`ensure_weights` — return a complete folder, downloading what is missing (or say how, offline);
* :func:`download_all` — what ``seesr download`` runs;
* :func:`resolve` — a local path, or a hub id fetched with only the files the loader reads;
* :func:`read_manifest` — repository, revision, size and SHA-256 of every downloaded file;
* :func:`find_tag_files` — RAM's tag list + thresholds beside a checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

from seesr.errors import WeightsError
from seesr.weights import remote
from seesr.weights.download import approx_bytes, download_all, list_part, missing_parts, selected_parts
from seesr.weights.manifest import MANIFEST_NAME, converted_covers, read_manifest
from seesr.weights.sources import GB, PART_NAMES, TAG_FILES, HubRepo, hub_part

__all__ = [
    "MANIFEST_NAME",
    "PART_NAMES",
    "approx_bytes",
    "default_weights_dir",
    "download_all",
    "ensure_weights",
    "find_tag_files",
    "is_converted",
    "looks_like_hub_id",
    "missing_parts",
    "read_manifest",
    "resolve",
    "selected_parts",
]

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def default_weights_dir() -> Path:
    """``$SEESR_WEIGHTS`` when set, else ``~/.cache/seesr/weights`` (the folder ``seesr download`` fills)."""
    env = os.environ.get("SEESR_WEIGHTS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "seesr" / "weights"


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def is_converted(folder: str | Path, *, turbo: bool = False) -> bool:
    """Whether ``folder`` holds a finished ``seesr convert`` result (with the turbo UNet when ``turbo``)."""
    root = Path(folder).expanduser()
    covers = converted_covers(root, read_manifest(root))
    return bool(covers) and (not turbo or "sd-turbo" in covers)


def _assembled_by_hand(root: Path) -> bool:
    return (root / "model_index.json").is_file() or all(
        (root / d).is_dir() for d in ("sd2-base", "seesr", "ram")
    )


def ensure_weights(
    folder: str | Path,
    *,
    turbo: bool = False,
    allow_download: bool = True,
    progress: bool = True,
) -> Path:
    """``folder`` once it holds every part a run needs; downloads what is missing when allowed.

    A folder is complete when each part (sd2-base, seesr, ram, ram-tags; sd-turbo too when ``turbo``) is
    downloaded or replaced by a finished ``seesr convert``. A folder without ``manifest.json`` that already has
    a weights layout (``save_pretrained``, or ``sd2-base/`` + ``seesr/`` + ``ram/`` copied by hand) is returned
    as it is: it is never downloaded over.

    Args:
        folder: the weights folder (usually :func:`default_weights_dir`).
        turbo: the run uses the turbo preset, so the sd-turbo UNet is needed too.
        allow_download: ``False`` (``--no-download``) never touches the network. ``HF_HUB_OFFLINE=1`` too.
        progress: log what is downloaded at INFO (else DEBUG); huggingface_hub draws the progress bars.

    Raises:
        WeightsError: incomplete and downloads are not allowed (the one line says what would be fetched and how
            to do it offline), or the download failed (see :func:`download_all`).
    """
    root = Path(folder).expanduser()
    if read_manifest(root) is None and _assembled_by_hand(root):
        return root  # not ours to complete: the loader checks it and names what is missing
    needed = selected_parts(include_optional=turbo)
    missing = missing_parts(root, needed)
    if not missing:
        return root
    if not allow_download or _hub_offline():
        why = "--no-download" if not allow_download else "HF_HUB_OFFLINE=1"
        turbo_flag = " --turbo" if "sd-turbo" in missing else ""
        raise WeightsError(
            f"weights missing in {root} ({', '.join(missing)}; about {approx_bytes(missing) / GB:.0f} GB) and "
            f"downloads are off ({why}); on a machine with network run `seesr download{turbo_flag} DIR`, copy DIR "
            "here and pass --weights DIR (or set SEESR_WEIGHTS)"
        )
    say = logger.info if progress else logger.debug
    download_all(root, only=missing, notify=say)
    return root


def looks_like_hub_id(source: str | Path) -> bool:
    """``owner/name`` that is not an existing local path."""
    text = str(source)
    return bool(_HUB_ID.match(text)) and not Path(text).exists()


def resolve(source: str | Path, *, what: str, part: str | None = None) -> Path:
    """A local path for ``source``: an existing file/folder as is, or a hub repository fetched into the hub
    cache with only the files the loader reads.

    Args:
        source: local path, or hub id ``owner/name``.
        what: what the source is, for error messages ("SD-2 base", ...).
        part: which manifest part the hub repository has the layout of ("sd2-base", "seesr", "sd-turbo", ...):
            its ``allow_patterns`` choose the files, and when ``source`` is one of the part's repositories the
            others are its mirrors. Required for hub ids.

    Raises:
        WeightsError: a local path does not exist; a hub id without ``part``; the repository (and every mirror)
            is gone, refuses access, is unreachable, or lacks a file the loader reads.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if not looks_like_hub_id(text):
        raise WeightsError(
            f"{what}: {text} does not exist (expected a local file/folder or a hub id owner/name)"
        )
    if part is None:
        raise WeightsError(
            f"{what}: hub id {text} is not supported here; download it and pass the local path"
        )
    spec = hub_part(part)
    known = [r for r in spec.repos if r.repo_id == text]
    repos = [known[0] if known else HubRepo(text)] + [r for r in spec.repos if r.repo_id != text and known]
    plan = list_part(dataclasses.replace(spec, repos=tuple(repos)))
    root: Path | None = None
    for f in plan.files:
        try:
            got = remote.download_file(plan.listing, f.name, None)
        except (remote.SourceGone, remote.NeedsAuth, remote.Unreachable) as err:
            raise WeightsError(
                f"{what}: cannot download {f.name} from {plan.listing.repo.url()} ({err})"
            ) from err
        root = Path(str(got)[: -len(f.name)])
    assert root is not None  # select() returned at least one file
    return root


def find_tag_files(ram_checkpoint: str | Path) -> tuple[Path, Path]:
    """``ram_tag_list.txt`` and ``ram_tag_list_threshold.txt`` beside the RAM checkpoint.

    Raises:
        WeightsError: either file is missing (they are third-party data shipped with RAM, never with seesr).
    """
    folder = Path(ram_checkpoint).parent
    names = [Path(f.dest).name for f in TAG_FILES]
    for candidate in (folder, folder / "ram" / "data"):
        tag_list, thresholds = candidate / names[0], candidate / names[1]
        if tag_list.is_file() and thresholds.is_file():
            return tag_list, thresholds
    raise WeightsError(
        f"{names[0]} / {names[1]} not found beside {ram_checkpoint}; pass --tag-list and --thresholds "
        "(files of the RAM repository, ram/data/) or run `seesr download`"
    )
