"""The only image-file I/O of seesr (DESIGN.md §5 steps 1 and 9; every row of spec/bad_inputs.md).

Reading (`load_image`):
    * content is sniffed (Pillow identifies the format from the bytes; the extension is ignored);
    * the pixel count is checked against ``max_pixels`` from the header, before any pixel is decoded;
    * truncated files are an error unless ``allow_truncated=True``;
    * multi-frame files (animated GIF/WebP/PNG, multi-page TIFF) are refused; an MPO (camera JPEG with an
      embedded preview) gives its primary frame with a warning;
    * EXIF orientation 2-8 is applied, so pixels are upright;
    * alpha (RGBA, LA, palette or grey/RGB + tRNS) is returned separately, never dropped;
    * 16-bit PNG/TIFF keep all 16 bits (Pillow reads 48/64-bit RGB(A) as 8-bit, so both bytes are decoded
      separately) and are scaled by 1/65535; 32-bit float grey TIFF is taken as [0,1] and refused when its
      values fall outside (no clipping to a black/white image);
    * CMYK (Adobe-inverted included) is converted to sRGB through its ICC profile when present;
    * colour management: 8-bit images with a non-sRGB ICC profile (Adobe RGB, Display P3, ...) are
      converted to sRGB (relative colorimetric) and the output is sRGB without a profile. 16-bit images
      and grey images keep their pixel values and their profile is carried to the output
      (``LoadedImage.icc_profile``), because littlecms in Pillow only transforms 8-bit data.

Writing (`save_image`): atomic (temp file in the destination folder, fsync, ``os.replace``), 8 or 16 bit,
format from the extension or explicit, alpha re-attached, grey in -> grey out. 16-bit PNG and TIFF are
written by this module because Pillow has no 48/64-bit RGB(A) mode.

Listing and planning (`list_inputs`, `plan_outputs`): files, folders (recursive, hidden entries skipped,
symlink loops not followed) and globs; outputs that would collide or overwrite an input are refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import logging
import os
import struct
import sys
import tempfile
import threading
import unicodedata
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile

from seesr.errors import BadImageError

logger = logging.getLogger(__name__)

#: Default input cap (8192 x 8192): below Pillow's decompression-bomb warning (89,478,485 px).
DEFAULT_MAX_PIXELS = 8192 * 8192
#: Default output cap (16384 x 16384): a x4 result of a 4096 x 4096 input.
DEFAULT_MAX_OUTPUT_PIXELS = 16384 * 16384

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

# Pillow keeps the decompression-bomb limit and the truncated-file switch in module globals; this lock
# serialises the rare moments where they are changed for one call.
_PIL_GLOBALS_LOCK = threading.RLock()


# ----------------------------------------------------------------------------------------------------------
# data types


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image, ready for the pipeline.

    Attributes:
        rgb: (H,W,3) float32 in [0,1], sRGB (see the module docstring for ICC), upright; grey images are
            replicated to 3 channels.
        alpha: (H,W) float32 in [0,1] or None when the file has no transparency.
        is_grey: the source was grey/bilevel (or RGB with three identical channels): write grey output.
        bit_depth: bits per sample of the source (1, 8, 16 or 32 for float).
        source: path the image was read from.
        warnings: decoder or conversion notes worth showing to the user.
        icc_profile: profile to carry to the output when the pixels were not converted to sRGB, else None.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    is_grey: bool
    bit_depth: int
    source: Path
    warnings: tuple[str, ...] = ()
    icc_profile: bytes | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright image."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


@dataclass(frozen=True)
class ImageInfo:
    """What the header says, without decoding pixels (`probe_image`).

    ``width``/``height`` are the stored size (EXIF orientation may swap them; the pixel count is the same).
    """

    path: Path
    format: str
    mode: str
    width: int
    height: int
    has_alpha: bool
    n_frames: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class InputFile:
    """One listed input: ``path`` to read and ``rel``, the relative name its outputs are derived from."""

    path: Path
    rel: Path

    def __fspath__(self) -> str:
        return os.fspath(self.path)


@dataclass(frozen=True)
class OutputPlan:
    """Where one input goes. ``error`` set: refused (collision, output is an input); ``exists``: the
    output is already there and ``overwrite`` was not given, so the input is skipped."""

    input: InputFile
    output: Path
    sidecar: Path
    exists: bool = False
    error: str | None = None


# ----------------------------------------------------------------------------------------------------------
# Pillow global switches


@contextlib.contextmanager
def _pillow_globals(*, no_bomb_limit: bool = False, load_truncated: bool = False) -> Iterator[None]:
    if not (no_bomb_limit or load_truncated):
        yield
        return
    with _PIL_GLOBALS_LOCK:
        old_max, old_trunc = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        try:
            if no_bomb_limit:
                Image.MAX_IMAGE_PIXELS = None
            if load_truncated:
                ImageFile.LOAD_TRUNCATED_IMAGES = True
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_max, old_trunc


# ----------------------------------------------------------------------------------------------------------
# sniffing and opening

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


def _describe_non_image(path: Path) -> str:
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


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open (header only) and enforce the pixel cap; raises `BadImageError` for every unusable file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if path.is_dir():
        raise BadImageError(f"{path}: is a folder, expected an image file")
    if st.st_size == 0:
        raise BadImageError(f"{path}: empty file (0 bytes)")
    try:
        try:
            with warnings.catch_warnings():
                # our own cap (below) decides; Pillow's warning would only add noise on stderr
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(path)
        except Image.DecompressionBombError:
            # Over Pillow's own hard limit: read the header again without it only to report the size.
            with _pillow_globals(no_bomb_limit=True):
                im = Image.open(path)
    except PermissionError:
        raise BadImageError(f"{path}: permission denied") from None
    except Image.UnidentifiedImageError:
        sniffed = sniff_format(path)
        if sniffed in ("HEIC", "HEIF", "AVIF", "JPEG2000"):
            raise BadImageError(f"{path}: {sniffed} image that this Pillow build cannot decode") from None
        if sniffed == "TIFF":
            raise BadImageError(
                f"{path}: TIFF layout not supported (supported: 8/16-bit grey, RGB, RGBA and 32-bit float "
                "grey; e.g. float RGB or 2-channel TIFF is not)"
            ) from None
        if sniffed is not None:
            raise BadImageError(f"{path}: {sniffed} file that cannot be decoded (corrupt header?)") from None
        raise BadImageError(f"{path}: not a recognised image ({_describe_non_image(path)})") from None
    except OSError as err:
        raise BadImageError(f"{path}: cannot be read as an image ({err})") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise BadImageError(
            f"{path}: {w}x{h} = {w * h} pixels is over the input cap of {max_pixels} pixels "
            "(raise max_pixels / --max-pixels to allow it); not decoded"
        )
    return im


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        im.mode in ("P", "L", "RGB", "I;16", "I;16B", "I;16L") and "transparency" in im.info
    )


def probe_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read only the header of ``path``: size, mode, alpha, frame count.

    Raises:
        BadImageError: empty, not an image, undecodable header, or over ``max_pixels``.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    with _open(path, max_pixels) as im:
        return ImageInfo(
            path=path,
            format=str(im.format),
            mode=im.mode,
            width=im.size[0],
            height=im.size[1],
            has_alpha=_has_alpha(im),
            n_frames=int(getattr(im, "n_frames", 1)),
        )


# ----------------------------------------------------------------------------------------------------------
# decoding


def _decode16(path: Path, im: Image.Image) -> np.ndarray:
    """Decode a 48/64-bit RGB(A) PNG/TIFF to uint16 (H,W,C).

    Pillow unpacks these with a 16->8 bit unpacker that keeps the high byte (rawmode ``RGB;16B`` for
    big-endian data). Decoding a second time with the opposite byte order makes the same unpacker keep the
    low byte instead; the filter/decompression stage is identical because both rawmodes have 48/64 bits.
    """
    other = {"16B": "16L", "16L": "16B", "16N": "16B" if sys.byteorder == "little" else "16L"}

    def swap(args: Any) -> Any:
        raw = args[0] if isinstance(args, tuple) else args
        base, _, order = raw.rpartition(";")
        raw = f"{base};{other[order]}"
        return (raw, *args[1:]) if isinstance(args, tuple) else raw

    high = np.asarray(im, dtype=np.uint16)  # `im` was loaded by the caller with its own rawmode
    with Image.open(path) as again:
        again.tile = [t._replace(args=swap(t.args)) for t in again.tile]
        again.load()
        low = np.asarray(again, dtype=np.uint16)
    return (high << 8) | low


def _rawmode(im: Image.Image) -> str:
    if not im.tile:
        return ""
    args = im.tile[0].args
    raw = args[0] if isinstance(args, tuple) else args
    return raw if isinstance(raw, str) else ""


def _is_wide16(rawmode: str) -> bool:
    return rawmode.startswith(("RGB;16", "RGBA;16", "RGBX;16")) and rawmode[-3:] in ("16B", "16L", "16N")


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation to an (H,W[,C]) array (same result as ``ImageOps.exif_transpose``)."""
    if orientation == 2:
        a = a[:, ::-1]
    elif orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 4:
        a = a[::-1]
    elif orientation == 5:
        a = a.swapaxes(0, 1)
    elif orientation == 6:
        a = np.rot90(a, k=-1)
    elif orientation == 7:
        a = np.rot90(a.swapaxes(0, 1), k=2)
    elif orientation == 8:
        a = np.rot90(a, k=1)
    return np.ascontiguousarray(a)


