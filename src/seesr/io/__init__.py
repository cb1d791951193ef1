"""The only image-file I/O of seesr (DESIGN.md §5 steps 1 and 9; every row of spec/bad_inputs.md).

Modules: :mod:`~seesr.io.reading` (probe/load, Pillow's process-wide switches), :mod:`~seesr.io.pixels`
(decoded pixels -> arrays), :mod:`~seesr.io.codecs16` (the 16-bit PNG/TIFF codecs Pillow lacks),
:mod:`~seesr.io.writing` (atomic save, output formats), :mod:`~seesr.io.listing` (inputs, extensions) and
:mod:`~seesr.io.sniff` (naming what a non-image file is, for error messages).
Every name is re-exported here: ``from seesr.io import load_image``.

Reading (`load_image`):
    * content is sniffed (Pillow identifies the format from the bytes; the extension is ignored);
    * the pixel count is checked against ``max_pixels`` from the header, before any pixel is decoded;
    * truncated files are an error unless the process accepts them (`configure_pillow`, set once by the
      entry point) and the call passes ``allow_truncated=True``;
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
format from the extension or explicit, alpha re-attached, grey in -> grey out.

Listing (`list_inputs`): files, folders (recursive, hidden entries skipped, symlink loops not followed) and
globs, filtered by `IMAGE_EXTENSIONS`. Output planning of a batch belongs to the CLI (``seesr.cli.outputs``).
"""

from __future__ import annotations

from seesr.io.listing import IMAGE_EXTENSIONS, InputFile, list_inputs
from seesr.io.reading import (
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    LoadedImage,
    PillowSettings,
    configure_pillow,
    load_image,
    pillow_settings,
    probe_image,
    read_rgb_u8,
)
from seesr.io.sniff import sniff_format
from seesr.io.writing import (
    atomic_write,
    check_output_options,
    format_extension,
    resolve_format,
    save_image,
    to_grey,
    upscale_alpha,
)

__all__ = [
    "DEFAULT_MAX_OUTPUT_PIXELS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageInfo",
    "InputFile",
    "LoadedImage",
    "PillowSettings",
    "atomic_write",
    "check_output_options",
    "configure_pillow",
    "format_extension",
    "list_inputs",
    "load_image",
    "pillow_settings",
    "probe_image",
    "read_rgb_u8",
    "resolve_format",
    "save_image",
    "sniff_format",
    "to_grey",
    "upscale_alpha",
]
