"""Tests of seesr.io: decoding without data loss, atomic writes and input listing.

Every test file is generated in tmp_path (Pillow, or raw bytes for what Pillow cannot write); helpers here are
reused by tests/test_cli_upscale.py.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from seesr import io as sio
from seesr.errors import BadImageError

# ----------------------------------------------------------------------------------------------------------
# generators for files Pillow cannot write


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    a, b, c = (x.astype(np.int16) for x in (a, b, c))
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)


def png16_bytes(values: np.ndarray, trns: bytes | None = None) -> bytes:
    """16-bit PNG of uint16 (H,W) or (H,W,C), C in 1..4; rows cycle through all five PNG filter types so the
    decoder's un-filtering with 6/8-byte pixels is exercised."""
    a = values if values.ndim == 3 else values[..., None]
    h, w, c = a.shape
    bpp = 2 * c
    rows = a.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * bpp)
    out = bytearray()
    for y in range(h):
        cur = rows[y]
        prev = rows[y - 1] if y else np.zeros_like(cur)
        left = np.concatenate([np.zeros(bpp, np.uint8), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.uint8), prev[:-bpp]])
        kind = y % 5
        if kind == 0:
            f = cur
        elif kind == 1:
            f = cur - left
        elif kind == 2:
            f = cur - prev
        elif kind == 3:
            f = cur - ((left.astype(np.uint16) + prev) // 2).astype(np.uint8)
        else:
            f = cur - _paeth(left, prev, upleft)
        out += bytes([kind]) + f.astype(np.uint8).tobytes()

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + (chunk(b"tRNS", trns) if trns else b"")
        + chunk(b"IDAT", zlib.compress(bytes(out)))
        + chunk(b"IEND", b"")
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (8-bit RGB) followed by a tiny, useless IDAT."""

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


ADOBE_RGB_D50 = [
    [0.6097559, 0.2052401, 0.1492240],
    [0.3111242, 0.6256560, 0.0632197],
    [0.0194811, 0.0608902, 0.7448387],
]
SRGB_D50 = [
    [0.4360747, 0.3850649, 0.1430804],
    [0.2225045, 0.7168786, 0.0606169],
    [0.0139322, 0.0971045, 0.7141733],
]
ADOBE_GAMMA = 563 / 256


def make_icc(desc: str, matrix: list[list[float]], gamma: float) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC display profile (columns of ``matrix`` = D50 XYZ of R, G, B)."""

    def xyz(v: list[float] | tuple[float, ...]) -> bytes:
        return b"XYZ " + b"\0" * 4 + b"".join(_s15(x) for x in v)

    text = desc.encode() + b"\0"
    tags = {
        b"desc": b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 11 + b"\0" * 67,
        b"cprt": b"text" + b"\0" * 4 + b"none\0",
        b"wtpt": xyz((0.9642, 1.0, 0.8249)),
        b"rXYZ": xyz([r[0] for r in matrix]),
        b"gXYZ": xyz([r[1] for r in matrix]),
        b"bXYZ": xyz([r[2] for r in matrix]),
    }
    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    for sig in (b"rTRC", b"gTRC", b"bTRC"):
        tags[sig] = curve
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for sig, data in tags.items():
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    head = (
        struct.pack(">I", 128 + len(table) + len(body))
        + b"\0" * 4
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 28
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + b"\0" * 48
    )
    return head + table + body


def adobe_to_srgb_u8(v: np.ndarray) -> np.ndarray:
    """Reference conversion of 8-bit Adobe-RGB-like values to sRGB (float, 0..255) through D50 XYZ."""
    lin = (v / 255.0) ** ADOBE_GAMMA
    srgb_lin = np.linalg.solve(np.array(SRGB_D50), np.array(ADOBE_RGB_D50) @ lin)
    enc = np.where(srgb_lin <= 0.0031308, 12.92 * srgb_lin, 1.055 * np.abs(srgb_lin) ** (1 / 2.4) - 0.055)
    return enc * 255


def rand_u8(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------------
# decoding


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png16_keeps_all_16_bits(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(channels)
    v = rng.integers(0, 65536, (7, 9, channels), dtype=np.uint16)
    p = tmp_path / "x.png"
    p.write_bytes(png16_bytes(v))
    img = sio.load_image(p)
    assert img.bit_depth == 16
    grey = v[..., 0].astype(np.float64) / 65535
    colour = v[..., :3].astype(np.float64) / 65535 if channels >= 3 else np.repeat(grey[..., None], 3, 2)
    np.testing.assert_allclose(img.rgb, colour, atol=1e-7)
    if channels in (2, 4):
        np.testing.assert_allclose(img.alpha, v[..., -1] / 65535, atol=1e-7)
    else:
        assert img.alpha is None
    assert img.is_grey == (channels < 3)


def test_png16_interlaced(tmp_path: Path) -> None:
    """Adam7-interlaced 48-bit PNG (unfiltered passes) decodes to the same 16-bit values."""
    v = np.random.default_rng(5).integers(0, 65536, (11, 13, 3), dtype=np.uint16)
    passes = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ]
    raw = bytearray()
    for x0, y0, dx, dy in passes:
        sub = v[y0::dy, x0::dx]
        if sub.size:
            for row in sub.astype(">u2"):
                raw += b"\0" + row.tobytes()
    plain = png16_bytes(v)
    ihdr = struct.pack(">IIBBBBB", 13, 11, 16, 2, 0, 0, 1)
    comp = zlib.compress(bytes(raw))

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    p = tmp_path / "i.png"
    p.write_bytes(plain[:8] + chunk(b"IHDR", ihdr) + chunk(b"IDAT", comp) + chunk(b"IEND", b""))
    assert Image.open(p).info.get("interlace") == 1
    np.testing.assert_allclose(sio.load_image(p).rgb, v / 65535, atol=1e-7)


def test_png16_colour_key_transparency(tmp_path: Path) -> None:
    v = np.full((3, 4, 3), 1000, dtype=np.uint16)
    v[1, 2] = (258, 513, 4)  # equal high bytes elsewhere would not matter: the key is compared on 16 bits
    p = tmp_path / "k.png"
    p.write_bytes(png16_bytes(v, trns=struct.pack(">HHH", 258, 513, 4)))
    img = sio.load_image(p)
    assert img.alpha is not None and img.alpha[1, 2] == 0 and img.alpha.sum() == 11


def test_png16_low_values_not_clipped(tmp_path: Path) -> None:
    """Pillow's convert('RGB') on I;16 clips most pixels to 255; values must stay v/65535."""
    v = np.array([[0, 100, 1000, 30000, 65535]], dtype=np.uint16)
    p = tmp_path / "g.png"
    im = Image.fromarray(v)
    assert im.mode == "I;16"
    im.save(p)
    img = sio.load_image(p)
    np.testing.assert_allclose(img.rgb[0, :, 0], v[0] / 65535, atol=1e-7)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_save_load_16bit_round_trip(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(3)
    rgb = rng.random((6, 5, 3), dtype=np.float32)
    alpha = rng.random((6, 5), dtype=np.float32) if channels == 4 else None
    for ext in ("png", "tif"):
        p = tmp_path / f"o.{ext}"
        sio.save_image(p, rgb, alpha=alpha, bit_depth=16, grey=channels == 1)
        back = sio.load_image(p)
        want = np.round(rgb * 65535) / 65535
        if channels == 1:
            want = np.repeat(np.round(sio.to_grey(rgb) * 65535)[..., None] / 65535, 3, 2)
        assert back.bit_depth == 16 and back.is_grey == (channels == 1)
        np.testing.assert_allclose(back.rgb, want, atol=1e-7, err_msg=ext)
        if alpha is not None:
            np.testing.assert_allclose(back.alpha, np.round(alpha * 65535) / 65535, atol=1e-7)


def test_tiff16_readable_by_tifffile(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    rgb = np.random.default_rng(0).random((4, 6, 3), dtype=np.float32)
    p = tmp_path / "o.tif"
    sio.save_image(p, rgb, bit_depth=16)
    np.testing.assert_array_equal(tifffile.imread(p), np.round(rgb * 65535).astype(np.uint16))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    a = rand_u8((5, 8, 3), seed=orientation)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    p = tmp_path / "o.png"
    im.save(p, exif=exif)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))
    got = sio.load_image(p)
    np.testing.assert_array_equal(np.round(got.rgb * 255).astype(np.uint8), ref)


def test_float_tiff_in_range_and_refused_out_of_range(tmp_path: Path) -> None:
    v = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    ok = tmp_path / "ok.tif"
    Image.fromarray(v).save(ok)
    img = sio.load_image(ok)
    assert img.is_grey and img.bit_depth == 32
    np.testing.assert_allclose(img.rgb[..., 1], v, atol=1e-7)
    bad = tmp_path / "bad.tif"
    Image.fromarray(v * 4).save(bad)
    with pytest.raises(BadImageError, match=r"values in \[0, 4\]; expected \[0, 1\]"):
        sio.load_image(bad)


def test_float_rgb_tiff_refused_clearly(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    p = tmp_path / "f3.tif"
    tifffile.imwrite(p, np.random.default_rng(0).random((4, 4, 3), dtype=np.float32), photometric="rgb")
    with pytest.raises(BadImageError, match="TIFF layout not supported .*float RGB"):
        sio.load_image(p)


def test_icc_wide_gamut_converted_to_srgb(tmp_path: Path) -> None:
    v = np.array([128, 102, 77], dtype=np.uint8)
    p = tmp_path / "wide.png"
    Image.fromarray(np.tile(v, (3, 3, 1))).save(
        p, icc_profile=make_icc("Test wide gamut", ADOBE_RGB_D50, ADOBE_GAMMA)
    )
    img = sio.load_image(p)
    got = img.rgb[0, 0] * 255
    want = adobe_to_srgb_u8(v.astype(np.float64))
    assert np.abs(got - want).max() <= 1.5, (got, want)
    assert np.abs(got - v).max() >= 8  # the conversion really moved the colour
    assert img.icc_profile is None and any("to sRGB" in w for w in img.warnings)


def test_icc_srgb_left_alone_and_16bit_profile_carried(tmp_path: Path) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    a = rand_u8((4, 4, 3))
    p = tmp_path / "s.png"
    Image.fromarray(a).save(p, icc_profile=srgb)
    img = sio.load_image(p)
    np.testing.assert_array_equal(np.round(img.rgb * 255).astype(np.uint8), a)
    assert img.icc_profile is None
    # 16-bit + non-sRGB profile: pixels kept, profile carried and written to the output
    wide = make_icc("Test wide gamut", ADOBE_RGB_D50, ADOBE_GAMMA)
    out = tmp_path / "w16.png"
    sio.save_image(out, np.full((2, 2, 3), 0.25, np.float32), bit_depth=16, icc_profile=wide)
    back = sio.load_image(out)
    assert back.icc_profile == wide and back.bit_depth == 16
    np.testing.assert_allclose(back.rgb, round(0.25 * 65535) / 65535, atol=1e-7)


def test_cmyk_jpeg_adobe_inverted(tmp_path: Path) -> None:
    p = tmp_path / "c.jpg"
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(p, quality=100)  # Pillow writes Adobe-inverted CMYK
    assert Image.open(p).info.get("adobe") is not None
    img = sio.load_image(p)
    np.testing.assert_allclose(img.rgb[4, 4], [0, 1, 1], atol=3 / 255)  # cyan


def test_palette_trns_and_la_alpha(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 3))
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.info["transparency"] = 1
    p = tmp_path / "p.png"
    pal.save(p, transparency=1)
    img = sio.load_image(p)
    assert img.alpha is not None and img.alpha[1, 1] == 0 and img.alpha[0, 0] == 1
    np.testing.assert_allclose(img.rgb[0, 0], [1, 0, 0])
    la = tmp_path / "la.png"
    Image.fromarray(np.dstack([rand_u8((3, 5)), rand_u8((3, 5), 1)])).save(la)
    got = sio.load_image(la)
    assert got.is_grey and got.alpha is not None
    np.testing.assert_array_equal(np.round(got.alpha * 255).astype(np.uint8), rand_u8((3, 5), 1))


def test_grey_detection(tmp_path: Path) -> None:
    for mode in ("L", "1"):
        p = tmp_path / f"{mode}.png"
        Image.new(mode, (3, 3), 1).save(p)
        assert sio.load_image(p).is_grey
    rgb_grey = tmp_path / "rgbgrey.png"
    g = rand_u8((4, 4))
    Image.fromarray(np.dstack([g, g, g])).save(rgb_grey)
    assert sio.load_image(rgb_grey).is_grey
    colour = tmp_path / "c.png"
    Image.fromarray(rand_u8((4, 4, 3))).save(colour)
    assert not sio.load_image(colour).is_grey


def test_pixel_cap_checked_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "big.png"
    Image.new("RGB", (50, 40)).save(p)

    def no_decode(self: Image.Image) -> None:
        raise AssertionError("decoder ran before the pixel cap check")

    monkeypatch.setattr(Image.Image, "load", no_decode)
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(BadImageError, match=r"50x40 = 2000 pixels is over the input cap of 1999"):
        sio.load_image(p, max_pixels=1999)


def test_pillow_bomb_header_reported_with_size(tmp_path: Path) -> None:
    p = tmp_path / "bomb.png"
    p.write_bytes(png_header_only(20000, 20000))  # 4e8 px: above Pillow's own hard limit
    with pytest.raises(BadImageError, match=r"20000x20000 = 400000000 pixels is over the input cap"):
        sio.load_image(p)


@pytest.fixture
def truncated_process() -> Iterator[None]:
    """The process accepts truncated files, as after ``seesr upscale --allow-truncated``; restored after."""
    old = sio.configure_pillow(max_pixels=sio.DEFAULT_MAX_PIXELS, allow_truncated=True)
    try:
        yield
    finally:
        sio.configure_pillow(max_pixels=old.max_pixels, allow_truncated=old.allow_truncated)


def _truncated_file(tmp_path: Path, fmt: str) -> Path:
    buf = io.BytesIO()
    Image.fromarray(rand_u8((64, 64, 3))).save(buf, fmt)
    p = tmp_path / f"t.{fmt.lower()}"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return p


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_refused_unless_the_process_allows(tmp_path: Path, fmt: str) -> None:
    p = _truncated_file(tmp_path, fmt)
    with pytest.raises(BadImageError, match="truncated.*--allow-truncated"):
        sio.load_image(p)
    # a per-call wish is not enough: Pillow has no per-call switch, and none is flipped behind its back
    with pytest.raises(BadImageError, match="configure_pillow"):
        sio.load_image(p, allow_truncated=True)
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_accepted_in_a_truncated_process(tmp_path: Path, fmt: str, truncated_process: None) -> None:
    p = _truncated_file(tmp_path, fmt)
    img = sio.load_image(p, allow_truncated=True)
    assert img.rgb.shape == (64, 64, 3) and any("truncated" in w for w in img.warnings)
    # a caller that does not accept truncated files (the UI) still refuses them in such a process
    with pytest.raises(BadImageError, match="truncated"):
        sio.load_image(p)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_complete_files_not_taken_for_truncated(tmp_path: Path, fmt: str, truncated_process: None) -> None:
    p = tmp_path / f"ok.{fmt.lower()}"
    Image.fromarray(rand_u8((300, 200, 3))).save(p, fmt)
    img = sio.load_image(p)
    assert img.rgb.shape == (300, 200, 3) and not any("truncated" in w for w in img.warnings)
    data = png16_bytes(np.random.default_rng(2).integers(0, 65536, (70, 50, 3), dtype=np.uint16))
    (tmp_path / "ok16.png").write_bytes(data)
    assert sio.load_image(tmp_path / "ok16.png").bit_depth == 16


def test_truncated_16bit_png(tmp_path: Path, truncated_process: None) -> None:
    data = png16_bytes(np.random.default_rng(1).integers(0, 65536, (40, 30, 3), dtype=np.uint16))
    p = tmp_path / "t16.png"
    p.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BadImageError, match="truncated"):
        sio.load_image(p)
    img = sio.load_image(p, allow_truncated=True)
    assert img.bit_depth == 16 and img.rgb.shape == (40, 30, 3)


def test_multiframe_refused(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0))]
    p = tmp_path / "a.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    with pytest.raises(BadImageError, match=r"multi-frame GIF \(2 frames\)"):
        sio.load_image(p)


