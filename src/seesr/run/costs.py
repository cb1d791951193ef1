"""What one image cost: peak host memory (RSS) and peak device memory over a block of work.

Linux keeps the process's peak RSS (``VmHWM``) and lets it be reset by writing ``5`` to ``/proc/self/clear_refs``,
so the peak of each image is exact, not sampled. Elsewhere the peak since the process started is reported
(``getrusage``), which is an upper bound. CUDA peaks come from the caching allocator's statistics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def current_rss_bytes() -> int:
    """Resident set size of this process now (0 where it cannot be read)."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else 0


def peak_rss_bytes() -> int:
    """Peak resident set size since the last :func:`reset_peak_rss` (or since the process started)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS; False where the platform cannot."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


@dataclasses.dataclass
class Peaks:
    """Peaks measured by :func:`measure_peaks` (bytes); ``host_exact`` False when the host peak is a bound."""

    host_bytes: int = 0
    device_bytes: int | None = None
    host_exact: bool = True

    def as_record(self) -> dict[str, Any]:
        """The sidecar's ``memory`` field (MiB, rounded)."""
        mib = 1024 * 1024
        return {
            "peak_host_rss_mib": round(self.host_bytes / mib, 1),
            "peak_host_exact": self.host_exact,
            "peak_device_mib": None if self.device_bytes is None else round(self.device_bytes / mib, 1),
        }


@contextlib.contextmanager
def measure_peaks(device: Any = None) -> Iterator[Peaks]:
    """Measure the peak host RSS and the peak device memory of the enclosed block."""
    peaks = Peaks()
    peaks.host_exact = reset_peak_rss()
    cuda = getattr(device, "type", None) == "cuda"
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield peaks
    finally:
        peaks.host_bytes = peak_rss_bytes()
        if cuda:
            import torch

            peaks.device_bytes = int(torch.cuda.max_memory_allocated(device))


def format_costs(record: dict[str, Any]) -> str:
    """One line for ``-v``: seconds per stage and the peaks, from a sidecar record."""
    times = record.get("timings") or {}
    parts = [f"{k} {v:.2f}s" for k, v in times.items() if isinstance(v, (int, float))]
    mem = record.get("memory") or {}
    if mem.get("peak_host_rss_mib") is not None:
        parts.append(f"peak RSS {mem['peak_host_rss_mib'] / 1024:.2f} GiB")
    if mem.get("peak_device_mib") is not None:
        parts.append(f"peak device {mem['peak_device_mib'] / 1024:.2f} GiB")
    return ", ".join(parts)
