"""What the real-weights checks compare, as functions (issue 11 item 6).

Ground truth that no one here produced: RAM's README output for its own demo image, the released files'
parameter counts, and a ×4 round trip of RAM's demo4.jpg scored against bicubic. ``tests/test_real_weights.py``
runs these on the released weights; ``tests/test_real_weights_logic.py`` runs them on the tiny fixtures so they
cannot rot while nobody has the weights.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

RAM_REPO = "xinyu1205/recognize-anything"
RAM_COMMIT = "7cb804a8609e9f4b1a50b7f31436d2df40bb9481"
#: (path in the RAM repository, git blob id at RAM_COMMIT)
DEMO1 = ("images/demo/demo1.jpg", "85faeb874b126a8029c7f12b93e36d95a7196911")
DEMO4 = ("images/demo/demo4.jpg", "babe62457175867dff1816a0d5d096d318d81973")
#: RAM README @ RAM_COMMIT, section "RAM Inference": `python inference_ram.py --image images/demo/demo1.jpg`
README_DEMO1_TAGS = [
    "armchair",
    "blanket",
    "lamp",
    "carpet",
    "couch",
    "dog",
    "floor",
    "furniture",
    "gray",
    "green",
    "living room",
    "picture frame",
    "pillow",
    "plant",
    "room",
    "sit",
    "stool",
    "wood floor",
]
#: parameters of the released seesr/unet and seesr/controlnet
UNET_PARAMS = 1_126_760_324
CONTROLNET_PARAMS = 489_031_440
MIN_PSNR_Y = 20.0


def git_blob_id(data: bytes) -> str:
    """``git hash-object`` of ``data``: SHA-1 of ``b"blob <len>\\0" + data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def fetch_checked(path: str, blob: str, get: Callable[[str], bytes] | None = None) -> bytes:
    """``path`` of the RAM repository at the pinned commit, refused unless its git blob id is ``blob``.

    Raises:
        ValueError: the bytes are not that blob.
    """
    if get is None:
        from seesr.weights.remote import http_get as get
    url = f"https://raw.githubusercontent.com/{RAM_REPO}/{RAM_COMMIT}/{path}"
    data = get(url)
    got = git_blob_id(data)
    if got != blob:
        raise ValueError(f"{url}: git blob {got}, expected {blob}")
    return data


def ram_input(image_bytes: bytes, size: int = 384) -> Any:
    """RAM's ``inference_ram.py`` preprocessing: RGB, torchvision ``Resize((384, 384))`` on a PIL image
    (= PIL bilinear, antialiased), ``ToTensor``, ImageNet normalisation. Returns ``(1, 3, 384, 384)`` float32."""
    import numpy as np
    import torch
    from PIL import Image

    from seesr.models.dape import IMAGENET_MEAN, IMAGENET_STD

    img = Image.open(io.BytesIO(image_bytes)).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class TagReport:
    """Tags of one image with the score and threshold of every tag in ``tags``."""

    tags: list[str]
    scores: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)


def ram_tags(model: Any, x384: Any) -> TagReport:
    """Tags of a DAPE/RAM model for a preprocessed input (``(1, 3, 384, 384)``), with all scores kept."""
    import torch

    with torch.no_grad():
        logits = model.tag_logits(x384.to(model.device))
    tags = model.tags_from_logits(logits)[0]
    probs = torch.sigmoid(logits.float())[0].cpu()
    thr = model.thresholds_for()
    names = list(model.tag_list)
    return TagReport(
        tags, dict(zip(names, probs.tolist(), strict=True)), dict(zip(names, thr.tolist(), strict=True))
    )


def compare_tags(report: TagReport, expected: Sequence[str], max_diff: int = 1) -> tuple[bool, list[str]]:
    """Order-insensitive comparison; returns (ok, one line per differing tag with its score and threshold)."""
    got, want = set(report.tags), set(expected)
    lines = []
    for tag in sorted(want - got):
        lines.append(
            f"missing {tag!r}: score {report.scores.get(tag, math.nan):.4f} <= threshold "
            f"{report.thresholds.get(tag, math.nan):.4f}"
        )
    for tag in sorted(got - want):
        lines.append(
            f"extra {tag!r}: score {report.scores.get(tag, math.nan):.4f} > threshold "
            f"{report.thresholds.get(tag, math.nan):.4f}"
        )
    return len(lines) <= max_diff, lines


def param_count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def downscale_x4(image_bytes: bytes) -> tuple[Any, Any]:
    """(HR PIL image, LR = HR downscaled ×4 with PIL bicubic, rounded sizes)."""
    from PIL import Image

    hr = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    w, h = hr.size
    return hr, hr.resize((round(w / 4), round(h / 4)), Image.Resampling.BICUBIC)


@dataclass
class QualityReport:
    psnr_y_sr: float
    psnr_y_bicubic: float
    lpips_sr: float
    lpips_bicubic: float

    @property
    def ok(self) -> bool:
        return self.lpips_sr < self.lpips_bicubic and self.psnr_y_sr > MIN_PSNR_Y

    def line(self) -> str:
        return (
            f"LPIPS {self.lpips_sr:.4f} (bicubic {self.lpips_bicubic:.4f}), PSNR-Y {self.psnr_y_sr:.2f} dB "
            f"(bicubic {self.psnr_y_bicubic:.2f}, needs > {MIN_PSNR_Y})"
        )


def upscale_quality(sr: Any, lr: Any, hr: Any, lpips: Callable[[Any, Any], float]) -> QualityReport:
    """Score the SR result and bicubic ×4 of ``lr`` against ``hr`` (PIL images; sr resized to hr if off by a
    rounding pixel). ``lpips(a, b)`` takes (1,3,H,W) tensors in [0,1]."""
    import numpy as np
    import torch
    from PIL import Image

    from seesr.metrics.fidelity import psnr_y

    def t(img: Any) -> torch.Tensor:
        return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[
            None
        ]

    if sr.size != hr.size:
        sr = sr.resize(hr.size, Image.Resampling.BICUBIC)
    bic = lr.resize(hr.size, Image.Resampling.BICUBIC)
    ths, tbic, thr = t(sr), t(bic), t(hr)
    return QualityReport(
        float(psnr_y(ths, thr)), float(psnr_y(tbic, thr)), float(lpips(ths, thr)), float(lpips(tbic, thr))
    )


def check_sidecar(sidecar: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """Problems with how a sidecar cites the weights manifest (empty = it cites exactly the folder's parts)."""
    cited = sidecar.get("weights_manifest")
    if not isinstance(cited, dict):
        return ["sidecar has no 'weights_manifest' object"]
    problems = []
    for name, part in manifest.get("parts", {}).items():
        mine = cited.get("parts", {}).get(name)
        if not mine or (mine.get("repo"), mine.get("revision")) != (part.get("repo"), part.get("revision")):
            problems.append(
                f"part {name}: sidecar cites {mine and (mine.get('repo'), mine.get('revision'))}, "
                f"folder has {(part.get('repo'), part.get('revision'))}"
            )
    if "converted" in manifest and cited.get("converted") != manifest["converted"]:
        problems.append("sidecar does not cite the converted files the run loaded")
    return problems
