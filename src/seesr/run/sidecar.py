"""The sidecar JSON written beside every result: one schema for ``seesr upscale``, ``seesr ui`` and the API.

A sidecar records everything needed to re-run an image (``seesr upscale --from-json``) and to trace it: the
resolved configs, the tags and prompt, the input/output formats, the weights manifest when the weights folder
has one, the package versions, and what the run cost (``timings``). Keys are fixed here; front-ends add nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SIDECAR_VERSION = 1
VERSIONED_PACKAGES = ("seesr", "torch", "diffusers", "transformers", "numpy", "pillow", "gradio")


def versions() -> dict[str, str]:
    """Python and the versions of the packages a result depends on ("not installed" where absent)."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """A sidecar JSON written by :func:`write_sidecar`.

    Raises:
        FileNotFoundError: no such file. ValueError: not JSON, or no ``sampling`` settings in it.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sidecar not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{p}: not a JSON sidecar ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("sampling"), dict):
        raise ValueError(f"{p}: not a seesr sidecar (no 'sampling' settings)")
    return data


def write_json(path: str | Path, record: Any) -> None:
    """Write ``record`` as indented UTF-8 JSON, atomically (a reader never sees half a file)."""
    from seesr import io

    data = (json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    io.atomic_write(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8, atomically."""
    from seesr import io

    data = text.encode("utf-8")
    io.atomic_write(path, lambda f: f.write(data))
