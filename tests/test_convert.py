"""`seesr convert` and the loader's refusals (issue 11 items 3 and 5), on a folder downloaded from the fakes."""

from __future__ import annotations

import pytest
import torch

from seesr import weights
from seesr.cli import main
from seesr.errors import WeightsError
from tests.fake_hub import FakeGitHub, FakeHub, populate
from tests.test_weights import tiny_ram_hash  # noqa: F401 - fixture


@pytest.fixture
def downloaded(tmp_path, monkeypatch, fixtures_dir, tiny_ram_hash):  # noqa: F811
    hub, github = FakeHub(tmp_path / "hub").install(monkeypatch), FakeGitHub().install(monkeypatch)
    populate(hub, github, fixtures_dir)
    out = tmp_path / "weights"
    weights.download_all(out, include_optional=True)
    return out


def _states_equal(a, b, names=("unet", "controlnet", "vae", "text_encoder", "dape")):
    for name in names:
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert set(sa) == set(sb), name
        assert all(torch.equal(sa[k].float(), sb[k].float()) for k in sa), name


def test_convert_in_place_drops_raw_files_and_loads_the_same(downloaded, fixtures_dir):
    from seesr.pipeline.convert import convert_folder
    from seesr.pipeline.loading import load_folder
    from seesr.pipeline.pipeline import SeeSRPipeline

    arch = fixtures_dir / "ram-tiny" / "arch.json"
    raw = load_folder(SeeSRPipeline, downloaded, dape_arch=arch)
    raw_turbo = load_folder(SeeSRPipeline, downloaded, dape_arch=arch, turbo=True)
    report = convert_folder(downloaded, downloaded, dape_arch=arch)
    # sizes: no saving at tiny size (no optimizer state in the tiny RAM); benchmarks/convert.py measures SD-2 size
    assert report.turbo and report.bytes_before > 0
    for gone in ("sd2-base", "seesr", "ram", "sd-turbo"):
        assert not (downloaded / gone).exists(), gone
    manifest = weights.read_manifest(downloaded)
    assert {"sd2-base", "seesr", "ram", "ram-tags", "sd-turbo"} <= set(manifest["parts"]), "provenance kept"
    assert all(f["path"].endswith((".json", ".txt", ".safetensors")) for f in manifest["converted"]["files"])
    assert report.bytes_after == sum(f["size"] for f in manifest["converted"]["files"])
    assert weights.is_converted(downloaded, turbo=True)
    assert weights.missing_parts(downloaded, list(weights.PART_NAMES)) == []
    conv = SeeSRPipeline.from_pretrained(downloaded)
    _states_equal(raw, conv)
    assert conv.dape.tag_list == raw.dape.tag_list
    conv_turbo = SeeSRPipeline.from_pretrained(downloaded, turbo=True, tagger="none")
    _states_equal(raw_turbo, conv_turbo, names=("unet",))
    assert conv_turbo.unet_base == "sd-turbo" and conv_turbo.dape is None
    drop = ("_diffusers_version", "_use_default_values")
    same = lambda cfg: {k: v for k, v in cfg.items() if k not in drop}  # noqa: E731
    assert same(conv_turbo.scheduler.config) == same(raw_turbo.scheduler.config)


def test_convert_fp16_keep_originals_cli(downloaded, fixtures_dir, tmp_path, monkeypatch, capsys):
    from seesr.pipeline import convert as conv_mod

    real = conv_mod.convert_folder
    monkeypatch.setattr(
        conv_mod,
        "convert_folder",
        lambda *a, **k: real(*a, dape_arch=fixtures_dir / "ram-tiny" / "arch.json", **k),
    )
    dst = tmp_path / "fast"
    assert main(["convert", str(downloaded), str(dst), "--dtype", "fp16"]) == 0, capsys.readouterr().err
    assert "converted" in capsys.readouterr().out
    assert (downloaded / "ram" / "ram_swin_large_14m.pth").is_file(), "a different source is never touched"
    from safetensors import safe_open

    from seesr.pipeline.pipeline import SeeSRPipeline

    with safe_open(str(dst / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as fh:
        assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"F16"}  # noqa: SIM118
    with safe_open(str(dst / "dape" / "model.safetensors"), "pt") as fh:
        assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"F32"}  # noqa: SIM118
    pipe = SeeSRPipeline.from_pretrained(dst, dtype="fp16")
    assert pipe.unet.dtype == torch.float16 and pipe.dape.dtype == torch.float32
    assert weights.read_manifest(dst)["converted"]["dtype"] == "fp16"
    assert "seesr" in weights.read_manifest(dst)["parts"]


