"""Writing image files (DESIGN.md §5 step 9): `save_image`, `atomic_write` and the output-format rules.

Writes are atomic (temp file in the destination folder, fsync, ``os.replace``), 8 or 16 bit, format from the
extension or explicit, alpha re-attached, grey in -> grey out. 16-bit PNG and TIFF go through
:mod:`seesr.io.codecs16` because Pillow has no 48/64-bit RGB(A) mode.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from seesr.io.codecs16 import encode_png16, encode_tiff16

#: output format name -> (Pillow format, default extension)
_FORMATS: dict[str, tuple[str, str]] = {
    "png": ("PNG", ".png"),
    "jpeg": ("JPEG", ".jpg"),
    "webp": ("WEBP", ".webp"),
    "tiff": ("TIFF", ".tif"),
}
_FORMAT_ALIASES = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp", "tif": "tiff", "tiff": "tiff"}
_ALPHA_FORMATS = frozenset({"png", "webp", "tiff"})
_16BIT_FORMATS = frozenset({"png", "tiff"})


def resolve_format(path: str | Path, format: str | None = None) -> str:
    """Output format name ("png", "jpeg", "webp", "tiff") from ``format`` or the extension of ``path``.

    Raises:
        ValueError: unknown format name or extension.
    """
    key = (format or Path(path).suffix.lstrip(".")).lower()
    if key not in _FORMAT_ALIASES:
        what = f"format {format!r}" if format else f"output extension {Path(path).suffix or '(none)'!r}"
        raise ValueError(f"unknown {what}; expected one of png, jpg, webp, tif")
    return _FORMAT_ALIASES[key]


def format_extension(format: str) -> str:
    """Default file extension (with dot) for an output format name or alias."""
    return _FORMATS[resolve_format("", format)][1]


def check_output_options(format: str, *, has_alpha: bool, bit_depth: int) -> None:
    """Refuse, before any compute, combinations the output format cannot store.

    Raises:
        ValueError: alpha into JPEG, 16-bit into JPEG/WebP, or a bit depth other than 8/16.
    """
    fmt = resolve_format("", format)
    if bit_depth not in (8, 16):
        raise ValueError(f"bit depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and fmt not in _16BIT_FORMATS:
        raise ValueError(f"{fmt.upper()} stores 8 bits per channel; use png or tif for 16-bit output")
    if has_alpha and fmt not in _ALPHA_FORMATS:
        raise ValueError(f"image has an alpha channel that {fmt.upper()} cannot store; use png, webp or tif")


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """Create a new, empty temp file next to ``name`` in ``folder``; returns (fd, path).

    Mode 0o666 goes through the process umask (and a default ACL of the folder) in the kernel, so the file
    gets the permissions that ``open(path, "w")`` would give it, without reading or changing the umask.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(6)}.part"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {folder / name}")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temp file in the same folder, fsync it, then ``os.replace`` it into place.

    A failure or interrupt at any point leaves either the old file or the complete new one, never a partial
    file or a stray temp file. An existing symlink at ``path`` is replaced, not written through. The new file
    has the permissions a plain ``open()`` would give it (the process umask applies).
    ``write`` receives the open binary temp file; its return value is ignored.
    """
    path = Path(path)
    folder = path.parent
    fd, tmp = _create_temp(folder, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # persist the rename itself (POSIX)
        with contextlib.suppress(OSError):
            dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def _as_hwc(x: Any, name: str) -> np.ndarray:
    """(H,W,C) view of ``x``: uint8 / uint16 arrays keep their dtype (codes), anything else becomes float32."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().to("cpu")
        x = (
            x.numpy()
            if str(x.dtype) in ("torch.uint8", "torch.uint16", "torch.float32")
            else x.float().numpy()
        )
    a = np.asarray(x)
    if a.dtype not in (np.uint8, np.uint16):
        a = a.astype(np.float32, copy=False)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)  # (C,H,W) -> (H,W,C)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must be (H,W,3), (3,H,W), (1,3,H,W) or (H,W); got shape {tuple(a.shape)}")
    return a


#: rows converted at a time when the written array differs from the given one (grey, alpha, dtype)
_BAND_PIXELS = 1 << 20


