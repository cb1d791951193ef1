"""RAM's tagging head (Query2Label): label queries cross-attend to the image tokens (spec §4.1).

BERT layers without embeddings and without self-attention (RAM's ``mode='tagging'``); module names equal the
official state-dict keys (``tagging_head.encoder.layer.N.crossattention.self.query`` ...). The cross-attention
``query``/``key`` are :class:`~seesr.models.lora.LoRALinear` so DAPE's LoRA can sit on them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seesr.models.dape.config import DAPEConfig
from seesr.models.lora import LoRALinear

__all__ = ["TaggingHead"]


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
