"""DAPE: the degradation-aware prompt extractor (paper §3.1; spec §1.4, §4).

DAPE is RAM (Recognize Anything, Swin-L at 384²) whose Swin ``qkv`` (q and v rows) and tagging-head
cross-attention ``query``/``key`` carry a rank-8 LoRA trained to be robust to degradation. SeeSR uses two of its
outputs: the **tags** ("hard prompt": classes with ``sigmoid(logit) > threshold``, ", "-joined in tag-list order)
and the **image embeddings** ("soft prompt": ``image_proj(swin(x))``, ``(B, 145, 512)``).

Only what those two outputs need is built (212,117,045 parameters at full size; the official RAM also builds a
``tag_encoder`` and ``text_decoder``, 471M in total): the Swin encoder, ``image_proj``, ``label_embed``,
``wordvec_proj``, the two-layer cross-attention-only ``tagging_head`` (Query2Label) and ``fc``. Parameter names equal
the official state-dict keys, so :meth:`DAPE.from_official` reads ``ram_swin_large_14m.pth`` + ``DAPE.pth``
unchanged and :meth:`DAPE.save_pretrained` writes our own safetensors layout (LoRA merged).

Training (stage 1, spec §4.4) uses :func:`build_student` (RAM + unmerged trainable LoRA), :func:`build_teacher`
(plain RAM, frozen) and :func:`official_lora_state_dict` (trained LoRA in the exact ``DAPE.pth`` key layout).

Note: this module reads weight files because its documented entry points (``from_official``,
``from_pretrained``) take paths; it knows nothing about images, data sets or the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seesr.models.lora import (
    DEFAULT_ALPHA,
    DEFAULT_RANK,
    LoRALinear,
    iter_lora_layers,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_delta_,
)
from seesr.models.swin import SwinEncoder

logger = logging.getLogger(__name__)

__all__ = [
    "DAPE",
    "DAPEConfig",
    "DAPEOutput",
    "TaggingOptions",
    "build_student",
    "build_teacher",
    "official_lora_state_dict",
    "save_official_lora",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TAG_LIST_NAME = "tag_list.txt"
THRESHOLDS_NAME = "tag_thresholds.txt"
_QKV_GROUPS = (True, False, True)


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DAPEConfig:
    """Architecture of DAPE. Defaults = the released RAM Swin-L (spec §4.1).

    ``med_*`` only describe the official ``tag_encoder``/``text_decoder`` (not built) so that
    :func:`official_lora_state_dict` can write their LoRA keys. ``drop_path_rate``/``head_dropout`` act only in
    ``train()`` mode (the official student uses 0.1 / 0.1; inference ignores them).
    """

    image_size: int = 384
    patch_size: int = 4
    embed_dim: int = 192
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (6, 12, 24, 48)
    window_size: int = 12
    mlp_ratio: float = 4.0
    embed_width: int = 512
    num_classes: int = 4585
    head_hidden: int = 768
    head_layers: int = 2
    head_heads: int = 4
    head_intermediate: int = 3072
    head_layer_norm_eps: float = 1e-12
    med_hidden: int = 768
    med_layers: int = 12
    med_decoder_encoder_width: int = 768
    drop_path_rate: float = 0.0
    head_dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must have the same length")
        stride = self.patch_size * 2 ** (len(self.depths) - 1)
        if self.image_size % stride:
            raise ValueError(f"image_size {self.image_size} must be a multiple of {stride}")
        if self.head_hidden % self.head_heads:
            raise ValueError(f"head_hidden {self.head_hidden} not divisible by head_heads {self.head_heads}")

    @property
    def vision_width(self) -> int:
        """Channels of the last Swin stage (Swin-L: 1536)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def num_tokens(self) -> int:
        """Tokens of ``image_embeds``: 1 mean token + the last stage's grid (145 at 384²)."""
        side = self.image_size // (self.patch_size * 2 ** (len(self.depths) - 1))
        return 1 + side * side

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["depths"], d["num_heads"] = list(self.depths), list(self.num_heads)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DAPEConfig:
        """From :meth:`to_dict` output (unknown keys rejected) or from the fixtures' ``arch.json`` format."""
        if "swin" in d:
            return cls._from_arch_json(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown DAPE config keys {unknown}; expected a subset of {sorted(names)}")
        return cls(**d)

    @classmethod
    def _from_arch_json(cls, d: Mapping[str, Any]) -> DAPEConfig:
        try:
            swin, head = d["swin"], d["tagging_head"]
            kw: dict[str, Any] = dict(
                image_size=d.get("image_size", 384),
                patch_size=d.get("patch_size", 4),
                embed_dim=swin["embed_dim"],
                depths=swin["depths"],
                num_heads=swin["num_heads"],
                window_size=swin.get("window_size", 12),
                mlp_ratio=swin.get("mlp_ratio", 4.0),
                embed_width=d.get("image_proj", {}).get("out", 512),
                num_classes=d.get("label_embed", [4585])[0],
                head_hidden=head["hidden_size"],
                head_layers=head["num_layers"],
                head_heads=head["num_heads"],
                head_intermediate=head["intermediate_size"],
                head_layer_norm_eps=head.get("layer_norm_eps", 1e-12),
            )
            if "tag_encoder" in d:
                kw["med_hidden"] = d["tag_encoder"]["hidden_size"]
                kw["med_layers"] = d["tag_encoder"]["num_layers"]
            if "text_decoder" in d:
                kw["med_decoder_encoder_width"] = d["text_decoder"]["encoder_width"]
        except (KeyError, TypeError, IndexError) as err:
            raise ValueError(f"arch description lacks {err}; expected the ram-tiny/arch.json layout") from err
        return cls(**kw)


def _resolve_config(arch: None | DAPEConfig | Mapping[str, Any] | str | Path) -> DAPEConfig:
    if arch is None:
        return DAPEConfig()
    if isinstance(arch, DAPEConfig):
        return arch
    if isinstance(arch, (str, Path)):
        path = Path(arch)
        if not path.is_file():
            raise FileNotFoundError(f"DAPE architecture file not found: {path}")
        try:
            arch = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(arch, Mapping):
        raise ValueError(f"arch must be None, a DAPEConfig, a dict or a JSON path, got {type(arch).__name__}")
    return DAPEConfig.from_dict(arch)


# ----------------------------------------------------------------------------------------------- tagging
@dataclass(frozen=True)
class TaggingOptions:
    """How logits become tags (run-time options; the official behaviour is the default).

    Attributes:
        threshold: ``None`` = the per-class thresholds of the tag-threshold file; a float = one global threshold;
            a mapping ``{tag name: threshold}`` = overrides for those classes only; a sequence of
            ``num_classes`` floats = a full replacement. A tag fires iff ``sigmoid(logit) > threshold`` (strict).
        blocklist: tag names never emitted by the tagger (must be in the tag list).
        extra_tags: user tags appended after the predicted ones, in the given order, without duplicates.
            They are emitted even when blocklisted (the user asked for them explicitly).
    """

    threshold: float | Mapping[str, float] | Sequence[float] | None = None
    blocklist: tuple[str, ...] = ()
    extra_tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("blocklist", "extra_tags"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(
                    f"TaggingOptions.{name} must be a sequence of tags, got the string {value!r}"
                )
            object.__setattr__(self, name, tuple(str(t).strip() for t in value if str(t).strip()))


@dataclass
class DAPEOutput:
    """Result of :meth:`DAPE.forward`.

    Attributes:
        tags: per image, the tag names (tag-list order, then extra tags).
        tag_strings: per image, ``", ".join(tags)`` (the official separator).
        image_embeds: ``(B, 145, 512)`` soft prompt in the model dtype.
        logits: ``(B, num_classes)`` tagging logits in the model dtype.
    """

    tags: list[list[str]]
    tag_strings: list[str]
    image_embeds: torch.Tensor
    logits: torch.Tensor


# ----------------------------------------------------------------------------------------------- head
def _dropout(x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None) -> torch.Tensor:
    if not training or p <= 0.0:
        return x
    dev = generator.device if generator is not None else x.device  # draw where the generator lives
    keep = torch.rand(x.shape, generator=generator, device=dev).to(x.device) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class _CrossSelf(nn.Module):
    """BERT cross-attention projections (official names ``query``/``key``/``value``); q/k can carry LoRA."""

    def __init__(self, hidden: int, enc_width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = LoRALinear(hidden, hidden)
        self.key = LoRALinear(enc_width, hidden)
        self.value = nn.Linear(enc_width, hidden)

    def forward(
        self, h: torch.Tensor, enc: torch.Tensor, p_drop: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        b, n, d = h.shape
        hd = d // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.query(h)), split(self.key(enc)), split(self.value(enc))
        if self.training and p_drop > 0.0:
            probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
            ctx = _dropout(probs, p_drop, True, generator) @ v
        else:
            # the encoder mask is all ones in the official code (additive 0), so no mask here
            ctx = F.scaled_dot_product_attention(q, k, v)
        return ctx.transpose(1, 2).reshape(b, n, d)


class _DenseNorm(nn.Module):
    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)


class _CrossAttention(nn.Module):
    def __init__(self, hidden: int, enc_width: int, heads: int, eps: float) -> None:
        super().__init__()
        self.self = _CrossSelf(hidden, enc_width, heads)
        self.output = _DenseNorm(hidden, hidden, eps)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, inter)


class _HeadLayer(nn.Module):
    """One Query2Label layer: cross-attention (labels → image tokens) + FFN, post-LayerNorm (BERT)."""

    def __init__(self, cfg: DAPEConfig) -> None:
        super().__init__()
        eps = cfg.head_layer_norm_eps
        self.crossattention = _CrossAttention(cfg.head_hidden, cfg.embed_width, cfg.head_heads, eps)
        self.intermediate = _Intermediate(cfg.head_hidden, cfg.head_intermediate)
        self.output = _DenseNorm(cfg.head_intermediate, cfg.head_hidden, eps)

    def forward(
        self, h: torch.Tensor, enc: torch.Tensor, p: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        ca = self.crossattention
        ctx = ca.self(h, enc, p, generator)
        a = ca.output.LayerNorm(_dropout(ca.output.dense(ctx), p, self.training, generator) + h)
        f = F.gelu(self.intermediate.dense(a))
        return self.output.LayerNorm(_dropout(self.output.dense(f), p, self.training, generator) + a)


class _Encoder(nn.Module):
    def __init__(self, cfg: DAPEConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_HeadLayer(cfg) for _ in range(cfg.head_layers)])


class TaggingHead(nn.Module):
    """RAM's tagging head: BERT layers without embeddings and self-attention (``mode='tagging'``)."""

    def __init__(self, cfg: DAPEConfig) -> None:
        super().__init__()
        self.encoder = _Encoder(cfg)
        self.dropout = cfg.head_dropout
        self.generator: torch.Generator | None = None

    def forward(self, queries: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """queries ``(B, C, hidden)``, image_embeds ``(B, T, 512)`` → ``(B, C, hidden)``."""
        h = queries
        for layer in self.encoder.layer:
            h = layer(h, image_embeds, self.dropout, self.generator)
        return h


# ----------------------------------------------------------------------------------------------- files
def _torch_load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            # legacy (non-zip) torch.save format cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types; report them uniformly
        raise ValueError(f"{what} {path} is not a readable PyTorch checkpoint: {err}") from err


def _read_tag_list(tag_list: str | Path | Sequence[str], num_classes: int) -> list[str]:
    if isinstance(tag_list, (str, Path)):
        path = Path(tag_list)
        if not path.is_file():
            raise FileNotFoundError(f"tag list not found: {path}")
        tags = path.read_text(encoding="utf-8").splitlines()
        src = str(path)
    else:
        tags, src = [str(t) for t in tag_list], "tag_list"
    if len(tags) != num_classes:
        raise ValueError(f"{src}: {len(tags)} tags, but the model has {num_classes} classes")
    return tags


def _read_thresholds(
    thresholds: str | Path | Sequence[float] | torch.Tensor, num_classes: int
) -> torch.Tensor:
    src = "thresholds"
    if isinstance(thresholds, (str, Path)):
        path = Path(thresholds)
        if not path.is_file():
            raise FileNotFoundError(f"tag threshold file not found: {path}")
        src = str(path)
        values: list[float] = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                values.append(float(line.strip()))
            except ValueError as err:
                raise ValueError(f"{path}: line {i + 1} {line!r} is not a number") from err
        t = torch.tensor(values, dtype=torch.float32, device="cpu")
    else:
        if isinstance(thresholds, torch.Tensor):
            t = thresholds.detach().to(device="cpu", dtype=torch.float32).flatten()
        else:
            t = torch.tensor([float(v) for v in thresholds], dtype=torch.float32, device="cpu")
    if t.numel() != num_classes:
        raise ValueError(f"{src}: {t.numel()} thresholds, but the model has {num_classes} classes")
    if torch.isnan(t).any():
        raise ValueError(f"{src}: thresholds contain NaN")
    return t


def _format_float32(v: float) -> str:
    import numpy as np

    return np.format_float_positional(np.float32(v), unique=True, trim="-")


# ----------------------------------------------------------------------------------------------- model
class DAPE(nn.Module):
    """RAM Swin-L tagger + soft-prompt extractor with the DAPE LoRA (merged for inference).

    Build it with :meth:`from_official` (released ``.pth`` files) or :meth:`from_pretrained` (our layout).

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
        self.tag_list = _read_tag_list(list(tag_list), config.num_classes)
        # plain attribute (not a buffer) so `.to(float16)` keeps thresholds in float32 like the official code
        self.class_threshold = _read_thresholds(thresholds, config.num_classes)
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
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

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
        return _read_thresholds(list(t), self.num_classes)

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

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def _empty(cls, config: DAPEConfig, tags: list[str], thr: torch.Tensor) -> DAPE:
        with torch.device("meta"):
            model = cls(config, tags, thr)
        return model

    def _finish_load(self, state: dict[str, torch.Tensor], source: str) -> None:
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

    @classmethod
    def from_official(
        cls,
        ram_checkpoint: str | Path,
        dape_checkpoint: str | Path | None = None,
        tag_list: str | Path | Sequence[str] | None = None,
        thresholds: str | Path | Sequence[float] | None = None,
        arch: None | DAPEConfig | Mapping[str, Any] | str | Path = None,
        tagging: TaggingOptions | None = None,
    ) -> DAPE:
        """Load the released RAM checkpoint (+ optional DAPE LoRA) exactly as SeeSR's ``ram(...)`` + ``.eval()``.

        * ``ram_checkpoint``: ``torch.load(...)['model']`` (other entries such as optimizer state ignored);
          keys with ``vision_multi`` renamed to ``tagging_head``; ``relative_position_index``/``attn_mask``
          buffers and the ``tag_encoder``/``text_decoder`` weights (not needed; their tied layers 0-1 hold the
          same tensors as the tagging head) skipped; every other key must match (name and shape).
        * ``dape_checkpoint``: the flat ``lora_*`` dict of ``DAPE.pth``. Deltas ``(B@A)/8`` are merged into the
          Swin qkv q/v rows and the tagging-head query/key weights. Non-zero ``tag_encoder`` layer 0-1
          cross-attention query/key deltas reach the tagging head through the tied weights in the official code,
          so they are merged too, first: ``W ← (W + ΔE) + ΔH`` (spec §9.19). Other tag_encoder/text_decoder LoRA
          tensors are off the tagging/embedding path and ignored.

        Args:
            ram_checkpoint: path of ``ram_swin_large_14m.pth`` (or a file of that format).
            dape_checkpoint: path of ``DAPE.pth``; ``None`` = plain RAM.
            tag_list: path of ``ram_tag_list.txt`` or the list of names (``num_classes`` entries).
            thresholds: path of ``ram_tag_list_threshold.txt`` or the values.
            arch: ``None`` = the real Swin-L RAM; a :class:`DAPEConfig`, a dict or a path of an ``arch.json``.
            tagging: default tagging options.

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: a file is not a checkpoint, a key is missing/unknown or has the wrong shape, or the tag
                list / thresholds have the wrong length.
        """
        if tag_list is None or thresholds is None:
            raise ValueError(
                "from_official needs tag_list and thresholds (ram_tag_list.txt / _threshold.txt)"
            )
        config = _resolve_config(arch)
        tags = _read_tag_list(tag_list, config.num_classes)
        thr = _read_thresholds(thresholds, config.num_classes)
        ram_path = Path(ram_checkpoint)
        ckpt = _torch_load(ram_path, "RAM checkpoint")
        if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
            keys = list(ckpt)[:5] if isinstance(ckpt, Mapping) else type(ckpt).__name__
            raise ValueError(f"RAM checkpoint {ram_path} has no 'model' state dict (found {keys})")
        model = cls._empty(config, tags, thr)
        expected = set(model.state_dict())
        state: dict[str, torch.Tensor] = {}
        unexpected: list[str] = []
        for key, value in ckpt["model"].items():
            name = key.replace("vision_multi", "tagging_head")
            if name.endswith(("relative_position_index", "attn_mask")) or name.startswith(
                ("tag_encoder.", "text_decoder.")
            ):
                continue
            if name in expected and isinstance(value, torch.Tensor):
                state[name] = value.float() if value.is_floating_point() else value
            else:
                unexpected.append(key)
        if unexpected:
            raise ValueError(
                f"RAM checkpoint {ram_path}: {len(unexpected)} unexpected keys {unexpected[:5]} "
                f"(expected a RAM Swin state dict; LoRA files go to dape_checkpoint)"
            )
        _check_tied_copies(ckpt["model"], state, ram_path)
        if dape_checkpoint is not None:
            _merge_official_lora(state, Path(dape_checkpoint), config)
        model._finish_load(state, f"RAM checkpoint {ram_path}")
        model.tagging = tagging or TaggingOptions()
        logger.info(
            "loaded DAPE from %s%s (%d parameters)",
            ram_path,
            f" + {dape_checkpoint}" if dape_checkpoint else "",
            sum(p.numel() for p in model.parameters()),
        )
        return model

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json``, ``model.safetensors`` (LoRA merged), ``tag_list.txt``, ``tag_thresholds.txt``."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        sd = {k: v.contiguous() for k, v in self.merged_state_dict().items()}
        save_file(sd, str(out / WEIGHTS_NAME), metadata={"format": "pt", "seesr": "dape"})
        cfg = {"_class": "DAPE", "format_version": 1, "arch": self.config.to_dict()}
        (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
        (out / TAG_LIST_NAME).write_text("\n".join(self.tag_list), encoding="utf-8")
        (out / THRESHOLDS_NAME).write_text(
            "\n".join(_format_float32(v) for v in self.class_threshold.tolist()), encoding="utf-8"
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path, tagging: TaggingOptions | None = None) -> DAPE:
        """Load a folder written by :meth:`save_pretrained`.

        Raises:
            FileNotFoundError: the folder or one of its four files is missing.
            ValueError: the files do not match each other.
        """
        from safetensors.torch import load_file

        d = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME, TAG_LIST_NAME, THRESHOLDS_NAME):
            if not (d / name).is_file():
                raise FileNotFoundError(f"DAPE folder {d} lacks {name} (expected a save_pretrained folder)")
        try:
            cfg = json.loads((d / CONFIG_NAME).read_text(encoding="utf-8"))
            config = DAPEConfig.from_dict(cfg["arch"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{d / CONFIG_NAME}: not a DAPE config ({err})") from err
        tags = _read_tag_list(d / TAG_LIST_NAME, config.num_classes)
        thr = _read_thresholds(d / THRESHOLDS_NAME, config.num_classes)
        model = cls._empty(config, tags, thr)
        model._finish_load(load_file(str(d / WEIGHTS_NAME)), f"DAPE weights {d / WEIGHTS_NAME}")
        model.tagging = tagging or TaggingOptions()
        return model


def _check_tied_copies(ckpt: Mapping[str, Any], state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Warn when the checkpoint's tag_encoder copies of the tied tagging-head layers hold other values.

    In the official model both names are one tensor; loading copies the tag_encoder entry first and the
    tagging_head entry last, so the tagging_head values win — which is what we use. A mismatch means the file was
    not written from a tied model, so it is worth a warning (not an error: the official code accepts it).
    """
    differing = []
    for key, value in ckpt.items():
        if not key.startswith("tag_encoder.encoder.layer."):
            continue
        twin = "tagging_head." + key[len("tag_encoder.") :]
        mine = state.get(twin)
        if mine is None or not isinstance(value, torch.Tensor) or value.shape != mine.shape:
            continue
        if not torch.equal(value.to(mine.dtype), mine):
            differing.append(key)
    if differing:
        logger.warning(
            "RAM checkpoint %s: %d tag_encoder tensors differ from their tied tagging_head twins (e.g. %s); "
            "using the tagging_head values, as the official loader does",
            path,
            len(differing),
            differing[0],
        )


# ----------------------------------------------------------------------------------------------- official LoRA
_SWIN_QKV = re.compile(r"^visual_encoder\.layers\.\d+\.blocks\.\d+\.attn\.qkv$")
_HEAD_QK = re.compile(r"^tagging_head\.encoder\.layer\.(\d+)\.crossattention\.self\.(query|key)$")
_TIED_QK = re.compile(r"^tag_encoder\.encoder\.layer\.(\d+)\.crossattention\.self\.(query|key)$")


def _read_lora_file(path: Path) -> dict[str, torch.Tensor]:
    sd = _torch_load(path, "DAPE checkpoint")
    if not isinstance(sd, Mapping) or not sd:
        raise ValueError(f"DAPE checkpoint {path}: expected a dict of lora_A/lora_B tensors")
    bad = [
        k for k, v in sd.items() if not isinstance(v, torch.Tensor) or not k.endswith((".lora_A", ".lora_B"))
    ]
    if bad:
        raise ValueError(
            f"DAPE checkpoint {path}: {len(bad)} entries are not LoRA tensors, e.g. {bad[:5]} "
            "(expected only '*.lora_A' / '*.lora_B' keys as in DAPE.pth)"
        )
    return {k: v.float() for k, v in sd.items()}


def _lora_pairs(sd: Mapping[str, torch.Tensor], path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in sd:
        layer = key.rsplit(".", 1)[0]
        if layer in pairs:
            continue
        a, b = sd.get(f"{layer}.lora_A"), sd.get(f"{layer}.lora_B")
        if a is None or b is None:
            raise ValueError(f"DAPE checkpoint {path}: {layer} has only one of lora_A / lora_B")
        pairs[layer] = (a, b)
    return pairs


def _merge_official_lora(state: dict[str, torch.Tensor], path: Path, config: DAPEConfig) -> None:
    """Merge the DAPE deltas into ``state`` (official key names) in loralib's ``eval()`` order."""
    pairs = _lora_pairs(_read_lora_file(path), path)
    scale = DEFAULT_ALPHA / DEFAULT_RANK
    tied, own, unknown = [], [], []
    for layer, (_a, b) in pairs.items():
        if _SWIN_QKV.match(layer) or _HEAD_QK.match(layer):
            own.append(layer)
        elif (m := _TIED_QK.match(layer)) and int(m.group(1)) < config.head_layers:
            tied.append(layer)
        elif layer.startswith(("tag_encoder.", "text_decoder.")):
            if bool(b.any()):
                logger.warning(
                    "DAPE checkpoint %s: ignoring non-zero LoRA of %s (not used by SeeSR)", path, layer
                )
        else:
            unknown.append(layer)
    if unknown:
        raise ValueError(f"DAPE checkpoint {path}: LoRA for layers this model does not have: {unknown[:5]}")

    owned: set[str] = set()

    def merge(layer: str, target: str, groups: tuple[bool, ...]) -> None:
        a, b = pairs[layer]
        if target not in state:
            raise ValueError(f"DAPE checkpoint {path}: {layer} has no base weight {target}")
        if (
            target not in owned
        ):  # copy on first write: the mmap'd checkpoint stays untouched (and mostly unread)
            state[target] = state[target].clone()
            owned.add(target)
        w = state[target]
        r = b.shape[1] if b.ndim == 2 else 0
        if r != DEFAULT_RANK:
            raise ValueError(
                f"DAPE checkpoint {path}: {layer}.lora_B {tuple(b.shape)}: expected rank {DEFAULT_RANK}"
            )
        try:
            merge_delta_(w, a, b, groups, scale)
        except ValueError as err:
            raise ValueError(f"DAPE checkpoint {path}: {layer} vs {target} {tuple(w.shape)}: {err}") from err

    # loralib merges module by module in registration order: tag_encoder (tied to the head) before tagging_head
    for layer in tied:
        if bool(pairs[layer][1].any()):
            logger.info(
                "DAPE checkpoint %s: merging non-zero tied LoRA %s into the tagging head", path, layer
            )
            merge(layer, layer.replace("tag_encoder.", "tagging_head.", 1) + ".weight", (True,))
    for layer in own:
        merge(layer, f"{layer}.weight", _QKV_GROUPS if layer.endswith(".qkv") else (True,))


# ----------------------------------------------------------------------------------------------- training helpers
def build_teacher(
    ram_checkpoint: str | Path,
    *,
    tag_list: str | Path | Sequence[str],
    thresholds: str | Path | Sequence[float],
    arch: None | DAPEConfig | Mapping[str, Any] | str | Path = None,
) -> DAPE:
    """The DAPE-training teacher: plain RAM (no LoRA), eval mode, no gradients (spec §4.4)."""
    model = DAPE.from_official(ram_checkpoint, None, tag_list=tag_list, thresholds=thresholds, arch=arch)
    model.requires_grad_(False)
    return model.eval()


def build_student(
    ram_checkpoint: str | Path,
    dape_checkpoint: str | Path | None = None,
    *,
    tag_list: str | Path | Sequence[str],
    thresholds: str | Path | Sequence[float],
    arch: None | DAPEConfig | Mapping[str, Any] | str | Path = None,
    r: int = DEFAULT_RANK,
    alpha: float = DEFAULT_ALPHA,
    generator: torch.Generator | None = None,
    drop_path_rate: float | None = None,
    head_dropout: float | None = None,
) -> DAPE:
    """The DAPE-training student: RAM + unmerged trainable LoRA on the DAPE targets (spec §4.4).

    Fresh LoRA: ``lora_A`` kaiming-uniform from ``generator``, ``lora_B`` = 0. With ``dape_checkpoint`` its
    Swin/tagging-head LoRA tensors are installed unmerged instead (resume / fine-tune); the official student
    runs unmerged, so tag_encoder/text_decoder LoRA do not affect it and are ignored. Only ``lora_*`` require
    gradients. Returned in ``train()`` mode; ``drop_path_rate``/``head_dropout`` (official: 0.1 / 0.1, default
    here: the config's, i.e. 0) act only in train mode, drawing from :meth:`DAPE.set_generator`'s generator.
    """
    config = _resolve_config(arch)
    changes: dict[str, Any] = {}
    if drop_path_rate is not None:
        changes["drop_path_rate"] = drop_path_rate
    if head_dropout is not None:
        changes["head_dropout"] = head_dropout
    config = dataclasses.replace(config, **changes)
    model = DAPE.from_official(ram_checkpoint, None, tag_list=tag_list, thresholds=thresholds, arch=config)
    # from_official assigned (possibly memory-mapped, read-only-shared) tensors; training wants owned copies
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    model.enable_lora(r, alpha, generator)
    if dape_checkpoint is not None:
        path = Path(dape_checkpoint)
        pairs = _lora_pairs(_read_lora_file(path), path)
        layers = model.lora_layers()
        for name, (a, b) in pairs.items():
            if name in layers:
                try:
                    layers[name].set_lora(a, b, alpha)
                except ValueError as err:
                    raise ValueError(f"DAPE checkpoint {path}: {name}: {err}") from err
            elif not name.startswith(("tag_encoder.", "text_decoder.")):
                raise ValueError(f"DAPE checkpoint {path}: LoRA for layers this model does not have: {name}")
        missing = sorted(n for n in layers if n not in pairs)
        if missing:
            raise ValueError(f"DAPE checkpoint {path}: no LoRA for {len(missing)} layers, e.g. {missing[:3]}")
    mark_only_lora_trainable(model)
    return model.train()


def _med_lora_shapes(config: DAPEConfig) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """(layer name, lora_A shape, lora_B shape) of the official tag_encoder / text_decoder LoRA, in order."""
    h, r = config.med_hidden, DEFAULT_RANK
    out = []
    for prefix, cross_in in (
        ("tag_encoder.encoder.layer", config.embed_width),
        ("text_decoder.bert.encoder.layer", config.med_decoder_encoder_width),
    ):
        for i in range(config.med_layers):
            for kind, kin in (("attention", h), ("crossattention", cross_in)):
                for proj in ("query", "key"):
                    in_f = kin if (kind == "crossattention" and proj == "key") else h
                    out.append((f"{prefix}.{i}.{kind}.self.{proj}", (r, in_f), (h, r)))
    return out


def official_lora_state_dict(
    model: DAPE, template: str | Path | Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The model's LoRA tensors in the exact key layout and order of the official ``DAPE.pth``.

    Order: Swin qkv (by stage/block), then the tag_encoder and text_decoder LoRA keys (not built here), then the
    tagging head. The tag_encoder/text_decoder tensors are taken from ``template`` (e.g. the ``DAPE.pth`` training
    started from) when given, else written as zeros — their ``lora_B`` is zero in the official training too (no
    gradient reaches them), so the merged model is the same; note zeros are not loralib's kaiming ``lora_A``.

    Args:
        model: a student with LoRA enabled (unmerged).
        template: optional official LoRA file or dict for the tag_encoder/text_decoder entries.

    Returns:
        ``{key: float32 CPU tensor}``.

    Raises:
        ValueError: if LoRA is not enabled on every target, or the template lacks a key / has a wrong shape.
    """
    ours = lora_state_dict(model)
    layers = model.lora_layers()
    not_enabled = sorted(n for n, layer in layers.items() if not layer.lora_enabled)
    if not_enabled:
        raise ValueError(
            f"LoRA is not enabled (or already merged) on {len(not_enabled)} layers: {not_enabled[:3]}"
        )
    tmpl: Mapping[str, torch.Tensor] = {}
    if template is not None:
        tmpl = _read_lora_file(Path(template)) if isinstance(template, (str, Path)) else template
    out: dict[str, torch.Tensor] = {}
    for k, v in ours.items():
        if k.startswith("visual_encoder."):
            out[k] = v.float().cpu().clone()
    for layer, a_shape, b_shape in _med_lora_shapes(model.config):
        for suffix, shape in ((".lora_A", a_shape), (".lora_B", b_shape)):
            key = layer + suffix
            if template is None:
                out[key] = torch.zeros(shape)
                continue
            if key not in tmpl:
                raise ValueError(f"LoRA template lacks {key}")
            if tuple(tmpl[key].shape) != shape:
                raise ValueError(f"LoRA template {key} has shape {tuple(tmpl[key].shape)}, expected {shape}")
            out[key] = tmpl[key].float().cpu().clone()
    for k, v in ours.items():
        if k.startswith("tagging_head."):
            out[k] = v.float().cpu().clone()
    return out


def save_official_lora(
    path: str | Path, model: DAPE, template: str | Path | Mapping[str, torch.Tensor] | None = None
) -> None:
    """``torch.save`` :func:`official_lora_state_dict` to ``path`` (loadable by SeeSR's ``--ram_ft_path``)."""
    torch.save(official_lora_state_dict(model, template), Path(path))
