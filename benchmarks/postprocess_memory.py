"""Peak host memory of the post-decode path: whole-array ``postprocess`` vs banded ``finish_image`` (issue 13).

Each case runs in a fresh interpreter: a random decoder output (1, 3, H, W) float32 and uint8 condition codes are
made, the peak-RSS counter is reset (``/proc/self/clear_refs``), one call runs on the 8-bit chain with a 4-pixel
final resize (the /8 floor undone), and the growth of VmHWM over the RSS before the call is printed, in MiB and in
units of one float32 RGB image of that size. Linux only.

    python benchmarks/postprocess_memory.py                      # 4096x4096, both paths, adain + wavelet
    flock /tmp/seesr-heavy.lock python benchmarks/postprocess_memory.py --size 12000x8000 --skip whole:wavelet
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

_CASE = """
import sys, time, torch
from seesr.pipeline.pipeline import postprocess
from seesr.pipeline.postprocess import finish_image

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

kind, method, w, h = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
g = torch.Generator().manual_seed(0)
decoded = torch.rand(1, 3, h, w, generator=g) * 2 - 1
codes = torch.randint(0, 256, (1, 3, h, w), generator=g, dtype=torch.uint8)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
t0 = time.perf_counter()
if kind == "whole":
    out = postprocess(decoded, codes, method, (w + 4, h + 4), quantize=True)[1]
else:
    out = finish_image(decoded, codes, method, (w + 4, h + 4), quantize=True, out_dtype=torch.uint8)
print(status("VmHWM") - before, time.perf_counter() - t0)
"""


def run_case(kind: str, method: str, w: int, h: int) -> tuple[float, float]:
    """(peak bytes above the inputs, seconds) of one call in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _CASE, kind, method, str(w), str(h)],
        capture_output=True,
        text=True,
        check=True,
    )
    extra, seconds = done.stdout.split()[-2:]
    return float(extra), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", action="append", help="WxH (repeatable; default 4096x4096)")
    parser.add_argument("--skip", action="append", default=[], help="kind:method to skip, e.g. whole:wavelet")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in (args.size or ["4096x4096"])]
    print(f"# {time.strftime('%Y-%m-%d')}  8-bit chain, final size +4 px; peak RSS above the inputs")
    print("| size | method | whole MiB (units) | banded MiB (units) | whole / banded | whole s | banded s |")
    print("|---|---|---|---|---|---|---|")
    for w, h in sizes:
        unit = 12 * w * h  # one float32 RGB image
        for method in ("adain", "wavelet"):
            row = {}
            for kind in ("whole", "banded"):
                if f"{kind}:{method}" in args.skip:
                    continue
                row[kind] = run_case(kind, method, w, h)

            def cell(kind: str, row: dict[str, tuple[float, float]] = row, unit: int = unit) -> str:
                if kind not in row:
                    return "not run"
                return f"{row[kind][0] / 2**20:.0f} ({row[kind][0] / unit:.2f})"

            ratio = f"{row['whole'][0] / row['banded'][0]:.1f}x" if len(row) == 2 else "-"
            secs = [f"{row[k][1]:.1f}" if k in row else "-" for k in ("whole", "banded")]
            print(
                f"| {w}x{h} | {method} | {cell('whole')} | {cell('banded')} | {ratio} | {secs[0]} | {secs[1]} |"
            )


if __name__ == "__main__":
    main()