def _unit(a: np.ndarray) -> np.ndarray:
    """float32 values in [0, 1] of a band: codes / 255 or / 65535 (exactly the float32 ``k / 255`` of the 8-bit
    chain for both), float bands unchanged."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535
    return a


def _quantise(a: np.ndarray, bit_depth: int) -> np.ndarray:
    top = 255 if bit_depth == 8 else 65535
    return np.round(np.clip(a, 0.0, 1.0) * top).astype(np.uint8 if bit_depth == 8 else np.uint16)


def _encode(a: np.ndarray, alpha: np.ndarray | None, bit_depth: int, grey: bool) -> np.ndarray:
    """The (H,W,C) array to write: grey and/or alpha channels, quantised to ``bit_depth``, band by band.

    An RGB array already in the written dtype is returned as is (no copy); otherwise one array of the written
    dtype is filled, so that no full-size float copy exists beside ``a``.
    """
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    if a.dtype == dtype and not grey and alpha is None and a.shape[-1] == 3:
        return a
    h, w = a.shape[:2]
    out = np.empty((h, w, (1 if grey else 3) + (alpha is not None)), dtype=dtype)
    step = max(1, _BAND_PIXELS // max(1, w))
    for y0 in range(0, h, step):
        band = _unit(a[y0 : y0 + step])
        if not np.isfinite(band).all():
            raise ValueError("rgb contains NaN or infinity")
        if band.shape[-1] == 1:
            band = np.repeat(band, 3, axis=2)
        chans = [to_grey(band)[..., None]] if grey else [band]
        if alpha is not None:
            chans.append(alpha[y0 : y0 + step])
        out[y0 : y0 + step] = _quantise(
            np.concatenate(chans, axis=2) if len(chans) > 1 else chans[0], bit_depth
        )
    return out


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) -> (H,W) with ITU-R 601 luma weights (what Pillow's ``convert("L")`` uses)."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def save_image(
    path: str | Path,
    rgb: Any,
    *,
    alpha: Any | None = None,
    bit_depth: int = 8,
    grey: bool = False,
    format: str | None = None,
    icc_profile: bytes | None = None,
    quality: int = 95,
) -> None:
    """Write an image atomically.

    Args:
        path: destination; its folder must exist.
        rgb: (H,W,3) / (3,H,W) / (1,3,H,W) float in [0,1] (numpy or torch), sRGB; values are clipped. Or uint8 /
            uint16 codes (``k / 255`` / ``k / 65535``): written as they are when they match ``bit_depth`` and
            neither grey nor alpha is asked for (no copy), else converted band by band.
        alpha: optional (H,W) float in [0,1], same H,W.
        bit_depth: 8 or 16 (16 only for PNG/TIFF).
        grey: write one luma channel (grey in -> grey out).
        format: "png", "jpg", "webp", "tif"; default from the extension of ``path``.
        icc_profile: profile bytes to embed (carried from the input), or None for plain sRGB.
        quality: JPEG quality (4:4:4 chroma); WebP is written lossless.

    Raises:
        ValueError: unknown format, alpha into JPEG, 16 bit into JPEG/WebP, wrong shapes.
    """
    path = Path(path)
    fmt = resolve_format(path, format)
    check_output_options(fmt, has_alpha=alpha is not None, bit_depth=bit_depth)
    a = _as_hwc(rgb, "rgb")
    al = None
    if alpha is not None:
        al = _unit(_as_hwc(alpha, "alpha"))
        if al.shape[:2] != a.shape[:2] or al.shape[-1] != 1:
            raise ValueError(f"alpha must be (H,W)={a.shape[:2]}, got {tuple(al.shape)}")
        if not np.isfinite(al).all():
            raise ValueError("alpha contains NaN or infinity")
    data = _encode(a, al, bit_depth, grey)
    if fmt == "tiff" and data.shape[-1] == 2:  # grey+alpha TIFF is not widely readable (Pillow neither)
        data = data[..., [0, 0, 0, 1]]
    if bit_depth == 16:
        writer = encode_png16 if fmt == "png" else encode_tiff16
        atomic_write(path, lambda f: f.write(writer(data, icc_profile)))
        return
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[data.shape[-1]]
    img = Image.fromarray(data[..., 0] if mode == "L" else data)
    assert img.mode == mode, (img.mode, mode)
    if fmt == "webp" and mode in ("L", "LA"):
        img = img.convert("RGBA" if mode == "LA" else "RGB")  # WebP has no grey mode
    kwargs: dict[str, Any] = {}
    if icc_profile:
        kwargs["icc_profile"] = icc_profile
    if fmt == "jpeg":
        kwargs.update(quality=quality, subsampling=0)
    elif fmt == "webp":
        kwargs.update(lossless=True, quality=100)  # SR output is kept exact; JPEG is the lossy choice
    elif fmt == "tiff":
        kwargs.update(compression="tiff_deflate")
    pil_format = _FORMATS[fmt][0]
    atomic_write(path, lambda f: img.save(f, format=pil_format, **kwargs))


def upscale_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an alpha plane (H,W) float in [0,1] to ``size`` = (width, height), bicubic, clamped to [0,1]."""
    a = np.asarray(alpha, dtype=np.float32)
    out = Image.fromarray(a).resize(tuple(int(s) for s in size), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)
