"""``--no-download`` keeps the whole command off the network, third-party imports included.

A real ``seesr upscale`` process on the tiny weights, with ``socket.getaddrinfo`` replaced (through a
``sitecustomize`` on PYTHONPATH) by one that records the host and fails as an offline machine does. Where pyiqa's
bitsandbytes is installed, diffusers imports it and it asks the Hub for a CPU kernel at import time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.tiny_pipeline import official_parts

PROBE = """
import socket

def _offline(host, *args, **kwargs):
    with open({log!r}, "a") as f:
        f.write(f"{{host}}\\n")
    raise socket.gaierror(-2, "Name or service not known")

socket.getaddrinfo = _offline
"""


def test_no_download_run_makes_no_network_lookup(tmp_path: Path, tiny_weights_dir: Path) -> None:
    log = tmp_path / "lookups.txt"
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(PROBE.format(log=str(log)))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in official_parts(tiny_weights_dir).items()]
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(probe), str(src)]), "PYTHONWARNINGS": "ignore"}
    env.pop("HF_HUB_OFFLINE", None)  # the test session sets it; the flag must do it on its own
    image = tiny_weights_dir / "reference" / "lr" / "coffee_48x64.png"
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "seesr", "upscale", str(image), "-o", str(out), "--no-download"]
    argv += ["--steps", "1", "--process-size", "64", *flags]
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out / "coffee_48x64.png").is_file()
    assert not log.exists(), f"network lookups: {log.read_text()}"
