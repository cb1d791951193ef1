"""Tiles' activations kept in files between GroupNorm barriers: the exact tiled VAE in bounded memory (issue 13).

The exact tiled VAE (``vae_tiling._run_tiled``) runs every tile up to a GroupNorm, combines the tiles' statistics,
and only then continues; every tile's activation must survive until its next turn. Kept in memory, that is
O(image x channels). Here each tile's activation (and its pending residual) is written to its own file when the
tile's turn ends and read back (and the file deleted) when its next turn starts, so one tile is in memory at a
time while the arithmetic, and therefore the output, is exactly the exact mode's.

The files are written and read with plain ``write``/``readinto``: the bytes pass through the kernel's page cache,
which is reclaimable and not part of the process's resident memory; on a machine short of memory the kernel writes
them to disk. Disk use peaks at about one full-resolution activation (every tile's file is deleted as soon as it is
read back). The folder is ``$SEESR_SPILL_DIR`` if set, else ``spill/`` in seesr's cache folder (``$SEESR_CACHE``,
default ``~/.cache/seesr``) — deliberately not ``/tmp``, which is RAM-backed (tmpfs) on many systems.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import cast

import torch
from torch import Tensor


def default_spill_root() -> Path:
    """Where spill folders are made: ``$SEESR_SPILL_DIR``, else ``<$SEESR_CACHE or ~/.cache/seesr>/spill``."""
    explicit = os.environ.get("SEESR_SPILL_DIR")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("SEESR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "seesr")
    return Path(cache) / "spill"


def _libc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere: musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return cast(Callable[[int], int], libc.malloc_trim)
    except (OSError, AttributeError):
        return None


_TRIM = _libc_trim() if sys.platform.startswith("linux") else None


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Tiles of several sizes are allocated and freed in turn for hundreds of tiles; glibc keeps the freed memory in
    its heaps (tensors under its dynamic mmap threshold, up to 32 MiB, come from there), so the process's
    resident memory drifted up by about 1.5 GB over an 8192² encode although the live tensors stayed bounded
    (docs/decisions.md). Trimming at each tile's turn keeps resident memory at the live set.
    """
    if _TRIM is not None:
        _TRIM(0)


def free_disk_bytes(root: Path | None = None) -> int:
    """Free bytes on the file system of the spill root (its nearest existing parent)."""
    path = (root or default_spill_root()).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return int(shutil.disk_usage(path).free)


#: write rate assumed for the spill disk until a run here has measured one, bytes/s: what ``dd … conv=fdatasync``
#: of 1-2 GB measured on the development VM's cloud volume on a busy day (150 MB/s; the same disk sustained
#: 350-410 MB/s of writes during a 12000x8000 run). A short probe is no guide: 64-256 MiB probes measured
#: 0.37-1.5 GB/s there, absorbed by the host's caches.
DEFAULT_DISK_RATE = 150e6
_RATE_FILE = "disk_rate.json"


