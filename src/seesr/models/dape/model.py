"""DAPE: the degradation-aware prompt extractor (paper §3.1; spec §1.4, §4).

DAPE is RAM (Recognize Anything, Swin-L at 384²) whose Swin ``qkv`` (q and v rows) and tagging-head
cross-attention ``query``/``key`` carry a rank-8 LoRA trained to be robust to degradation. SeeSR uses two of its
outputs: the **tags** ("hard prompt": classes with ``sigmoid(logit) > threshold``, ", "-joined in tag-list order)
and the **image embeddings** ("soft prompt": ``image_proj(swin(x))``, ``(B, 145, 512)``).

Only what those two outputs need is built (212,117,045 parameters at full size; the official RAM also builds a
``tag_encoder`` and ``text_decoder``, 471M in total): the Swin encoder, ``image_proj``, ``label_embed``,
``wordvec_proj``, the two-layer cross-attention-only ``tagging_head`` (Query2Label) and ``fc``. Parameter names equal
the official state-dict keys, so the released files load unchanged (:mod:`seesr.pipeline.dape_weights` reads and
writes them; this module knows nothing about files).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seesr.models.dape.config import DAPEConfig, DAPEOutput, TaggingOptions
from seesr.models.dape.head import TaggingHead
from seesr.models.lora import DEFAULT_ALPHA, DEFAULT_RANK, LoRALinear, iter_lora_layers
from seesr.models.swin import SwinEncoder

__all__ = [
    "DAPE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "check_tag_list",
    "check_thresholds",
    "imagenet_normalize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` with the ImageNet statistics (torchvision ``Normalize``), in ``x``'s dtype.

    Args:
        x: ``(B, 3, H, W)`` float RGB in [0, 1].

    Returns:
        ``(B, 3, H, W)`` normalised, same dtype and device.
    """
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def check_tag_list(tag_list: Sequence[str], num_classes: int, source: str = "tag_list") -> list[str]:
    """``tag_list`` as a list of ``num_classes`` strings.

    Raises:
        ValueError: wrong length (``source`` names where the list came from).
    """
    tags = [str(t) for t in tag_list]
    if len(tags) != num_classes:
        raise ValueError(f"{source}: {len(tags)} tags, but the model has {num_classes} classes")
    return tags


def check_thresholds(
    thresholds: Sequence[float] | torch.Tensor, num_classes: int, source: str = "thresholds"
) -> torch.Tensor:
    """``thresholds`` as a ``(num_classes,)`` float32 CPU tensor.

    Raises:
        ValueError: wrong length or a NaN (``source`` names where the values came from).
    """
    if isinstance(thresholds, torch.Tensor):
        t = thresholds.detach().to(device="cpu", dtype=torch.float32).flatten()
    else:
        t = torch.tensor([float(v) for v in thresholds], dtype=torch.float32, device="cpu")
    if t.numel() != num_classes:
        raise ValueError(f"{source}: {t.numel()} thresholds, but the model has {num_classes} classes")
    if torch.isnan(t).any():
        raise ValueError(f"{source}: thresholds contain NaN")
    return t