def _icc_to_srgb(im: Image.Image, icc: bytes, notes: list[str]) -> tuple[Image.Image, bytes | None]:
    """Convert an 8-bit RGB/RGBA/CMYK image to sRGB with its ICC profile; returns (image, carried profile)."""
    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = (ImageCms.getProfileDescription(src) or "").strip()
    except Exception as err:  # unreadable profile: keep pixels, carry the bytes
        notes.append(f"unreadable ICC profile ({err}); pixels kept as stored and the profile carried")
        return im, icc
    if im.mode != "CMYK" and "srgb" in desc.lower():
        return im, None
    out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
    alpha = im.getchannel("A") if im.mode == "RGBA" else None
    try:
        conv = ImageCms.profileToProfile(
            im.convert("RGB") if im.mode == "RGBA" else im,
            src,
            ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            outputMode="RGB",
        )
    except Exception as err:
        notes.append(f"ICC profile '{desc}' could not be applied ({err}); pixels kept and profile carried")
        return im, icc
    if alpha is not None:
        conv.putalpha(alpha)
    notes.append(f"converted from ICC profile '{desc}' to sRGB")
    return conv.convert(out_mode) if conv.mode != out_mode else conv, None


def load_image(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, allow_truncated: bool = False
) -> LoadedImage:
    """Read one image file into float32 RGB (+ alpha), upright and in [0,1].

    Args:
        path: the file; its content decides the format, not its extension.
        max_pixels: refuse (before decoding) images with more stored pixels than this.
        allow_truncated: decode truncated files anyway (the missing part is filled by the decoder, e.g. grey
            rows for JPEG); a warning says so.

    Returns:
        `LoadedImage` (see its docstring for shapes/ranges).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        BadImageError: empty, not an image, truncated, multi-frame, over the cap, out-of-range float data,
            or a pixel layout that cannot be represented faithfully.
    """
    path = Path(path)
    notes: list[str] = []
    im = _open(path, max_pixels)
    try:
        n_frames = int(getattr(im, "n_frames", 1))
        if n_frames > 1:
            if im.format == "MPO":
                notes.append(f"MPO file with {n_frames} frames: using the primary image")
            else:
                raise BadImageError(
                    f"{path}: multi-frame {im.format} ({n_frames} frames) is not supported; "
                    "extract the frame you want into its own file"
                )
        rawmode = _rawmode(im)
        truncated = False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                im.load()
            except (SyntaxError, ValueError, EOFError, struct.error, zlib.error) as err:
                raise BadImageError(f"{path}: cannot decode {im.format} data ({err})") from None
            except OSError as err:
                msg = str(err)
                if "truncated" not in msg and "broken data stream" not in msg:
                    raise BadImageError(f"{path}: cannot decode {im.format} data ({msg})") from None
                what = "truncated" if "truncated" in msg else "truncated or corrupt"
                if not allow_truncated:
                    raise BadImageError(
                        f"{path}: {what} {im.format} file ({msg}); refusing a partly blank result "
                        "(pass --allow-truncated / allow_truncated=True to accept it)"
                    ) from None
                im.close()
                with _pillow_globals(load_truncated=True):
                    im = _open(path, max_pixels)
                    try:
                        im.load()
                    except OSError as err2:
                        raise BadImageError(f"{path}: cannot decode even as truncated ({err2})") from None
                notes.append(f"truncated {im.format} file: the missing part was filled by the decoder")
                truncated = True
        for w in caught:
            if not issubclass(w.category, Image.DecompressionBombWarning):
                notes.append(f"decoder warning: {w.message}")
        orientation = _exif_orientation(im)
        icc = im.info.get("icc_profile") or None
        # 16-bit layouts decode the file a second time: under the same truncation allowance
        with _pillow_globals(load_truncated=truncated):
            rgb, alpha, is_grey, bit_depth, carried = _to_arrays(path, im, rawmode, icc, notes)
    finally:
        im.close()
    if orientation != 1:
        rgb = _orient(rgb, orientation)
        alpha = None if alpha is None else _orient(alpha, orientation)
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        is_grey=is_grey,
        bit_depth=bit_depth,
        source=path,
        warnings=tuple(notes),
        icc_profile=carried,
    )