def disk_write_rate(root: Path | None = None) -> float:
    """Write rate (bytes/s) the planner assumes for the spill disk: ``$SEESR_SPILL_DISK_MBPS`` (MB/s) if set,
    else what the last disk-bound spill run under ``root`` achieved (``<root>/disk_rate.json``, written by
    :class:`TileSpill`), else :data:`DEFAULT_DISK_RATE`."""
    explicit = os.environ.get("SEESR_SPILL_DISK_MBPS")
    if explicit:
        try:
            rate = float(explicit) * 1e6
        except ValueError:
            rate = 0.0
        if rate <= 0:
            raise ValueError(f"SEESR_SPILL_DISK_MBPS must be a positive number of MB/s, got {explicit!r}")
        return rate
    try:
        recorded = json.loads(((root or default_spill_root()) / _RATE_FILE).read_text())
        return float(recorded["bytes_per_second"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_DISK_RATE


def _record_rate(root: Path, bytes_written: int, seconds: float) -> None:
    """Remember a disk-bound run's traffic over its wall time (a lower bound of the disk's rate: the compute
    ran in the same seconds), for :func:`disk_write_rate`."""
    record = {
        "bytes_per_second": bytes_written / seconds,
        "bytes": bytes_written,
        "seconds": round(seconds, 1),
    }
    with contextlib.suppress(OSError):  # only a planning hint
        (root / _RATE_FILE).write_text(json.dumps(record))


def writeback_allowance() -> int:
    """Bytes of freshly written files the kernel keeps in the page cache before writing them to disk
    (Linux: ``vm.dirty_background_bytes``, else ``vm.dirty_background_ratio`` of the available memory); 0 where
    unknown. Spill files deleted before that point never reach the disk."""
    vm = Path("/proc/sys/vm")
    try:
        explicit = int((vm / "dirty_background_bytes").read_text())
        if explicit:
            return explicit
        ratio = int((vm / "dirty_background_ratio").read_text())
        meminfo = Path("/proc/meminfo").read_text().split("\n")
        available = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, ValueError, StopIteration):
        return 0
    return available * ratio // 100


#: how one tensor was written: dtype, the shape as written, and the dimension order it was written in; or
#: ``SAME_AS_ACTIVATION`` for a residual that is the activation itself (an identity shortcut): written once
_Saved = tuple[torch.dtype, tuple[int, ...], list[int]]
SAME_AS_ACTIVATION = "same"


def _layout_order(t: Tensor) -> list[int]:
    """Dimensions from the largest stride to the smallest: written in this order, the tensor is read back with
    its original strides (e.g. channels-last), which later kernels' rounding can depend on."""
    strides = t.stride()
    return sorted(range(t.ndim), key=lambda d: (-strides[d], d))


class TileSpill:
    """Per-tile activations in files: ``put(i, h, res)`` after a tile's turn, ``take(i)`` before the next one.

    ``keep_in_memory`` tiles per pass are not written at all (the executor keeps the ones it needs first), so at
    most ``keep_in_memory + 1`` tiles' activations are in memory. Use as a context manager; the folder (a fresh one under ``root``) is removed on exit, also after an error.
    ``bytes_on_disk`` is what the files hold now, ``peak_bytes`` the most they held, ``bytes_written`` the total
    traffic (for the plan and the benchmarks).
    """

    def __init__(self, root: Path | str | None = None, *, keep_in_memory: int = 0) -> None:
        if keep_in_memory < 0:
            raise ValueError(f"keep_in_memory must be >= 0, got {keep_in_memory}")
        self.keep_in_memory = keep_in_memory
        self.root = Path(root) if root is not None else default_spill_root()
        self.folder: Path | None = None
        self._meta: dict[int, list[_Saved | str | None]] = {}
        self.bytes_on_disk = self.peak_bytes = self.bytes_written = 0
        self._started = 0.0

    def __enter__(self) -> TileSpill:
        self.root.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=f"vae-{uuid.uuid4().hex[:8]}-", dir=self.root))
        self._started = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
            # a run whose files outgrew what the page cache absorbs measured the disk: remember its rate
            if kind is None and self.peak_bytes > 2 * writeback_allowance() > 0:
                _record_rate(self.root, self.bytes_written, time.perf_counter() - self._started)
        self._meta.clear()
        self.bytes_on_disk = 0

    def _path(self, index: int) -> Path:
        assert self.folder is not None, "TileSpill used outside its `with` block"
        return self.folder / f"tile{index:06d}.bin"

    def put(self, index: int, h: Tensor, res: Tensor | None) -> None:
        """Write tile ``index``'s activation ``h`` and pending residual ``res`` (any device and dtype)."""
        meta: list[_Saved | str | None] = []
        size = 0
        try:
            with open(self._path(index), "wb") as f:
                for t in (h, res):
                    if t is None:
                        meta.append(None)
                        continue
                    if meta and t is h:  # the residual is the activation (identity shortcut): not again
                        meta.append(SAME_AS_ACTIVATION)
                        continue
                    order = _layout_order(t)
                    flat = t.detach().permute(order).to("cpu").contiguous()
                    f.write(flat.reshape(-1).view(torch.uint8).numpy().data)
                    meta.append((flat.dtype, tuple(flat.shape), order))
                    size += flat.numel() * flat.element_size()
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise OSError(
                    e.errno,
                    f"no space left for the bounded VAE's spill files in {self.root}; free disk space, set "
                    "SEESR_SPILL_DIR to a larger disk, or use --vae-mode bounded with recomputed statistics",
                ) from e
            raise
        self._meta[index] = meta
        self.bytes_on_disk += size
        self.bytes_written += size
        self.peak_bytes = max(self.peak_bytes, self.bytes_on_disk)

    def take(self, index: int, device: torch.device | str) -> tuple[Tensor, Tensor | None]:
        """Read tile ``index`` back onto ``device`` (as written) and delete its file."""
        path = self._path(index)
        meta = self._meta.pop(index)
        out: list[Tensor | None] = []
        with open(path, "rb") as f:
            for m in meta:
                if m is None:
                    out.append(None)
                    continue
                if isinstance(m, str):  # SAME_AS_ACTIVATION: the residual is the activation, as when written
                    out.append(out[0])
                    continue
                dtype, shape, order = m
                count = 1
                for s in shape:
                    count *= s
                raw = torch.empty(count * torch.empty(0, dtype=dtype).element_size(), dtype=torch.uint8)
                if f.readinto(raw.numpy().data) != raw.numel():
                    raise OSError(f"spill file {path} is truncated")
                back = [order.index(d) for d in range(len(order))]
                out.append(raw.view(dtype).reshape(shape).permute(back).to(device))
                self.bytes_on_disk -= raw.numel()
        path.unlink()
        release_free_memory()  # the previous turn's temporaries are free now
        h, res = out
        assert h is not None
        return h, res
