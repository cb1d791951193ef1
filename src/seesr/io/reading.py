"""Reading image files (DESIGN.md §5 step 1; spec/bad_inputs.md): `probe_image`, `load_image`, `read_rgb_u8`.

What a read guarantees is listed in the :mod:`seesr.io` docstring. Pillow keeps two process-wide switches
(``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``) and has no per-call equivalent, so this module
never changes them while reading: the entry point sets them once with :func:`configure_pillow`, and every read
checks the project's own pixel cap from the header before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from seesr.errors import BadImageError
from seesr.io.codecs16 import rawmode
from seesr.io.pixels import exif_orientation, has_alpha, orient, to_arrays
from seesr.io.sniff import describe_non_image, sniff_format

#: Default input cap (8192 x 8192): below Pillow's decompression-bomb warning (89,478,485 px).
DEFAULT_MAX_PIXELS = 8192 * 8192
#: Cap on images read back as outputs or dataset files (eval, datasets; 16384 x 16384: a x4 result of a 4096 x 4096
#: input); `seesr upscale` and the UI have no fixed output cap, their memory plan refuses what cannot fit.
DEFAULT_MAX_OUTPUT_PIXELS = 16384 * 16384


# ----------------------------------------------------------------------------------------------------------
# data types


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image, ready for the pipeline.

    Attributes:
        rgb: (H,W,3) float32 in [0,1], sRGB (see the :mod:`seesr.io` docstring for ICC), upright; grey images
            are replicated to 3 channels.
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

    ``width``/``height`` are the stored size; ``orientation`` is the EXIF orientation (1-8) that
    `load_image` applies, so `upright_size` is the size of the decoded image.
    """

    path: Path
    format: str
    mode: str
    width: int
    height: int
    has_alpha: bool
    n_frames: int
    orientation: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) after EXIF orientation (orientations 5-8 swap the sides)."""
        return (self.height, self.width) if self.orientation >= 5 else (self.width, self.height)


# ----------------------------------------------------------------------------------------------------------
# Pillow's process-wide switches


@dataclass(frozen=True)
class PillowSettings:
    """Pillow's two process-wide decoding switches (see `configure_pillow`)."""

    max_pixels: int | None
    allow_truncated: bool


def configure_pillow(*, max_pixels: int | None, allow_truncated: bool) -> PillowSettings:
    """Set Pillow's process-wide decoding limits. Call it once, at start-up, before any thread reads images.

    Args:
        max_pixels: Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``: Pillow warns above it and
            refuses above twice it). seesr's own cap (``max_pixels`` of `load_image` / `probe_image`) is checked
            from the header on every read anyway, so give the largest cap any read of this process uses; None
            removes Pillow's limit (seesr's caps still apply).
        allow_truncated: decode truncated files, the missing part filled by the decoder
            (``ImageFile.LOAD_TRUNCATED_IMAGES``). Pillow cannot accept them for one call only, so this is the
            switch that `load_image`'s ``allow_truncated=True`` needs; a read with ``allow_truncated=False``
            still refuses a truncated file it notices (see `load_image`).

    Returns:
        The settings before this call (for an in-process caller, e.g. a test running ``main()``, to restore).

    Raises:
        ValueError: ``max_pixels`` < 1.
    """
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1 or None, got {max_pixels}")
    old = pillow_settings()
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = bool(allow_truncated)
    return old


def pillow_settings() -> PillowSettings:
    """Pillow's current process-wide decoding limits."""
    return PillowSettings(Image.MAX_IMAGE_PIXELS, bool(ImageFile.LOAD_TRUNCATED_IMAGES))


# ----------------------------------------------------------------------------------------------------------
# opening


class _EofWatch(io.BufferedReader):
    """A binary file that notes when a read returns nothing although bytes were asked for (end of file).

    A complete JPEG, PNG or GIF is decoded without reading past its end; Pillow's decoders only hit the end
    of the file when data are missing. With ``LOAD_TRUNCATED_IMAGES`` set (by `configure_pillow`) Pillow
    fills the rest silently, so this is how a read still learns that the file was truncated.
    """

    hit_eof = False

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data and size != 0:
            self.hit_eof = True
        return data


def _header_size(fp: _EofWatch) -> tuple[int, int] | None:
    """Stored size from the header through Pillow's format plugins directly, skipping the decompression-bomb
    check of ``Image.open``; only used to word the refusal of an image over Pillow's process-wide limit."""
    try:
        Image.init()
        fp.seek(0)
        prefix = fp.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            if accept is not None and not accept(prefix):
                continue
            fp.seek(0)
            try:
                im = factory(fp, "")
            except Exception:  # not this format: try the next plugin, like Image.open does
                continue
            return int(im.size[0]), int(im.size[1])
    except Exception:  # internals changed: the caller words the message without the size
        return None
    return None


def _cap_message(path: Path, w: int, h: int, max_pixels: int) -> str:
    return (
        f"{path}: {w}x{h} = {w * h} pixels is over the input cap of {max_pixels} pixels "
        "(raise max_pixels / --max-pixels to allow it); not decoded"
    )