def _to_arrays(
    path: Path, im: Image.Image, rawmode: str, icc: bytes | None, notes: list[str]
) -> tuple[np.ndarray, np.ndarray | None, bool, int, bytes | None]:
    """Pixels of a loaded Pillow image -> (rgb (H,W,3) f32, alpha (H,W) f32 | None, is_grey, bits, icc)."""
    mode = im.mode
    alpha: np.ndarray | None = None
    carried: bytes | None = None
    if _is_wide16(rawmode):  # 48/64-bit RGB(A): both bytes, no clipping
        raw16 = _decode16(path, im)
        data = raw16.astype(np.float32) / 65535.0
        rgb, alpha = data[..., :3], (data[..., 3] if mode == "RGBA" and rawmode.startswith("RGBA") else None)
        key = im.info.get("transparency")
        if alpha is None and isinstance(key, tuple) and len(key) == 3:  # tRNS colour key, 16-bit values
            alpha = (raw16[..., :3] != np.array(key, dtype=np.uint16)).any(axis=-1).astype(np.float32)
        is_grey = bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))
        if icc:
            carried = icc
            notes.append("16-bit image with an ICC profile: pixels kept, profile carried to the output")
        return np.ascontiguousarray(rgb), alpha, is_grey, 16, carried
    if rawmode == "LA;16B":  # 16-bit grey+alpha PNG: decode the raw 4 bytes/pixel as 8-bit RGBA
        im.close()
        with Image.open(path) as again:
            again.tile = [t._replace(args="RGBA") for t in again.tile]
            again.load()
            raw = np.asarray(again, dtype=np.uint16)
        grey = ((raw[..., 0] << 8) | raw[..., 1]).astype(np.float32) / 65535.0
        alpha = ((raw[..., 2] << 8) | raw[..., 3]).astype(np.float32) / 65535.0
        return np.repeat(grey[..., None], 3, axis=2), alpha, True, 16, icc
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im)
        if mode == "I" and (a.min() < 0 or a.max() > 65535):
            raise BadImageError(
                f"{path}: 32-bit integer image with values in [{a.min()}, {a.max()}]; expected 0..65535"
            )
        grey = a.astype(np.float32) / 65535.0
        if "transparency" in im.info and isinstance(im.info["transparency"], int):
            alpha = (a != im.info["transparency"]).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=2), alpha, True, 16, icc
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        if not np.isfinite(a).all():
            raise BadImageError(f"{path}: float image contains NaN or infinity")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise BadImageError(
                f"{path}: float image with values in [{lo:.4g}, {hi:.4g}]; expected [0, 1] "
                "(rescale it, or save it as 8/16-bit)"
            )
        grey = np.clip(a, 0.0, 1.0)  # only removes float round-off beyond the 1e-3 slack above
        return np.repeat(grey[..., None], 3, axis=2), None, True, 32, icc
    bits = 1 if mode == "1" else 8
    grey_modes = ("1", "L", "LA", "La")
    if mode == "P":
        pal_mode = im.palette.mode if im.palette is not None else "RGB"
        im = im.convert("RGBA" if _has_alpha(im) or pal_mode == "RGBA" else "RGB")
    elif mode in ("L", "1") and "transparency" in im.info:
        im = im.convert("LA")
    elif mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode in ("La", "RGBa"):
        im = im.convert(mode.upper())
    elif mode == "CMYK":
        if icc:
            im, kept = _icc_to_srgb(im, icc, notes)
            if kept is not None:  # a CMYK profile means nothing to RGB output
                notes.append("CMYK converted with the naive formula instead (colours approximate)")
            icc = None
        else:
            notes.append(
                "CMYK without an ICC profile: converted with the naive formula (colours approximate)"
            )
        im = im.convert("RGB")
    elif mode not in ("RGB", "RGBA", "L", "LA", "1"):
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as err:
            raise BadImageError(f"{path}: pixel mode {mode} cannot be converted to RGB ({err})") from None
    is_grey = mode in grey_modes or (mode in ("L", "1") and im.mode == "LA")
    if im.mode in ("RGB", "RGBA") and icc:
        im, carried = _icc_to_srgb(im, icc, notes)
    elif is_grey and icc:
        carried = icc  # grey out keeps the grey profile meaningful
    if im.mode in ("LA", "RGBA"):
        a8 = np.asarray(im)
        alpha = a8[..., -1].astype(np.float32) / 255.0
        a8 = a8[..., :-1]
    else:
        a8 = np.asarray(im.convert("L") if im.mode == "1" else im)
    if a8.ndim == 2:
        a8 = a8[..., None]
    if a8.shape[-1] == 1:
        a8 = np.repeat(a8, 3, axis=2)
    elif not is_grey and mode in ("RGB", "RGBA", "P"):
        is_grey = bool(np.array_equal(a8[..., 0], a8[..., 1]) and np.array_equal(a8[..., 1], a8[..., 2]))
    rgb = a8.astype(np.float32) / 255.0
    return rgb, alpha, is_grey, bits, carried


