"""What a file's first bytes say it is; only used to word error messages (decoding always goes through
Pillow's own content detection)."""

from __future__ import annotations

from pathlib import Path

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"GIF8", 0, "GIF"),
    (b"WEBP", 8, "WEBP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"BM", 0, "BMP"),
    (b"ftypavif", 4, "AVIF"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypheix", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIF"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG2000"),
)


def sniff_format(path: str | Path) -> str | None:
    """Format named by the file's first bytes (PNG, JPEG, GIF, WEBP, TIFF, BMP, AVIF, HEIC, ...), or None.

    Only used to word error messages; decoding always goes through Pillow's own content detection.
    """
    with open(path, "rb") as f:
        head = f.read(32)
    for magic, offset, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def describe_non_image(path: Path) -> str:
    """A short guess at what a file that is not an image is (HTML, XML/SVG, text, or its first bytes)."""
    with open(path, "rb") as f:
        head = f.read(64)
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "looks like HTML (a saved web page?)"
    if text.startswith((b"<?xml", b"<svg")):
        return "looks like XML/SVG (vector images are not supported)"
    try:
        head.decode("utf-8")
        return "looks like text"
    except UnicodeDecodeError:
        return f"starts with bytes {head[:8].hex(' ')}"
