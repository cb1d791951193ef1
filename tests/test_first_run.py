"""The README's main command on a fresh machine (issue 11): `seesr upscale photo.png -o out/` with no weights
flag fills the default folder from the (fake) hub and GitHub, converts it once, upscales, and the sidecar cites
the download manifest. The offline path is tested in tests/test_cli_upscale.py (test_no_weights_one_line)."""

from __future__ import annotations

import functools
import json

import numpy as np
from PIL import Image

from seesr.cli import main
from tests.fake_hub import FakeGitHub, FakeHub, populate
from tests.test_weights import tiny_ram_hash  # noqa: F401 - fixture


def test_first_run_downloads_converts_and_upscales(tmp_path, monkeypatch, fixtures_dir, tiny_ram_hash):  # noqa: F811
    import seesr.pipeline.convert as convert

    hub, github = FakeHub(tmp_path / "hub").install(monkeypatch), FakeGitHub().install(monkeypatch)
    populate(hub, github, fixtures_dir)
    # the fake hub serves the tiny RAM, whose architecture differs from Swin-L's default: say so to the converter
    arch = fixtures_dir / "ram-tiny" / "arch.json"
    monkeypatch.setattr(
        convert, "prepare_weights", functools.partial(convert.prepare_weights, dape_arch=arch)
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SEESR_WEIGHTS", raising=False)
    monkeypatch.setenv("SEESR_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(src)

    argv = ["upscale", str(src), "-o", str(tmp_path / "out"), "--steps", "1", "--process-size", "64"]
    assert main(argv) == 0
    folder = tmp_path / "home" / ".cache" / "seesr" / "weights"
    assert (folder / "manifest.json").is_file() and (folder / "model_index.json").is_file()  # converted
    side = json.loads((tmp_path / "out" / "photo.json").read_text())
    manifest = side["weights_manifest"]
    assert manifest == json.loads((folder / "manifest.json").read_text())
    files = json.dumps(manifest)
    assert (
        "ram_tag_list.txt" in files
        and "5d96d2f7225527480ad773aaac76b6e5c08a18adf6eae9ca7d2ab923d5e7bd8b" in files
    )
    with Image.open(tmp_path / "out" / "photo.png") as im:
        assert im.size == (64, 48)
    fetched = len(hub.downloaded)
    assert main([*argv, "--overwrite"]) == 0 and len(hub.downloaded) == fetched  # second run: nothing fetched
