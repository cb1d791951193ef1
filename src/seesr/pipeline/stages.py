"""Per-stage wall time of one pipeline call (DAPE, text, VAE encode, denoise, VAE decode, colour fix + resize).

The pipeline wraps each numbered step in ``with stages.stage(name):`` and returns the seconds in
``UpscaleResult.settings["timings"]``. On an accelerator the clock synchronises the device at each boundary so a
stage is charged for its own kernels, not for the queue left by the previous one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

#: stage names in pipeline order (the sidecar's ``timings`` keys, plus ``write`` added by the run layer)
STAGES = ("dape", "text", "vae_encode", "denoise", "vae_decode", "color_fix_resize")


class StageClock:
    """Accumulates seconds per stage name.

    Args:
        device: the pipeline's device; CUDA/MPS are synchronised at stage boundaries.
    """

    def __init__(self, device: Any = None) -> None:
        self.seconds: dict[str, float] = {}
        self._device = device

    def _sync(self) -> None:
        import torch

        kind = getattr(self._device, "type", None)
        if kind == "cuda":
            torch.cuda.synchronize(self._device)
        elif kind == "mps":
            torch.mps.synchronize()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block and add it to ``seconds[name]``."""
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def rounded(self) -> dict[str, float]:
        """``{stage: seconds}`` rounded to milliseconds, in pipeline order."""
        order = {name: i for i, name in enumerate(STAGES)}
        keys = sorted(self.seconds, key=lambda k: order.get(k, len(order)))
        return {k: round(self.seconds[k], 3) for k in keys}
