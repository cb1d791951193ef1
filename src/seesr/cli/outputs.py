"""Batch output planning of ``seesr upscale``: where each listed input's image and sidecar JSON go.

Outputs that would collide or overwrite an input are refused; existing outputs are skipped unless overwritten.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from seesr.io import InputFile, format_extension


@dataclass(frozen=True)
class OutputPlan:
    """Where one input goes. ``error`` set: refused (collision, output is an input); ``exists``: the
    output is already there and ``overwrite`` was not given, so the input is skipped."""

    input: InputFile
    output: Path
    sidecar: Path
    exists: bool = False
    error: str | None = None


def _name_key(p: Path) -> str:
    # case- and normalisation-insensitive: on macOS/Windows "A.png"/"a.png" and NFC/NFD names are one file
    return unicodedata.normalize("NFC", str(p)).casefold()


def _realkey(p: Path) -> str:
    return _name_key(Path(os.path.realpath(p)))


def plan_outputs(
    inputs: Sequence[InputFile],
    out_dir: str | Path,
    *,
    fmt: str | None = None,
    overwrite: bool = False,
    suffix: str = "",
) -> list[OutputPlan]:
    """Decide the output (and sidecar JSON) path of each input, independent of the input order.

    The output is ``out_dir / rel`` with the extension of ``fmt`` (default png) and ``suffix`` added to the
    stem. Inputs whose outputs would collide (``a.jpg`` + ``a.png``, case-insensitively) get the input
    extension in the stem (``a_jpg.png``, ``a_png.png``); a collision that remains is refused for all
    inputs involved. An output that is any input (same path, symlink, hard link, ``-o .``) is refused even
    with ``overwrite``. An existing output is marked ``exists`` (skip) unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    ext = format_extension(fmt or "png")

    def target(item: InputFile, tagged: bool) -> Path:
        stem = item.rel.stem + (f"_{item.rel.suffix.lstrip('.')}" if tagged and item.rel.suffix else "")
        return out_dir / item.rel.parent / f"{stem}{suffix}{ext}"

    def groups(targets: dict[InputFile, Path]) -> dict[str, list[InputFile]]:
        g: dict[str, list[InputFile]] = {}
        for item, t in targets.items():
            g.setdefault(_name_key(t), []).append(item)
        return g

    targets = {item: target(item, False) for item in inputs}
    for members in groups(targets).values():
        if len(members) > 1:
            for item in members:
                targets[item] = target(item, True)
    clash: dict[InputFile, str] = {}
    for members in groups(targets).values():
        if len(members) > 1:
            for item in members:
                others = ", ".join(str(o.path) for o in members if o is not item)
                clash[item] = f"would write the same output {targets[item]} as {others}"
    input_keys: dict[str, Path] = {}
    for item in inputs:
        input_keys[_realkey(item.path)] = item.path
    plans = []
    for item in inputs:
        out = targets[item]
        side = out.with_suffix(".json")
        error = clash.get(item)
        if error is None:
            for p in (out, side):
                hit = input_keys.get(_realkey(p))
                if hit is None and p.exists():
                    hit = next((i.path for i in inputs if _samefile(i.path, p)), None)
                if hit is not None:
                    error = f"output {p} is the input {hit}; choose another output folder"
                    break
        if error is None and out.is_dir():
            error = f"output {out} is a folder"
        exists = error is None and out.exists() and not overwrite
        plans.append(OutputPlan(item, out, side, exists=exists, error=error))
    return plans


def _samefile(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
