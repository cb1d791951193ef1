"""Pixels of a loaded Pillow image -> float32 arrays (alpha kept aside, ICC to sRGB, EXIF orientation).

Used by :mod:`seesr.io.reading`; the policy (which modes, which profiles are converted) is described in the
:mod:`seesr.io` docstring.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from seesr.errors import BadImageError
from seesr.io.codecs16 import decode_la16, decode_wide16, is_wide16


def has_alpha(im: Image.Image) -> bool:
    """Whether an opened image carries transparency (an alpha band, or a tRNS/transparency key)."""
    return im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        im.mode in ("P", "L", "RGB", "I;16", "I;16B", "I;16L") and "transparency" in im.info
    )


def exif_orientation(im: Image.Image) -> int:
    """EXIF orientation 1-8 from the header (1 when absent, unreadable or out of range)."""
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def orient(a: np.ndarray, orientation: int) -> np.ndarray:
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


def to_arrays(
    path: Path, im: Image.Image, rawmode: str, icc: bytes | None, notes: list[str]
) -> tuple[np.ndarray, np.ndarray | None, bool, int, bytes | None]:
    """Pixels of a loaded Pillow image -> (rgb (H,W,3) f32, alpha (H,W) f32 | None, is_grey, bits, icc)."""
    mode = im.mode
    alpha: np.ndarray | None = None
    carried: bytes | None = None
    if is_wide16(rawmode):  # 48/64-bit RGB(A): both bytes, no clipping
        raw16 = decode_wide16(path, im)
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
    if rawmode == "LA;16B":  # 16-bit grey+alpha PNG: Pillow reads it as 8-bit LA
        im.close()
        la = decode_la16(path).astype(np.float32) / 65535.0
        grey, alpha = la[..., 0], la[..., 1]
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
        im = im.convert("RGBA" if has_alpha(im) or pal_mode == "RGBA" else "RGB")
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