def test_folder_without_dape_is_refused_unless_plain_ram_is_asked(downloaded, fixtures_dir):
    from seesr.pipeline.loading import load_folder
    from seesr.pipeline.pipeline import SeeSRPipeline

    (downloaded / "seesr" / "DAPE.pth").unlink()
    with pytest.raises(WeightsError, match="no seesr/DAPE.pth.*tagger='ram'") as err:
        load_folder(SeeSRPipeline, downloaded, dape_arch=fixtures_dir / "ram-tiny" / "arch.json")
    assert "\n" not in str(err.value)
    plain = load_folder(
        SeeSRPipeline, downloaded, tagger="ram", dape_arch=fixtures_dir / "ram-tiny" / "arch.json"
    )
    assert plain.dape is not None
    none = load_folder(SeeSRPipeline, downloaded, tagger="none")
    assert none.dape is None


def test_turbo_without_sd_turbo_is_refused(downloaded):
    import shutil

    from seesr.pipeline.loading import load_folder
    from seesr.pipeline.pipeline import SeeSRPipeline

    shutil.rmtree(downloaded / "sd-turbo")
    with pytest.raises(WeightsError, match="seesr download .*--turbo"):
        load_folder(SeeSRPipeline, downloaded, turbo=True, tagger="none")


def test_cli_download_converts_after_downloading(tmp_path, monkeypatch, fixtures_dir, tiny_ram_hash, capsys):  # noqa: F811
    from seesr.pipeline import convert as conv_mod

    hub, github = FakeHub(tmp_path / "hub").install(monkeypatch), FakeGitHub().install(monkeypatch)
    populate(hub, github, fixtures_dir)
    real = conv_mod.convert_folder
    monkeypatch.setattr(
        conv_mod,
        "convert_folder",
        lambda *a, **k: real(*a, dape_arch=fixtures_dir / "ram-tiny" / "arch.json", **k),
    )
    out = tmp_path / "w"
    assert main(["download", str(out)]) == 0, capsys.readouterr().err
    assert weights.is_converted(out) and not (out / "ram").exists() and not (out / "seesr").exists()
    listed = list(hub.listed)
    assert weights.ensure_weights(out) == out and hub.listed == listed, "a converted folder is complete"
    assert main(["download", str(out)]) == 0 and hub.listed == listed, "nothing fetched again"


def test_prepare_weights_downloads_then_converts_once(tmp_path, monkeypatch, fixtures_dir, tiny_ram_hash):  # noqa: F811
    from seesr.pipeline.convert import prepare_weights

    hub, github = FakeHub(tmp_path / "hub").install(monkeypatch), FakeGitHub().install(monkeypatch)
    populate(hub, github, fixtures_dir)
    out, arch = tmp_path / "w", fixtures_dir / "ram-tiny" / "arch.json"
    assert prepare_weights(out, dape_arch=arch) == out
    assert weights.is_converted(out) and not (out / "ram").exists()
    stamp = (out / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    prepare_weights(out, turbo=True, dape_arch=arch)  # fetches sd-turbo only, converts nothing again
    assert (out / "sd-turbo" / "unet" / "config.json").is_file()
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    from seesr.pipeline.pipeline import SeeSRPipeline

    pipe = SeeSRPipeline.from_pretrained(out, turbo=True)
    assert pipe.unet_base == "sd-turbo" and pipe.dape is not None