# ----------------------------------------------------------------------------------------------------------
# writing


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


_UMASK: list[int] = []


def _umask() -> int:
    # os.umask can only be read by setting it; do that once, under the lock, and remember it
    with _PIL_GLOBALS_LOCK:
        if not _UMASK:
            mask = os.umask(0o022)
            os.umask(mask)
            _UMASK.append(mask)
    return _UMASK[0]


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temp file in the same folder, fsync it, then ``os.replace`` it into place.

    A failure or interrupt at any point leaves either the old file or the complete new one, never a partial
    file or a stray temp file. An existing symlink at ``path`` is replaced, not written through.
    ``write`` receives the open binary temp file; its return value is ignored.
    """
    path = Path(path)
    folder = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
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
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().to("cpu").float().numpy()
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)  # (C,H,W) -> (H,W,C)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must be (H,W,3), (3,H,W), (1,3,H,W) or (H,W); got shape {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def _quantise(a: np.ndarray, bit_depth: int) -> np.ndarray:
    top = 255 if bit_depth == 8 else 65535
    return np.round(np.clip(a, 0.0, 1.0) * top).astype(np.uint8 if bit_depth == 8 else np.uint16)


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
        rgb: (H,W,3) / (3,H,W) / (1,3,H,W) float in [0,1] (numpy or torch), sRGB; values are clipped.
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
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=2)
    chans = [to_grey(a)[..., None]] if grey else [a]
    if alpha is not None:
        al = _as_hwc(alpha, "alpha")
        if al.shape[:2] != a.shape[:2] or al.shape[-1] != 1:
            raise ValueError(f"alpha must be (H,W)={a.shape[:2]}, got {tuple(al.shape)}")
        chans.append(al)
    data = _quantise(np.concatenate(chans, axis=2), bit_depth)
    if fmt == "tiff" and data.shape[-1] == 2:  # grey+alpha TIFF is not widely readable (Pillow neither)
        data = data[..., [0, 0, 0, 1]]
    if bit_depth == 16:
        writer = _png16_writer if fmt == "png" else _tiff16_writer
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


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def _png16_writer(data: np.ndarray, icc: bytes | None) -> bytes:
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


def _tiff16_writer(data: np.ndarray, icc: bytes | None) -> bytes:
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


def upscale_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an alpha plane (H,W) float in [0,1] to ``size`` = (width, height), bicubic, clamped to [0,1]."""
    a = np.asarray(alpha, dtype=np.float32)
    out = Image.fromarray(a).resize(tuple(int(s) for s in size), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# listing and planning


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


def replace_plan(plan: OutputPlan, **changes: Any) -> OutputPlan:
    """Copy of ``plan`` with fields changed (convenience for callers that refine a plan)."""
    return dataclasses.replace(plan, **changes)
