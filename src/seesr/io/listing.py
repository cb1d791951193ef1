"""Listing inputs (`list_inputs`): files, folders (recursive, hidden entries skipped, symlink loops not
followed) and globs, filtered by `IMAGE_EXTENSIONS` — the one list of image file extensions of seesr.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: Extensions picked up when a folder or glob is listed (explicitly named files are always tried).
IMAGE_EXTENSIONS = frozenset(
    [
        ".png",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".webp",
        ".tif",
        ".tiff",
        ".bmp",
        ".dib",
        ".gif",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".tga",
        ".jp2",
        ".j2k",
        ".avif",
        ".heic",
        ".heif",
        ".mpo",
    ]
)


@dataclass(frozen=True)
class InputFile:
    """One listed input: ``path`` to read and ``rel``, the relative name its outputs are derived from."""

    path: Path
    rel: Path

    def __fspath__(self) -> str:
        return os.fspath(self.path)


def _is_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def _walk(root: Path, exclude: set[tuple[int, int]]) -> Iterator[Path]:
    """Files under ``root`` (sorted, recursive, hidden entries skipped); each real folder visited once, so
    symlink loops end and a folder reached twice through links is not listed twice. Sub-folders in
    ``exclude`` are not entered (``root`` itself always is)."""
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            logger.warning("skipping unreadable folder %s", folder)
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen or (key in exclude and folder is not root):
            continue
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            logger.warning("skipping unreadable folder %s (%s)", folder, err)
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            p = Path(entry.path)
            try:
                if entry.is_dir():
                    subdirs.append(p)
                elif entry.is_file():
                    yield p
                elif entry.is_symlink():
                    logger.warning("skipping broken link %s", p)
            except OSError:
                continue
        stack.extend(reversed(subdirs))


def list_inputs(
    paths: Sequence[str | os.PathLike[str]], *, exclude: Sequence[str | Path] = ()
) -> list[InputFile]:
    """Expand files, folders and globs into a sorted, de-duplicated list of inputs.

    * A file named explicitly is always included (its content is checked when it is read).
    * Folders are walked recursively; only files with an image extension (`IMAGE_EXTENSIONS`, any case)
      are taken, hidden files/folders (leading ".") are skipped, symlinked folders are followed once
      (loops end). ``rel`` keeps the sub-folder structure relative to the folder given.
    * Globs (``*``, ``?``, ``[``) expand like the shell (``**`` recursive); matched files are filtered by
      extension like folder members.
    * The same file reached twice (links, overlapping arguments) is listed once.
    * Folders in ``exclude`` (e.g. the output folder inside an input folder) are not walked into, so a
      second run does not pick up the first run's outputs.

    Raises:
        FileNotFoundError: a path that does not exist or a glob that matches nothing.
        ValueError: nothing to process.
    """
    excl: set[tuple[int, int]] = set()
    for e in exclude:
        with contextlib.suppress(OSError):
            st = os.stat(e)
            excl.add((st.st_dev, st.st_ino))
    found: list[InputFile] = []

    def add_dir(d: Path) -> None:
        for f in _walk(d, excl):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                found.append(InputFile(f, f.relative_to(d)))

    for raw in paths:
        s = os.fspath(raw)
        p = Path(s)
        if p.is_file():
            found.append(InputFile(p, Path(p.name)))
        elif p.is_dir():
            add_dir(p)
        elif _is_glob(s):
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                raise FileNotFoundError(f"no file matches {s!r}")
            for m in map(Path, matches):
                if m.is_dir():
                    add_dir(m)
                elif m.is_file() and m.suffix.lower() in IMAGE_EXTENSIONS and not m.name.startswith("."):
                    found.append(InputFile(m, Path(m.name)))
        elif p.is_symlink():
            raise FileNotFoundError(f"{s}: broken symbolic link")
        else:
            raise FileNotFoundError(f"input not found: {s}")
    found.sort(key=lambda i: (str(i.rel), str(i.path)))
    unique: list[InputFile] = []
    seen: set[tuple[int, int]] = set()
    for item in found:
        st = item.path.stat()
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    if not unique:
        raise ValueError(f"no images found in {', '.join(os.fspath(p) for p in paths) or '(no inputs)'}")
    return unique
