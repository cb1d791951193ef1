"""Talking to the Hugging Face hub and to GitHub: listing a repository, fetching one file, and turning every
failure into one of three kinds (gone, needs login/licence, unreachable) so the caller can say what to do.

``huggingface_hub`` is imported when a function runs (tests replace ``HfApi.repo_info`` / ``hf_hub_download``);
GitHub is read with ``urllib`` through :func:`http_get` (tests replace it).
"""

from __future__ import annotations

import fnmatch
import hashlib
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from seesr.errors import WeightsError
from seesr.weights.sources import HubRepo


@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub repository at a resolved revision (``sha256`` from the hub's LFS record, if any)."""

    name: str
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class RepoListing:
    repo: HubRepo
    revision: str
    files: tuple[RemoteFile, ...]


class SourceGone(Exception):
    """The repository or file does not exist (any more) at this source."""


class NeedsAuth(Exception):
    """The hub answered 401/403: gated or private; the user must log in and/or accept the licence."""


class Unreachable(Exception):
    """Network failure (offline, DNS, timeout, 5xx)."""


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def classify(err: BaseException, where: str) -> Exception:
    """Map a hub or HTTP exception onto :class:`SourceGone` / :class:`NeedsAuth` / :class:`Unreachable`."""
    name = type(err).__name__
    names = {c.__name__ for c in type(err).__mro__}
    status = _status(err)
    first = (str(err).strip().splitlines() or [name])[0][:200]
    if "GatedRepoError" in names or status == 403:
        return NeedsAuth(f"{where}: {status or 403} gated/forbidden ({first})")
    if names & {"RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError"} or status == 404:
        # the hub also answers 401 for a repository that does not exist when no token is sent
        return SourceGone(f"{where}: not found ({first})")
    if status == 401:
        return NeedsAuth(f"{where}: 401 unauthorized ({first})")
    return Unreachable(f"{where}: {name}: {first}")


def list_repo(repo: HubRepo) -> RepoListing:
    """The files of ``repo`` at its current revision (sizes and LFS SHA-256 included).

    Raises:
        SourceGone, NeedsAuth, Unreachable.
    """
    import huggingface_hub

    try:
        info = huggingface_hub.HfApi().repo_info(repo.repo_id, repo_type=repo.repo_type, files_metadata=True)
    except Exception as err:  # noqa: BLE001 - classified below
        raise classify(err, repo.url()) from err
    files = []
    for sib in getattr(info, "siblings", None) or ():
        lfs = getattr(sib, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        files.append(RemoteFile(sib.rfilename, getattr(sib, "size", None), sha))
    return RepoListing(repo, str(info.sha), tuple(files))


def select(listing: RepoListing, patterns: Sequence[str]) -> list[RemoteFile]:
    """The files matching ``patterns`` (fnmatch, as huggingface_hub's ``allow_patterns``).

    Raises:
        WeightsError: a pattern matches no file of the repository (a layout we do not expect).
    """
    chosen: dict[str, RemoteFile] = {}
    for pattern in patterns:
        hits = [f for f in listing.files if fnmatch.fnmatch(f.name, pattern)]
        if not hits:
            raise WeightsError(
                f"{listing.repo.url()} @ {listing.revision[:12]}: no file matches {pattern!r} "
                f"(the repository layout changed; expected the files the loader reads)"
            )
        chosen.update({f.name: f for f in hits})
    return [chosen[k] for k in sorted(chosen)]


def download_file(listing: RepoListing, name: str, local_dir: Path | None) -> Path:
    """Fetch ``name`` at the listed revision into ``local_dir`` (``None``: the hub cache); resumable.

    Raises:
        SourceGone, NeedsAuth, Unreachable.
    """
    import huggingface_hub

    try:
        path = huggingface_hub.hf_hub_download(
            listing.repo.repo_id,
            name,
            repo_type=listing.repo.repo_type,
            revision=listing.revision,
            local_dir=str(local_dir) if local_dir is not None else None,
        )
    except Exception as err:  # noqa: BLE001 - classified below
        raise classify(err, f"{listing.repo.url()}/{name}") from err
    return Path(path)


def http_get(url: str, timeout: float = 30.0) -> bytes:
    """GET ``url`` (GitHub raw files).

    Raises:
        SourceGone (404), NeedsAuth (401/403), Unreachable (anything else).
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed https URLs
            return bytes(response.read())
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise SourceGone(f"{url}: 404 not found") from err
        if err.code in (401, 403):
            raise NeedsAuth(f"{url}: {err.code}") from err
        raise Unreachable(f"{url}: HTTP {err.code}") from err
    except (urllib.error.URLError, OSError) as err:
        raise Unreachable(f"{url}: {err}") from err


def github_raw_url(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
