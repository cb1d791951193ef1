"""Process-wide state and seesr.io: Pillow's switches are set once by the entry point and never flipped by a
read; files are written without touching the umask (issue 12)."""

from __future__ import annotations

import ast
import contextlib
import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from seesr import io as sio
from seesr.errors import BadImageError
from tests.test_io import png16_bytes, png_header_only, rand_u8

SRC = Path(__file__).resolve().parents[1] / "src" / "seesr"


def _truncated_png(path: Path, size: int = 256) -> Path:
    buf = io.BytesIO()
    Image.fromarray(rand_u8((size, size, 3))).save(buf, "PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


@pytest.fixture
def restore_pillow() -> Iterator[None]:
    old = sio.pillow_settings()
    yield
    sio.configure_pillow(max_pixels=old.max_pixels, allow_truncated=old.allow_truncated)


def test_reads_never_flip_pillow_switches_seen_by_other_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every decode, in any thread, sees the switches the process started with: a read that accepts a
    truncated or over-sized file must not relax them for a concurrent reader (e.g. another UI session)."""
    seen: set[tuple[object, bool]] = set()
    original = ImageFile.ImageFile.load

    def spying_load(self: ImageFile.ImageFile):  # type: ignore[no-untyped-def]
        seen.add((Image.MAX_IMAGE_PIXELS, bool(ImageFile.LOAD_TRUNCATED_IMAGES)))
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spying_load)
    start = (Image.MAX_IMAGE_PIXELS, bool(ImageFile.LOAD_TRUNCATED_IMAGES))
    trunc = _truncated_png(tmp_path / "t.png")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(20000, 20000))
    deep = tmp_path / "deep.png"
    deep.write_bytes(png16_bytes(np.random.default_rng(0).integers(0, 65536, (32, 24, 3), dtype=np.uint16)))
    good = tmp_path / "good.png"
    Image.fromarray(rand_u8((64, 64, 3))).save(good)

    def reader() -> None:  # a concurrent plain reader, as another session of the web UI
        for _ in range(20):
            sio.load_image(good)

    other = threading.Thread(target=reader)
    other.start()
    for _ in range(5):
        with contextlib.suppress(BadImageError):  # refused: the process does not accept truncated files
            sio.load_image(trunc, allow_truncated=True)
        with pytest.raises(BadImageError, match="20000x20000 = 400000000 pixels is over the input cap"):
            sio.load_image(bomb, max_pixels=10**6)
        assert sio.load_image(deep).bit_depth == 16
    other.join()
    assert seen == {start}
    assert (Image.MAX_IMAGE_PIXELS, bool(ImageFile.LOAD_TRUNCATED_IMAGES)) == start


def test_configure_pillow_sets_both_switches_and_returns_the_old_ones(restore_pillow: None) -> None:
    before = sio.pillow_settings()
    old = sio.configure_pillow(max_pixels=1234, allow_truncated=True)
    assert old == before
    assert Image.MAX_IMAGE_PIXELS == 1234 and ImageFile.LOAD_TRUNCATED_IMAGES is True
    assert sio.pillow_settings() == sio.PillowSettings(1234, True)
    with pytest.raises(ValueError, match="max_pixels must be >= 1"):
        sio.configure_pillow(max_pixels=0, allow_truncated=False)


def test_pillow_limit_below_the_callers_cap_is_explained(tmp_path: Path, restore_pillow: None) -> None:
    p = tmp_path / "big.png"
    p.write_bytes(png_header_only(300, 200))
    sio.configure_pillow(max_pixels=1000, allow_truncated=False)  # Pillow refuses above 2000 px
    with pytest.raises(BadImageError, match=r"300x200 = 60000 pixels is over Pillow's .*configure_pillow"):
        sio.probe_image(p, max_pixels=10**6)


def test_cli_sets_pillow_once_from_its_flags_and_the_ui_never_accepts_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seesr.cli.ui
    import seesr.cli.upscale
    from seesr.cli import main

    during: dict[str, sio.PillowSettings] = {}

    def recorder(name: str):  # type: ignore[no-untyped-def]
        def run(args: object) -> int:
            during[name] = sio.pillow_settings()
            return 0

        return run

    monkeypatch.setattr(seesr.cli.upscale, "run", recorder("upscale"))
    monkeypatch.setattr(seesr.cli.ui, "run", recorder("ui"))
    before = sio.pillow_settings()
    big = 2 * sio.DEFAULT_MAX_OUTPUT_PIXELS
    main(["upscale", "x.png", "-o", str(tmp_path), "--allow-truncated", "--max-pixels", str(big)])
    main(["ui"])
    assert during["upscale"] == sio.PillowSettings(big, True)
    assert during["ui"] == sio.PillowSettings(sio.DEFAULT_MAX_OUTPUT_PIXELS, False)
    assert sio.pillow_settings() == before  # put back for the next in-process caller


def test_ui_refuses_truncated_uploads_even_in_a_truncated_process(
    tmp_path: Path, restore_pillow: None
) -> None:
    from seesr.ui.controller import UIController

    trunc = _truncated_png(tmp_path / "t.png")
    sio.configure_pillow(max_pixels=sio.DEFAULT_MAX_PIXELS, allow_truncated=True)
    with pytest.raises(BadImageError, match="truncated"):
        UIController(None, output_dir=tmp_path).load(trunc)


def test_no_umask_call_in_src() -> None:
    """Reading the umask means setting it, process-wide, racing every other thread that creates files."""
    calls = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "umask"
                or isinstance(node, ast.alias)
                and node.name == "umask"
            ):
                calls.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not calls, calls


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path: Path, umask: int) -> None:
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        f"os.umask({umask})\n"
        "from seesr.io import atomic_write, save_image\n"
        "import numpy as np\n"
        "d = Path(sys.argv[1])\n"
        "open(d / 'plain', 'wb').close()\n"
        "atomic_write(d / 'atomic', lambda f: f.write(b'x'))\n"
        "save_image(d / 'img.png', np.zeros((2, 2, 3), np.float32))\n"
    )
    env_path = str(SRC.parent)
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"plain": 0o666 & ~umask, "atomic": 0o666 & ~umask, "img.png": 0o666 & ~umask}