class DAPE(nn.Module):
    """RAM Swin-L tagger + soft-prompt extractor with the DAPE LoRA (merged for inference).

    Build it from files with :func:`seesr.pipeline.dape_weights.load_official_dape` (released ``.pth`` files) or
    :func:`seesr.pipeline.dape_weights.load_dape` (our layout); this class never reads files.

    Args:
        config: architecture.
        tag_list: ``num_classes`` tag names.
        thresholds: ``num_classes`` per-class thresholds (float32).
        tagging: default :class:`TaggingOptions`.
    """

    def __init__(
        self,
        config: DAPEConfig,
        tag_list: Sequence[str],
        thresholds: Sequence[float] | torch.Tensor,
        tagging: TaggingOptions | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.tag_list = check_tag_list(tag_list, config.num_classes)
        # plain attribute (not a buffer) so `.to(float16)` keeps thresholds in float32 like the official code
        self.class_threshold = check_thresholds(thresholds, config.num_classes)
        self.tagging = tagging or TaggingOptions()
        self._tag_index = {t: i for i, t in enumerate(self.tag_list)}
        c = config
        self.visual_encoder = SwinEncoder(
            c.image_size, c.patch_size, c.embed_dim, c.depths, c.num_heads, c.window_size, c.mlp_ratio,
            c.drop_path_rate,
        )  # fmt: skip
        self.image_proj = nn.Linear(c.vision_width, c.embed_width)
        self.label_embed = nn.Parameter(torch.zeros(c.num_classes, c.embed_width))
        # the official code uses Identity when the head width already equals the label-embedding width
        self.wordvec_proj = nn.Linear(c.embed_width, c.head_hidden) if c.head_hidden != 512 else nn.Identity()
        self.tagging_head = TaggingHead(c)
        self.fc = nn.Linear(c.head_hidden, 1)

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> torch.dtype:
        return self.image_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.image_proj.weight.device

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    # ------------------------------------------------------------------ compute
    def preprocess(self, lr: torch.Tensor, antialias: bool = False) -> torch.Tensor:
        """Official RAM preprocessing (spec §1.4): bilinear resize to 384² + ImageNet normalisation, in fp32.

        Args:
            lr: ``(B, 3, h, w)`` float RGB in [0, 1] (the original LR, before any SR resizing).
            antialias: ``False`` reproduces the released results (torchvision 0.15 tensor ``Resize``); ``True``
                is torchvision ≥ 0.17's default. They differ only when a side is larger than 384.

        Returns:
            ``(B, 3, 384, 384)`` float32, ImageNet-normalised.

        Raises:
            ValueError: for a wrong shape or an integer tensor.
        """
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"lr must be (B, 3, h, w), got shape {tuple(lr.shape)}")
        if not lr.is_floating_point():
            raise ValueError(f"lr must be a float tensor in [0, 1], got dtype {lr.dtype}")
        s = self.config.image_size
        x = F.interpolate(lr.float(), size=(s, s), mode="bilinear", align_corners=False, antialias=antialias)
        return imagenet_normalize(x)

    def image_embeds(self, x384: torch.Tensor) -> torch.Tensor:
        """Soft prompt ``image_proj(swin(x))``.

        Args:
            x384: ``(B, 3, 384, 384)`` ImageNet-normalised input (any float dtype; cast to the model dtype).

        Returns:
            ``(B, 145, 512)`` in the model dtype.
        """
        return self.image_proj(self.visual_encoder(x384.to(self.dtype)))

    def logits_from_embeds(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """Tagging logits ``(B, num_classes)`` from ``image_embeds`` ``(B, T, 512)``."""
        queries = F.relu(self.wordvec_proj(self.label_embed))
        queries = queries.unsqueeze(0).expand(image_embeds.shape[0], -1, -1)
        return self.fc(self.tagging_head(queries, image_embeds)).squeeze(-1)

    def tag_logits(self, x384: torch.Tensor) -> torch.Tensor:
        """Tagging logits ``(B, num_classes)`` from a preprocessed ``(B, 3, 384, 384)`` input."""
        return self.logits_from_embeds(self.image_embeds(x384))

    def embeds_and_logits(self, x384: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image_embeds (B,145,512), logits (B,num_classes))`` with one Swin pass (the official code runs
        the encoder once per output; the result is the same)."""
        emb = self.image_embeds(x384)
        return emb, self.logits_from_embeds(emb)

    def thresholds_for(self, options: TaggingOptions | None = None) -> torch.Tensor:
        """Effective per-class thresholds ``(num_classes,)`` float32 on CPU for ``options``."""
        opt = options or self.tagging
        thr = self.class_threshold.clone()
        t = opt.threshold
        if t is None:
            return thr
        if isinstance(t, (int, float)):
            if math.isnan(t):
                raise ValueError("threshold must be a number, got NaN")
            return torch.full_like(thr, float(t))
        if isinstance(t, Mapping):
            unknown = sorted(str(k) for k in t if k not in self._tag_index)
            if unknown:
                raise ValueError(f"threshold overrides for tags not in the tag list: {unknown[:10]}")
            for k, v in t.items():
                thr[self._tag_index[k]] = float(v)
            return thr
        return check_thresholds(list(t), self.num_classes)

    def tags_from_logits(
        self, logits: torch.Tensor, options: TaggingOptions | None = None
    ) -> list[list[str]]:
        """Tag names per image: ``sigmoid(logit) > threshold`` in tag-list order, minus the blocklist, plus
        the extra tags.

        Args:
            logits: ``(B, num_classes)``.
            options: overrides the model's default :attr:`tagging` options.
        """
        opt = options or self.tagging
        unknown = sorted(t for t in opt.blocklist if t not in self._tag_index)
        if unknown:
            raise ValueError(f"blocklisted tags not in the tag list: {unknown[:10]}")
        thr = self.thresholds_for(opt).to(logits.device)
        fired = torch.sigmoid(logits.float()) > thr
        if opt.blocklist:
            fired[:, [self._tag_index[t] for t in opt.blocklist]] = False
        out: list[list[str]] = []
        for row in fired.cpu():
            tags = [self.tag_list[i] for i in torch.nonzero(row).flatten().tolist()]
            for extra in opt.extra_tags:
                if extra not in tags:
                    tags.append(extra)
            out.append(tags)
        return out

    def forward(
        self, lr: torch.Tensor, antialias: bool = False, options: TaggingOptions | None = None
    ) -> DAPEOutput:
        """Tags and soft prompt of LR images.

        Args:
            lr: ``(B, 3, h, w)`` float RGB in [0, 1], the original LR.
            antialias: resize antialiasing (see :meth:`preprocess`).
            options: tagging options (default: :attr:`tagging`).

        Returns:
            :class:`DAPEOutput`.
        """
        emb, logits = self.embeds_and_logits(self.preprocess(lr, antialias=antialias))
        tags = self.tags_from_logits(logits, options)
        return DAPEOutput(
            tags=tags, tag_strings=[", ".join(t) for t in tags], image_embeds=emb, logits=logits
        )

    # ------------------------------------------------------------------ LoRA (training)
    def lora_layers(self) -> dict[str, LoRALinear]:
        """The LoRA targets of DAPE: every Swin ``qkv`` and the tagging-head ``query``/``key``."""
        return dict(iter_lora_layers(self))

    def enable_lora(
        self, r: int = DEFAULT_RANK, alpha: float = DEFAULT_ALPHA, generator: torch.Generator | None = None
    ) -> None:
        """Give every LoRA target fresh unmerged LoRA tensors (loralib init; ``generator`` for lora_A)."""
        for _, layer in iter_lora_layers(self):
            layer.enable_lora(r, alpha, generator)

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Generator for drop-path / dropout draws in ``train()`` mode."""
        self.visual_encoder.set_generator(generator)
        self.tagging_head.generator = generator

    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict with any enabled LoRA folded into the weights and no ``lora_*`` keys (does not modify
        the model)."""
        sd = {k: v.detach() for k, v in self.state_dict().items() if ".lora_" not in k}
        for name, layer in iter_lora_layers(self):
            if layer.lora_enabled:
                sd[f"{name}.weight"] = sd[f"{name}.weight"] + layer.delta_weight().detach()
        return sd

    # ------------------------------------------------------------------ state (no files)
    @classmethod
    def empty(
        cls, config: DAPEConfig, tag_list: Sequence[str], thresholds: Sequence[float] | torch.Tensor
    ) -> DAPE:
        """A model on the ``meta`` device (no memory); fill it with :meth:`assign_state`."""
        with torch.device("meta"):
            model = cls(config, tag_list, thresholds)
        return model

    def assign_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Take ``state`` (official key names, every key exactly once) as the weights, without copying; eval mode.

        Raises:
            ValueError: a key is missing, unexpected or has the wrong shape (``source`` names where it came from).
        """
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        bad = [
            f"{k}: {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
            for k, v in state.items()
            if k in expected and tuple(v.shape) != tuple(expected[k].shape)
        ]
        if missing or unexpected or bad:
            parts = []
            if bad:
                parts.append(f"{len(bad)} tensors have the wrong shape: " + "; ".join(bad[:5]))
            if missing:
                parts.append(f"missing {len(missing)} keys {missing[:5]}")
            if unexpected:
                parts.append(f"unexpected {len(unexpected)} keys {unexpected[:5]}")
            raise ValueError(
                f"{source} does not match the DAPE architecture (embed_dim {self.config.embed_dim}, depths "
                f"{list(self.config.depths)}; pass `arch` for a non-default one): " + "; ".join(parts)
            )
        self.load_state_dict(state, strict=True, assign=True)
        self.visual_encoder.init_buffers()
        self.eval()
