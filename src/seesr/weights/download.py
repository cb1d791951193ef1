"""Filling a weights folder: plan what is missing, check disk space, take a lock, fetch, verify, record.

Order of work for :func:`download_all`:

1. under a file lock on the folder (a second process waits, then finds the parts done);
2. list every missing part's repository (the first source that exists; mirrors after it) and pick the files
   its ``allow_patterns`` name — a pattern matching nothing is an error, never an empty download;
3. refuse in one line when the disk has less free space than the bytes still to fetch;
4. fetch file by file (huggingface_hub resumes partial files), check SHA-256 against the hub's LFS record and
   our pinned hashes, and record repository, revision, size and SHA-256 in ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seesr.errors import WeightsError
from seesr.weights import manifest as mf
from seesr.weights import remote
from seesr.weights.sources import GB, HUB_PARTS, PART_NAMES, TAG_FILES, TAG_LICENCE, TAG_SOURCES, HubPart

logger = logging.getLogger(__name__)

LOCK_NAME = ".seesr-download.lock"
#: head-room kept free on top of the bytes to fetch (huggingface_hub writes .incomplete files beside)
DISK_MARGIN = 0.2 * GB


@dataclass
class _Plan:
    part: HubPart
    listing: remote.RepoListing
    files: list[remote.RemoteFile]

    def bytes_missing(self, folder: Path) -> int:
        total = 0
        for f in self.files:
            have = folder / self.part.name / f.name
            if not (have.is_file() and f.size is not None and have.stat().st_size == f.size):
                total += f.size or 0
        return total


def _auth_message(what: str, errors: Sequence[str], urls: Sequence[str]) -> str:
    return (
        f"cannot download {what}: the hub refused access ({errors[-1]}); log in with `hf auth login` "
        f"and accept the licence at {', '.join(urls)}"
    )


def list_part(part: HubPart) -> _Plan:
    """The first source of ``part`` that exists, with the files to fetch from it."""
    gone: list[str] = []
    auth: list[str] = []
    for repo in part.repos:
        try:
            listing = remote.list_repo(repo)
        except remote.SourceGone as err:
            gone.append(str(err))
            logger.info("%s: %s is gone; trying the next source", part.name, repo.url())
            continue
        except remote.NeedsAuth as err:
            auth.append(str(err))
            continue
        except remote.Unreachable as err:
            raise WeightsError(
                f"cannot reach the hub for {part.description} ({err}); offline? Run `seesr download` on a "
                "machine with network and copy the folder, or set HF_ENDPOINT to a reachable mirror"
            ) from err
        return _Plan(part, listing, remote.select(listing, part.allow_patterns))
    urls = [r.url() for r in part.repos]
    if auth:
        raise WeightsError(_auth_message(part.description, auth, urls))
    hint = f"; {part.gone_hint}" if part.gone_hint else ""
    raise WeightsError(f"{part.description}: every source is gone ({'; '.join(gone)}){hint}")


def _fetch_part(plan: _Plan, folder: Path, manifest: dict[str, Any]) -> None:
    part, target = plan.part, folder / plan.part.name
    target.mkdir(parents=True, exist_ok=True)
    entries = []
    for f in plan.files:
        try:
            path = remote.download_file(plan.listing, f.name, target)
        except remote.NeedsAuth as err:
            raise WeightsError(
                _auth_message(part.description, [str(err)], [plan.listing.repo.url()])
            ) from err
        except (remote.SourceGone, remote.Unreachable) as err:
            raise WeightsError(
                f"download of {part.description} interrupted: {err}; run again to resume"
            ) from err
        digest = remote.sha256_file(path)
        wrong = [h for h in (f.sha256, part.sha256.get(f.name)) if h and h != digest]
        if wrong:
            path.unlink()
            raise WeightsError(
                f"{plan.listing.repo.url()}/{f.name}: SHA-256 {digest} differs from the expected {wrong[-1]}; "
                "the file was deleted"
            )
        entries.append(
            {"file": f.name, "path": f"{part.name}/{f.name}", "size": path.stat().st_size, "sha256": digest}
        )
    manifest["parts"][part.name] = {
        "source": "hub",
        "repo": plan.listing.repo.repo_id,
        "repo_type": plan.listing.repo.repo_type,
        "revision": plan.listing.revision,
        "licence": part.licence,
        "files": entries,
    }
    mf.write_manifest(folder, manifest)


def fetch_tag_files(folder: Path, manifest: dict[str, Any]) -> None:
    """RAM's tag list + thresholds from GitHub at the pinned commits, byte-checked, into ``folder/ram/``.

    Raises:
        WeightsError: no source served the expected bytes (a wrong hash is reported, never used).
    """
    errors: list[str] = []
    for repo, commit in TAG_SOURCES:
        blobs: list[tuple[Any, bytes]] = []
        try:
            for spec in TAG_FILES:
                url = remote.github_raw_url(repo, commit, spec.path)
                data = remote.http_get(url)
                digest = hashlib.sha256(data).hexdigest()
                if digest != spec.sha256 or len(data) != spec.size:
                    raise remote.SourceGone(
                        f"{url}: SHA-256 {digest} ({len(data)} bytes) is not the expected {spec.sha256} "
                        f"({spec.size} bytes); refused"
                    )
                blobs.append((spec, data))
        except (remote.SourceGone, remote.NeedsAuth, remote.Unreachable) as err:
            errors.append(str(err))
            continue
        entries = []
        for spec, data in blobs:
            dest = folder / spec.dest
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            entries.append({"file": spec.path, "path": spec.dest, "size": len(data), "sha256": spec.sha256})
        manifest["parts"]["ram-tags"] = {
            "source": "github",
            "repo": repo,
            "revision": commit,
            "licence": TAG_LICENCE,
            "files": entries,
        }
        mf.write_manifest(folder, manifest)
        return
    raise WeightsError(
        f"cannot fetch RAM's tag list/thresholds from GitHub ({' | '.join(errors)}); pass --tag-list and "
        "--thresholds with copies of ram/data/ram_tag_list.txt and ram_tag_list_threshold.txt"
    )


def _check_disk(folder: Path, need: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < need + DISK_MARGIN:
        raise WeightsError(
            f"not enough disk space in {folder}: the download needs {need / GB:.1f} GB "
            f"(+{DISK_MARGIN / GB:.1f} GB head-room), {free / GB:.1f} GB free"
        )


def selected_parts(include_optional: bool = False, only: Sequence[str] | None = None) -> list[str]:
    """Part names to fetch, in download order."""
    if only is not None:
        unknown = sorted(set(only) - set(PART_NAMES))
        if unknown:
            raise WeightsError(f"unknown part(s) {unknown}; expected some of {list(PART_NAMES)}")
        return [p for p in PART_NAMES if p in only]
    return [p for p in PART_NAMES if include_optional or p != "sd-turbo"]


def missing_parts(folder: str | Path, names: Sequence[str]) -> list[str]:
    """Which of ``names`` are not (fully) present in ``folder``."""
    root = Path(folder).expanduser()
    manifest = mf.read_manifest(root)
    return [n for n in names if not mf.part_present(root, manifest, n)]


def approx_bytes(names: Sequence[str]) -> float:
    """Download size of ``names`` when the hub cannot be asked (offline messages)."""
    table = {p.name: p.approx_bytes for p in HUB_PARTS}
    return sum(table.get(n, 0.0) for n in names)


def download_all(
    directory: str | Path,
    *,
    include_optional: bool = False,
    only: Sequence[str] | None = None,
    notify: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Fetch every missing part into ``directory/<part>/`` and record it in ``manifest.json``.

    Finished parts are skipped; interrupted files resume. Two processes on one folder: the second waits for
    the first (file lock), then finds the parts present.

    Args:
        directory: the weights folder (created).
        include_optional: also fetch sd-turbo.
        only: fetch only these parts (names from ``PART_NAMES``).
        notify: where one-line messages go (size, licences); default ``logging`` at INFO.

    Returns:
        ``{part name: folder}`` of every selected part.

    Raises:
        WeightsError: a source is unreachable, refuses access (401/403), is gone, lacks a file the loader
            reads, serves other bytes than expected, or the disk is too small. Always one line.
    """
    from filelock import FileLock, Timeout

    say = notify or logger.info
    root = Path(directory).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    names = selected_parts(include_optional, only)
    lock = FileLock(str(root / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"another process is downloading into {root}; waiting for it to finish")
        lock.acquire()
    try:
        manifest = mf.read_manifest(root) or mf.empty_manifest()
        todo = [n for n in names if not mf.part_present(root, manifest, n)]
        plans = [list_part(next(p for p in HUB_PARTS if p.name == n)) for n in todo if n != "ram-tags"]
        need = sum(p.bytes_missing(root) for p in plans)
        if todo:
            _check_disk(root, need)
            say(f"downloading {need / GB:.1f} GB to {root} ({', '.join(todo)})")
        for name in todo:
            if name == "ram-tags":
                say(f"ram-tags: RAM tag list + thresholds from GitHub; licence: {TAG_LICENCE}")
                fetch_tag_files(root, manifest)
                continue
            plan = next(p for p in plans if p.part.name == name)
            say(
                f"{name}: {plan.part.description} from {plan.listing.repo.url()} @ {plan.listing.revision[:12]}; "
                f"licence: {plan.part.licence}"
            )
            _fetch_part(plan, root, manifest)
    finally:
        lock.release()
    return {n: root / ("ram" if n == "ram-tags" else n) for n in names}
