"""16-bit PNG/TIFF codecs that Pillow lacks: decoding both bytes of 48/64-bit RGB(A) and 32-bit grey+alpha,
and encoding 16-bit PNG and TIFF (Pillow has no 48/64-bit RGB(A) mode to write from).

Arrays are uint16 (H,W,C): C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def rawmode(im: Image.Image) -> str:
    """The rawmode of the first tile of an opened (not yet loaded) image, or "" when it has none."""
    if not im.tile:
        return ""
    args = im.tile[0].args
    raw = args[0] if isinstance(args, tuple) else args
    return raw if isinstance(raw, str) else ""


def is_wide16(raw: str) -> bool:
    """True for the 48/64-bit RGB(A) rawmodes that Pillow unpacks to 8 bits per channel."""
    return raw.startswith(("RGB;16", "RGBA;16", "RGBX;16")) and raw[-3:] in ("16B", "16L", "16N")


def decode_wide16(path: Path, im: Image.Image) -> np.ndarray:
    """Decode a 48/64-bit RGB(A) PNG/TIFF to uint16 (H,W,C).

    Pillow unpacks these with a 16->8 bit unpacker that keeps the high byte (rawmode ``RGB;16B`` for
    big-endian data). Decoding a second time with the opposite byte order makes the same unpacker keep the
    low byte instead; the filter/decompression stage is identical because both rawmodes have 48/64 bits.
    ``im`` must already be loaded (it gives the high bytes).
    """
    other = {"16B": "16L", "16L": "16B", "16N": "16B" if sys.byteorder == "little" else "16L"}

    def swap(args: Any) -> Any:
        raw = args[0] if isinstance(args, tuple) else args
        base, _, order = raw.rpartition(";")
        raw = f"{base};{other[order]}"
        return (raw, *args[1:]) if isinstance(args, tuple) else raw

    high = np.asarray(im, dtype=np.uint16)
    with Image.open(path) as again:
        again.tile = [t._replace(args=swap(t.args)) for t in again.tile]
        again.load()
        low = np.asarray(again, dtype=np.uint16)
    return (high << 8) | low


def decode_la16(path: Path) -> np.ndarray:
    """Decode a 16-bit grey+alpha PNG (rawmode ``LA;16B``) to uint16 (H,W,2).

    Pillow reads it as 8-bit LA; decoding the same 4 bytes per pixel as 8-bit RGBA gives all four bytes.
    """
    with Image.open(path) as again:
        again.tile = [t._replace(args="RGBA") for t in again.tile]
        again.load()
        raw = np.asarray(again, dtype=np.uint16)
    return np.stack([(raw[..., 0] << 8) | raw[..., 1], (raw[..., 2] << 8) | raw[..., 3]], axis=-1)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def encode_png16(data: np.ndarray, icc: bytes | None) -> bytes:
    """16-bit PNG of uint16 (H,W,C), C in 1..4; every row uses the "Up" filter (vectorised, compresses well)."""
    h, w, c = data.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = data.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * c * 2)
    up = rows.copy()
    up[1:] = rows[1:] - rows[:-1]  # uint8 wrap-around is the PNG modulo-256 arithmetic
    raw = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1).tobytes()
    out = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))]
    if icc:
        out.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    out += [_png_chunk(b"IDAT", zlib.compress(raw, 6)), _png_chunk(b"IEND", b"")]
    return b"".join(out)


def encode_tiff16(data: np.ndarray, icc: bytes | None) -> bytes:
    """Uncompressed little-endian baseline TIFF of uint16 (H,W,C), one strip; channel 2 or 4 = alpha."""
    h, w, c = data.shape
    pixels = data.astype("<u2").tobytes()
    shorts = lambda *v: struct.pack(f"<{len(v)}H", *v)  # noqa: E731
    longs = lambda *v: struct.pack(f"<{len(v)}I", *v)  # noqa: E731
    # tag -> (TIFF type, count, little-endian payload); type 3 = SHORT, 4 = LONG, 7 = UNDEFINED
    tags: dict[int, tuple[int, int, bytes]] = {
        256: (4, 1, longs(w)),
        257: (4, 1, longs(h)),
        258: (3, c, shorts(*([16] * c))),
        259: (3, 1, shorts(1)),  # no compression
        262: (3, 1, shorts(2 if c >= 3 else 1)),  # RGB or min-is-black
        273: (4, 1, longs(0)),  # strip offset, set below
        277: (3, 1, shorts(c)),
        278: (4, 1, longs(h)),
        279: (4, 1, longs(len(pixels))),
        284: (3, 1, shorts(1)),  # interleaved samples
        339: (3, c, shorts(*([1] * c))),  # unsigned integers
    }
    if c in (2, 4):
        tags[338] = (3, 1, shorts(2))  # the extra sample is unassociated alpha
    if icc:
        tags[34675] = (7, len(icc), icc)
    order = sorted(tags)
    ifd_end = 8 + 2 + 12 * len(order) + 4
    big = sum(len(p) + len(p) % 2 for _, _, p in tags.values() if len(p) > 4)
    tags[273] = (4, 1, longs(ifd_end + big))
    ifd, heap = [shorts(len(order))], []
    at = ifd_end
    for tag in order:
        typ, count, payload = tags[tag]
        if len(payload) <= 4:
            ifd.append(shorts(tag, typ) + longs(count) + payload.ljust(4, b"\0"))
        else:
            ifd.append(shorts(tag, typ) + longs(count, at))
            heap.append(payload + b"\0" * (len(payload) % 2))
            at += len(heap[-1])
    ifd.append(longs(0))
    return b"II*\x00" + longs(8) + b"".join(ifd) + b"".join(heap) + pixels
