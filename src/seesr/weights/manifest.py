"""The weights folder's ``manifest.json``: which repository, revision and bytes every file came from.

Layout::

    {"format": 1,
     "parts": {"<part>": {"source": "hub"|"github", "repo": ..., "repo_type": ..., "revision": ...,
                          "licence": ..., "files": [{"file": <path in repo>, "path": <path in folder>,
                                                     "size": int, "sha256": hex}]}},
     "converted": {...}}   # written by `seesr convert` (see seesr.pipeline.convert)

A part counts as present only when the manifest lists it and each of its files exists with the listed size, so
an interrupted download is never mistaken for a finished one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from seesr.errors import WeightsError

MANIFEST_NAME = "manifest.json"
FORMAT = 1


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of a weights folder, or ``None`` when it has none (e.g. a folder assembled by hand).

    Raises:
        WeightsError: the file exists but is not a manifest.
    """
    path = Path(folder).expanduser() / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path} is not a readable weights manifest ({err})") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("parts"), dict):
        raise WeightsError(f"{path} is not a seesr weights manifest (expected format {FORMAT} with 'parts')")
    return data


def write_manifest(folder: Path, data: dict[str, Any]) -> None:
    """Write atomically (a crash leaves the previous manifest, never half a file)."""
    path = folder / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def empty_manifest() -> dict[str, Any]:
    return {"format": FORMAT, "parts": {}}


#: parts a converted folder replaces (sd-turbo only when it was converted with it)
CONVERTED_COVERS = ("sd2-base", "seesr", "ram", "ram-tags")


def converted_covers(folder: Path, manifest: dict[str, Any] | None) -> tuple[str, ...]:
    """Parts that the folder's finished conversion stands in for (none without one)."""
    conv = (manifest or {}).get("converted")
    if not isinstance(conv, dict) or not (folder / "model_index.json").is_file():
        return ()
    for f in conv.get("files", ()):
        path = folder / f["path"]
        if not path.is_file() or path.stat().st_size != f["size"]:
            return ()
    return CONVERTED_COVERS + (("sd-turbo",) if conv.get("turbo") else ())


def part_present(folder: Path, manifest: dict[str, Any] | None, name: str) -> bool:
    """Whether ``name`` is in ``folder``: fully fetched (listed in the manifest, files there, sizes equal) or
    replaced by a finished conversion."""
    if manifest is None:
        return False
    if name in converted_covers(folder, manifest):
        return True
    entry = manifest["parts"].get(name)
    if not isinstance(entry, dict) or not entry.get("files"):
        return False
    for f in entry["files"]:
        path = folder / f["path"]
        if not path.is_file() or path.stat().st_size != f["size"]:
            return False
    return True