# ----------------------------------------------------------------------------------------------------------
# writing


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "o.png"
    p.write_bytes(b"old")

    def boom(f: io.BufferedWriter) -> None:
        f.write(b"partial data")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sio.atomic_write(p, boom)
    assert p.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["o.png"]


def test_save_replaces_symlink_instead_of_writing_through(tmp_path: Path) -> None:
    target = tmp_path / "precious.png"
    target.write_bytes(b"keep me")
    link = tmp_path / "out.png"
    link.symlink_to(target)
    sio.save_image(link, np.zeros((2, 2, 3), np.float32))
    assert target.read_bytes() == b"keep me" and not link.is_symlink()


def test_save_refusals() -> None:
    rgb = np.zeros((2, 2, 3), np.float32)
    with pytest.raises(ValueError, match="alpha channel that JPEG cannot store"):
        sio.save_image("x.jpg", rgb, alpha=np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="8 bits per channel"):
        sio.save_image("x.webp", rgb, bit_depth=16)
    with pytest.raises(ValueError, match=r"unknown output extension '.xyz'"):
        sio.save_image("x.xyz", rgb)


def test_save_accepts_torch_and_chw(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    x = torch.rand(1, 3, 4, 6)
    sio.save_image(tmp_path / "t.png", x)
    back = np.asarray(Image.open(tmp_path / "t.png"))
    np.testing.assert_array_equal(back, np.round(x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))


def test_upscale_alpha_range_and_size() -> None:
    a = np.zeros((4, 4), np.float32)
    a[1:3, 1:3] = 1
    up = sio.upscale_alpha(a, (16, 12))
    assert up.shape == (12, 16) and up.min() >= 0 and up.max() <= 1 and up.max() == 1.0  # overshoot clamped
    assert sio.upscale_alpha(np.ones((1, 1), np.float32), (4, 4)).min() == 1.0


# ----------------------------------------------------------------------------------------------------------
# listing and planning


def _touch_png(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2)).save(p, "PNG")
    return p


def test_list_inputs_folder_rules(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch_png(root / "b photo.png")
    _touch_png(root / "фото.jpg")
    _touch_png(root / "sub" / "c.PNG")
    _touch_png(root / ".hidden.png")
    (root / "README.txt").write_text("not an image")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "dup.png").symlink_to(root / "b photo.png")
    _touch_png(root / "out" / "old.png")  # the output folder inside the input folder
    got = sio.list_inputs([root], exclude=[root / "out"])
    assert [str(i.rel) for i in got] == ["b photo.png", "sub/c.PNG", "фото.jpg"]
    # globs filter files by extension; an explicit file is always taken
    assert [i.rel.name for i in sio.list_inputs([str(root / "*.*")])] == ["b photo.png", "фото.jpg"]
    assert [i.rel.name for i in sio.list_inputs([root / "README.txt"])] == ["README.txt"]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        sio.list_inputs([str(root / "*.gif")])
    with pytest.raises(FileNotFoundError, match="input not found"):
        sio.list_inputs([root / "missing.png"])
