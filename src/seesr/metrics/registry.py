"""The metrics of the paper's Table 2 (§4.1 "Evaluation Metrics"): names, labels, direction, weights source.

One entry per metric that ``seesr eval`` can compute. ``name`` is the key used on the command line and in
CSV/JSON; ``label`` is what tables print (MANIQA's two variants are labelled with their training set).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_IQA_HUB = "huggingface.co/chaofengc/IQA-PyTorch-Weights"


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is computed and reported.

    Attributes:
        name: key on the command line and in CSV/JSON, e.g. ``"maniqa-pipal"``.
        label: column label in tables, e.g. ``"MANIQA (pipal)"``.
        kind: ``"fr"`` full-reference per image, ``"nr"`` no-reference per image, ``"dist"`` folder-vs-folder.
        lower_better: True for LPIPS, DISTS, FID, NIQE.
        pyiqa_name: the pyiqa metric name, None for the in-house PSNR/SSIM.
        pyiqa_opts: options passed to ``pyiqa.create_metric``.
        weights: where the pretrained weights come from (printed when they cannot be loaded).
        decimals: digits printed in tables (as in the paper's Table 2).
    """

    name: str
    label: str
    kind: str
    lower_better: bool
    pyiqa_name: str | None = None
    pyiqa_opts: dict[str, object] = field(default_factory=dict)
    weights: str = ""
    decimals: int = 4

    @property
    def needs_gt(self) -> bool:
        return self.kind in ("fr", "dist")

    @property
    def arrow(self) -> str:
        return "↓" if self.lower_better else "↑"


METRICS: dict[str, MetricSpec] = {
    s.name: s
    for s in [
        MetricSpec("psnr", "PSNR", "fr", False, decimals=2),
        MetricSpec("ssim", "SSIM", "fr", False),
        MetricSpec(
            "lpips",
            "LPIPS",
            "fr",
            True,
            "lpips",
            {"net": "alex", "version": "0.1"},
            weights=f"LPIPS_v0.1_alex-df73285e.pth from {_IQA_HUB} and torchvision AlexNet IMAGENET1K_V1 "
            "from download.pytorch.org",
        ),
        MetricSpec(
            "dists",
            "DISTS",
            "fr",
            True,
            "dists",
            weights=f"DISTS_weights-f5e65c96.pth from {_IQA_HUB} and torchvision VGG16 IMAGENET1K_V1 "
            "from download.pytorch.org",
        ),
        MetricSpec(
            "fid",
            "FID",
            "dist",
            True,
            "fid",
            weights=f"pt_inception-2015-12-05-6726825d.pth (FID InceptionV3) from {_IQA_HUB}",
            decimals=2,
        ),
        MetricSpec("niqe", "NIQE", "nr", True, "niqe", weights=f"niqe_modelparameters.mat from {_IQA_HUB}"),
        MetricSpec(
            "maniqa",
            "MANIQA (koniq)",
            "nr",
            False,
            "maniqa",
            weights=f"ckpt_koniq10k.pt from {_IQA_HUB} and timm vit_base_patch8_224 from huggingface.co/timm",
        ),
        MetricSpec(
            "maniqa-pipal",
            "MANIQA (pipal)",
            "nr",
            False,
            "maniqa-pipal",
            weights=f"MANIQA_PIPAL-ae6d356b.pth from {_IQA_HUB} and timm vit_base_patch8_224 from huggingface.co/timm",
        ),
        MetricSpec(
            "musiq",
            "MUSIQ",
            "nr",
            False,
            "musiq",
            weights=f"musiq_koniq_ckpt-e95806b9.pth from {_IQA_HUB}",
            decimals=2,
        ),
        MetricSpec(
            "clipiqa",
            "CLIPIQA",
            "nr",
            False,
            "clipiqa",
            weights="OpenAI CLIP RN50.pt from openaipublic.azureedge.net",
        ),
    ]
}

# Table 2's row order.
TABLE2_ORDER = ["psnr", "ssim", "lpips", "dists", "fid", "niqe", "maniqa", "maniqa-pipal", "musiq", "clipiqa"]
FULL_REFERENCE = [n for n in TABLE2_ORDER if METRICS[n].needs_gt]
NO_REFERENCE = [n for n in TABLE2_ORDER if not METRICS[n].needs_gt]


def resolve_metrics(names: list[str] | None, have_gt: bool) -> list[MetricSpec]:
    """Turn requested names into specs, in Table 2 order.

    Args:
        names: metric keys, or ``None``/``["all"]`` for every metric the inputs allow.
        have_gt: whether a reference folder is given.

    Raises:
        ValueError: on an unknown name, or a full-reference metric requested without references.
    """
    if not names or names == ["all"]:
        wanted = TABLE2_ORDER if have_gt else NO_REFERENCE
    else:
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; expected some of {TABLE2_ORDER}")
        need_gt = [n for n in names if METRICS[n].needs_gt]
        if need_gt and not have_gt:
            raise ValueError(f"metric(s) {need_gt} need reference images: pass a GT folder")
        wanted = [n for n in TABLE2_ORDER if n in names]
    return [METRICS[n] for n in wanted]
