"""DAPE's configuration and run-time tagging options (paper §3.1; spec §4.1).

:class:`DAPEConfig` is the architecture (it travels with the weights); :class:`TaggingOptions` is how logits become
tags (it travels with the run); :class:`DAPEOutput` is what :class:`~seesr.models.dape.DAPE` returns. Pure data:
reading ``arch.json`` files is :func:`seesr.pipeline.dape_weights.resolve_dape_config`'s job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["DAPEConfig", "DAPEOutput", "TaggingOptions"]


@dataclass(frozen=True)
class DAPEConfig:
    """Architecture of DAPE. Defaults = the released RAM Swin-L (spec §4.1).

    ``med_*`` only describe the official ``tag_encoder``/``text_decoder`` (not built) so that
    :func:`seesr.pipeline.dape_lora.official_lora_state_dict` can write their LoRA keys.
    ``drop_path_rate``/``head_dropout`` act only in ``train()`` mode (the official student uses 0.1 / 0.1;
    inference ignores them).
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
