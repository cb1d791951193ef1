"""The VAE encoder/decoder forward as a flat list of operations, and GroupNorm with shared statistics.

The tiled VAE (``vae_tiling``) runs tiles through this list: every GroupNorm is a barrier where the tiles'
statistics are combined (``group_var_mean`` per tile, ``shared_stats`` over tiles, ``apply_group_norm``); the
bounded executors (``vae_bounded``) replay it with statistics fixed in advance. Built from the diffusers
``Encoder`` / ``Decoder`` modules; the mid-block attention runs per tile (``self_attention``), as officially.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: GroupNorm epsilon of the SD VAEs (the shared statistics are normalised with it)
GN_EPS = 1e-6


@dataclass(frozen=True)
class Op:
    """One step of the flattened forward.

    kind: "apply" (x = fn(x)), "norm" (GroupNorm barrier, module = the nn.GroupNorm), "store" (residual =
    fn(x)), "add" (x = (x + residual) / factor), "attn" (per-tile self-attention, module = the Attention).
    """

    kind: str
    fn: Callable[[Tensor], Tensor] | None = None
    module: Any = None
    factor: float = 1.0


def _identity(x: Tensor) -> Tensor:
    return x


# The helpers below take the diffusers VAE blocks as ``Any``: their submodules are reached by attribute name,
# which torch types as ``Tensor | Module`` (diffusers itself is untyped here), so no precise type exists.


def _resnet_ops(block: Any) -> list[Op]:
    if getattr(block, "upsample", None) is not None or getattr(block, "downsample", None) is not None:
        raise ValueError(f"tiled VAE: resampling ResNet blocks are not supported ({type(block).__name__})")
    if getattr(block, "time_embedding_norm", "default") not in ("default", "group"):
        raise ValueError(
            f"tiled VAE: unsupported ResNet norm {block.time_embedding_norm!r}; expected GroupNorm"
        )
    shortcut = block.conv_shortcut if block.conv_shortcut is not None else _identity
    act = block.nonlinearity
    return [
        Op("store", fn=shortcut),
        Op("norm", module=_as_group_norm(block.norm1)),
        Op("apply", fn=act),
        Op("apply", fn=block.conv1),
        Op("norm", module=_as_group_norm(block.norm2)),
        Op("apply", fn=act),
        Op("apply", fn=block.dropout),
        Op("apply", fn=block.conv2),
        Op("add", factor=float(block.output_scale_factor)),
    ]


def _attention_ops(attn: Any) -> list[Op]:
    if getattr(attn, "spatial_norm", None) is not None or attn.group_norm is None:
        raise ValueError("tiled VAE: the mid-block attention must use a plain GroupNorm (no spatial norm)")
    ops = [Op("norm", module=_as_group_norm(attn.group_norm)), Op("attn", module=attn)]
    if attn.residual_connection:
        ops = [Op("store", fn=_identity), *ops, Op("add", factor=float(attn.rescale_output_factor))]
    elif attn.rescale_output_factor != 1.0:
        factor = float(attn.rescale_output_factor)
        ops.append(Op("apply", fn=lambda x: x / factor))
    return ops


def _mid_ops(mid: Any) -> list[Op]:
    ops = _resnet_ops(mid.resnets[0])
    for attn, resnet in zip(mid.attentions, mid.resnets[1:], strict=True):
        if attn is not None:
            ops += _attention_ops(attn)
        ops += _resnet_ops(resnet)
    return ops


def _as_group_norm(module: nn.Module) -> nn.GroupNorm:
    if not isinstance(module, nn.GroupNorm):
        raise ValueError(f"tiled VAE: expected nn.GroupNorm, got {type(module).__name__}")
    return module


def _tail_ops(net: Any) -> list[Op]:
    return [
        Op("norm", module=_as_group_norm(net.conv_norm_out)),
        Op("apply", fn=net.conv_act),
        Op("apply", fn=net.conv_out),
    ]


def encoder_ops(encoder: nn.Module) -> list[Op]:
    """Flatten a diffusers ``Encoder`` forward: conv_in, down blocks, mid block, norm_out, act, conv_out."""
    enc: Any = encoder  # see the note above _resnet_ops
    ops = [Op("apply", fn=enc.conv_in)]
    for block in enc.down_blocks:
        for resnet in block.resnets:
            ops += _resnet_ops(resnet)
        for down in block.downsamplers or []:
            ops.append(Op("apply", fn=down))
    ops += _mid_ops(enc.mid_block)
    return ops + _tail_ops(enc)


def decoder_ops(decoder: nn.Module) -> list[Op]:
    """Flatten a diffusers ``Decoder`` forward: conv_in, mid block, up blocks, norm_out, act, conv_out."""
    dec: Any = decoder  # see the note above _resnet_ops
    ops = [Op("apply", fn=dec.conv_in)]
    ops += _mid_ops(dec.mid_block)
    # Some diffusers versions run the up blocks in their own dtype (``upscale_dtype``); follow the parameters.
    up_dtype: torch.dtype = next(iter(dec.up_blocks.parameters())).dtype
    ops.append(Op("apply", fn=lambda x: x.to(up_dtype)))
    for block in dec.up_blocks:
        for resnet in block.resnets:
            ops += _resnet_ops(resnet)
        for up in block.upsamplers or []:
            ops.append(Op("apply", fn=up))
    return ops + _tail_ops(dec)


def sampling_factor(blocks: nn.ModuleList, attr: str) -> int:
    """Spatial factor of a VAE half: 2 per down/up-sampler (8 for the SD VAEs)."""
    return 2 ** sum(len(getattr(block, attr, None) or []) for block in blocks)


def self_attention(attn: Any, x: Tensor) -> Tensor:
    """Single-tile self-attention of a diffusers ``Attention`` on an already group-normalised (B, C, H, W)."""
    b, c, h, w = x.shape
    tokens = x.reshape(b, c, h * w).transpose(1, 2)
    q, k, v = attn.to_q(tokens), attn.to_k(tokens), attn.to_v(tokens)
    heads = attn.heads
    q, k, v = (t.reshape(b, h * w, heads, -1).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    out = out.transpose(1, 2).reshape(b, h * w, -1).to(q.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    return out.transpose(1, 2).reshape(b, c, h, w)


# --------------------------------------------------------------------------------------------------------------
# GroupNorm with shared statistics


def group_var_mean(x: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """Biased per-(batch, group) variance and mean, in >= float32 (fp16 variances overflow on large images)."""
    b = x.shape[0]
    flat = x.reshape(b, groups, -1).to(torch.promote_types(x.dtype, torch.float32))
    var, mean = torch.var_mean(flat, dim=2, unbiased=False)
    return var, mean


def shared_stats(stats: Sequence[tuple[Tensor, Tensor, int]]) -> tuple[Tensor, Tensor]:
    """Pixel-count-weighted average of per-tile (var, mean), weights normalised like the official code."""
    pixels = torch.tensor([p for _, _, p in stats], dtype=torch.float32, device=stats[0][0].device)
    pixels = pixels / pixels.max()
    pixels = (pixels / pixels.sum()).reshape(-1, 1, 1)
    var = (torch.stack([s[0] for s in stats]) * pixels).sum(dim=0)
    mean = (torch.stack([s[1] for s in stats]) * pixels).sum(dim=0)
    return var, mean


def apply_group_norm(x: Tensor, norm: nn.GroupNorm, var: Tensor, mean: Tensor) -> Tensor:
    b, c = x.shape[:2]
    groups = norm.num_groups
    work = x.reshape(b, groups, -1).to(var.dtype)
    out = (work - mean[..., None]) * torch.rsqrt(var[..., None] + GN_EPS)
    out = out.reshape(x.shape)
    if norm.weight is not None:
        out = out * norm.weight.to(out.dtype).reshape(1, c, 1, 1)
    if norm.bias is not None:
        out = out + norm.bias.to(out.dtype).reshape(1, c, 1, 1)
    return out.to(x.dtype)


def new_result(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, *, finished: bool) -> Tensor:
    """The tiled VAE's output, filled tile by tile (zeros until then). A ``finish``-ed output (the image's uint8
    codes) is laid out as one (H, W, C) array: what the colour fix overwrites in place
    (``postprocess.finish_image(overwrite=True)``) and the image writer reads without a copy."""
    layout = torch.channels_last if finished and len(shape) == 4 else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device=device, memory_format=layout).zero_()