def _identify(path: Path, fp: _EofWatch, max_pixels: int) -> Image.Image:
    """Open the header of ``fp`` (no pixel decoded) and enforce the pixel cap."""
    try:
        with warnings.catch_warnings():
            # our own cap (below) decides; Pillow's warning would only add noise on stderr
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except Image.DecompressionBombError as err:
        size = _header_size(fp)
        if size is None:
            raise BadImageError(f"{path}: over the pixel limits ({err}); not decoded") from None
        w, h = size
        if w * h > max_pixels:
            raise BadImageError(_cap_message(path, w, h, max_pixels)) from None
        raise BadImageError(
            f"{path}: {w}x{h} = {w * h} pixels is over Pillow's decompression-bomb limit for this process "
            f"({err}); the entry point raises it once with seesr.io.configure_pillow(max_pixels=...)"
        ) from None
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
        raise BadImageError(f"{path}: not a recognised image ({describe_non_image(path)})") from None
    except OSError as err:
        raise BadImageError(f"{path}: cannot be read as an image ({err})") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise BadImageError(_cap_message(path, w, h, max_pixels))
    return im


@contextlib.contextmanager
def _opened(path: Path, max_pixels: int) -> Iterator[tuple[Image.Image, _EofWatch]]:
    """The opened (header-only) image and its watched file; raises `BadImageError` for every unusable file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if path.is_dir():
        raise BadImageError(f"{path}: is a folder, expected an image file")
    if st.st_size == 0:
        raise BadImageError(f"{path}: empty file (0 bytes)")
    try:
        fp = _EofWatch(io.FileIO(path, "rb"))
    except PermissionError:
        raise BadImageError(f"{path}: permission denied") from None
    except OSError as err:
        raise BadImageError(f"{path}: cannot be read ({err})") from None
    with fp, _identify(path, fp, max_pixels) as im:
        yield im, fp


def probe_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read only the header of ``path``: size, mode, alpha, frame count, EXIF orientation.

    Raises:
        BadImageError: empty, not an image, undecodable header, or over ``max_pixels``.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    with _opened(path, max_pixels) as (im, _):
        return ImageInfo(
            path=path,
            format=str(im.format),
            mode=im.mode,
            width=im.size[0],
            height=im.size[1],
            has_alpha=has_alpha(im),
            n_frames=int(getattr(im, "n_frames", 1)),
            orientation=exif_orientation(im),
        )


# ----------------------------------------------------------------------------------------------------------
# decoding


def _truncated(path: Path, fmt: str | None, what: str) -> str:
    return (
        f"{path}: {what} {fmt} file; refusing a partly blank result (pass --allow-truncated to accept it; "
        "in Python: seesr.io.configure_pillow(allow_truncated=True) once at start-up, then "
        "load_image(..., allow_truncated=True))"
    )


def load_image(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS, allow_truncated: bool = False
) -> LoadedImage:
    """Read one image file into float32 RGB (+ alpha), upright and in [0,1].

    Args:
        path: the file; its content decides the format, not its extension.
        max_pixels: refuse (before decoding) images with more stored pixels than this.
        allow_truncated: accept a truncated file (the missing part is filled by the decoder, e.g. grey rows
            for JPEG; a warning says so). Only honoured in a process configured with
            ``configure_pillow(allow_truncated=True)``; otherwise a truncated file is refused whatever this says.
            With False, a truncated file is refused even in such a process when the decoder reaches the end of
            the file early (JPEG, PNG, GIF, ...).

    Returns:
        `LoadedImage` (see its docstring for shapes/ranges).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        BadImageError: empty, not an image, truncated, multi-frame, over the cap, out-of-range float data,
            or a pixel layout that cannot be represented faithfully.
    """
    path = Path(path)
    notes: list[str] = []
    with _opened(path, max_pixels) as (im, fp):
        n_frames = int(getattr(im, "n_frames", 1))
        if n_frames > 1:
            if im.format == "MPO":
                notes.append(f"MPO file with {n_frames} frames: using the primary image")
            else:
                raise BadImageError(
                    f"{path}: multi-frame {im.format} ({n_frames} frames) is not supported; "
                    "extract the frame you want into its own file"
                )
        raw = rawmode(im)
        fp.hit_eof = False
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
                raise BadImageError(_truncated(path, im.format, f"{what} ({msg})")) from None
        if fp.hit_eof:  # only reachable with LOAD_TRUNCATED_IMAGES set for the process
            if not allow_truncated:
                raise BadImageError(_truncated(path, im.format, "truncated"))
            notes.append(f"truncated {im.format} file: the missing part was filled by the decoder")
        for w in caught:
            if not issubclass(w.category, Image.DecompressionBombWarning):
                notes.append(f"decoder warning: {w.message}")
        orientation = exif_orientation(im)
        icc = im.info.get("icc_profile") or None
        with warnings.catch_warnings():
            # 16-bit layouts decode the file a second time (Pillow would warn again about its size)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            rgb, alpha, is_grey, bit_depth, carried = to_arrays(path, im, raw, icc, notes)
    if orientation != 1:
        rgb = orient(rgb, orientation)
        alpha = None if alpha is None else orient(alpha, orientation)
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        is_grey=is_grey,
        bit_depth=bit_depth,
        source=path,
        warnings=tuple(notes),
        icc_profile=carried,
    )


def read_rgb_u8(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """`load_image` quantised to 8 bits: (H,W,3) uint8, upright, sRGB, alpha dropped.

    For callers that reproduce an official uint8 chain (e.g. a PIL resize of training/test images). 8-bit
    sources give their stored values exactly; 16-bit sources are rounded (not cut to their high byte).
    """
    rgb = load_image(path, max_pixels=max_pixels).rgb
    return np.round(rgb * 255.0).astype(np.uint8)
