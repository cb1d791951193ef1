"""Swin Transformer image encoder of RAM / DAPE (spec §4.1; Liu et al. 2021, "Swin Transformer").

Our own implementation (DESIGN.md §8: no timm) of the Swin v1 encoder that RAM's Swin-L uses: 4×4 patch
embedding + LayerNorm, four stages of (shifted-)window attention blocks with a relative position bias, patch
merging between stages, a final LayerNorm. The output is the RAM convention ``cat(mean token, tokens)``:
``(B, 1 + (H/32)·(W/32), C_last)`` = ``(B, 145, 1536)`` for Swin-L at 384².

Module and parameter names equal the official ones (``patch_embed.proj``, ``layers.{s}.blocks.{b}.attn.qkv``,
``...attn.relative_position_bias_table``, ``layers.{s}.downsample.reduction``, ``norm`` …) so checkpoints load by
name. ``relative_position_index`` and the shifted-window ``attn_mask`` are derived buffers: not persistent,
rebuilt by :meth:`SwinEncoder.init_buffers` (e.g. after building on the meta device).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seesr.models.lora import LoRALinear


@functools.lru_cache(maxsize=8)
def relative_position_index(window: int) -> torch.Tensor:
    """``(window², window²)`` int64 index into the ``(2·window−1)²`` relative-bias table (Swin v1 layout).

    Cached: callers must not modify the returned CPU tensor in place.
    """
    # explicit CPU: these run inside `torch.device("meta")` construction too, where meta kernels of meshgrid &
    # co. would pull in torch's symbolic-shape machinery (seconds of import time)
    ar = torch.arange(window, device="cpu")
    coords = torch.stack(torch.meshgrid(ar, ar, indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


@functools.lru_cache(maxsize=16)
def shifted_window_mask(resolution: int, window: int, shift: int) -> torch.Tensor:
    """``(nW, window², window²)`` additive mask (0 / −100) that keeps cyclically shifted windows apart.

    This is the standard shifted-window attention mask of Swin Transformer (Liu et al., ICCV 2021, §3.2
    "efficient batch computation for shifted configuration"): after the feature map is rolled by ``shift``,
    windows on the bottom/right border hold pixels from up to four regions that were not neighbours before the
    roll. Labelling the map in 3×3 regions (split at ``-window`` and ``-shift`` along each axis) and forbidding
    attention between tokens of different labels restricts each token to its true neighbours.

    Cached: callers must not modify the returned CPU tensor in place.
    """
    img = torch.zeros(resolution, resolution, device="cpu")
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for hs in bounds:
        for ws in bounds:
            img[hs, ws] = region
            region += 1
    n = resolution // window
    win = img.view(n, window, n, window).permute(0, 2, 1, 3).reshape(n * n, window * window)
    diff = win[:, None, :] - win[:, :, None]
    # -100 (not -inf), as in the reference implementation
    return torch.where(diff != 0, torch.tensor(-100.0, device="cpu"), torch.tensor(0.0, device="cpu"))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``window×window`` windows with a learned relative position bias.

    ``qkv`` is a :class:`LoRALinear` whose q and v row blocks can carry the DAPE LoRA update.
    """

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.window, self.num_heads = window, num_heads
        self.qkv = LoRALinear(dim, 3 * dim, bias=True, groups=(True, False, True))
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.relative_position_index: torch.Tensor
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: ``(B, nW, N, C)`` window tokens; mask: ``(nW, N, N)`` or None. Returns ``(B, nW, N, C)``."""
        b, nw, n, c = x.shape
        qkv = self.qkv(x).view(b, nw, n, 3, self.num_heads, c // self.num_heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # (B, nW, heads, N, hd)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:
            bias = bias.unsqueeze(0) + mask.unsqueeze(1).to(bias.dtype)  # (nW, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


class Mlp(nn.Module):
    """Linear → GELU (erf) → Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention + MLP block with optional stochastic depth (training only)."""

    def __init__(
        self,
        dim: int,
        resolution: int,
        num_heads: int,
        window: int,
        shift: int,
        mlp_ratio: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        if resolution <= window:  # one window covers the map: no partition, no shift (Swin rule)
            window, shift = resolution, 0
        self.resolution, self.window, self.shift, self.drop_path = resolution, window, shift, drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.attn_mask: torch.Tensor | None
        self.register_buffer("attn_mask", self._mask(), persistent=False)
        self.generator: torch.Generator | None = None

    def _mask(self) -> torch.Tensor | None:
        return shifted_window_mask(self.resolution, self.window, self.shift) if self.shift > 0 else None

    def _drop_path(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_path <= 0.0:
            return x
        keep = 1.0 - self.drop_path
        dev = self.generator.device if self.generator is not None else x.device
        coin = torch.rand((x.shape[0], 1, 1), generator=self.generator, device=dev).to(x.device)
        return x * (coin < keep).to(x.dtype) / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, R·R, C)`` tokens. Returns the same shape."""
        b, length, c = x.shape
        r, w, s = self.resolution, self.window, self.shift
        h = self.norm1(x).view(b, r, r, c)
        if s:
            h = torch.roll(h, shifts=(-s, -s), dims=(1, 2))
        n = r // w
        h = h.view(b, n, w, n, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, n * n, w * w, c)
        h = self.attn(h, self.attn_mask)
        h = h.view(b, n, n, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, r, r, c)
        if s:
            h = torch.roll(h, shifts=(s, s), dims=(1, 2))
        x = x + self._drop_path(h.reshape(b, length, c))
        return x + self._drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2×2 neighbourhood concat (order (0,0), (1,0), (0,1), (1,1)) → LayerNorm(4C) → Linear(4C→2C, no bias)."""

    def __init__(self, dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        r = self.resolution
        x = x.view(b, r, r, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, blocks: list[SwinBlock], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinEncoder(nn.Module):
    """RAM's Swin encoder (ape off, patch norm on, qkv bias, mlp ratio 4).

    Args:
        image_size: square input side (384).
        patch_size: patch side (4).
        embed_dim: stage-1 width (Swin-L: 192); stage s has ``embed_dim · 2^s`` channels.
        depths: blocks per stage (Swin-L: 2, 2, 18, 2).
        num_heads: heads per stage (Swin-L: 6, 12, 24, 48).
        window_size: attention window (12).
        mlp_ratio: MLP hidden / width (4).
        drop_path_rate: stochastic-depth rate of the last block (linear from 0); only active in ``train()``.
    """

    def __init__(
        self,
        image_size: int = 384,
        patch_size: int = 4,
        embed_dim: int = 192,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (6, 12, 24, 48),
        window_size: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        self.image_size = image_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        res = image_size // patch_size
        self.layers = nn.ModuleList()
        k = 0
        for s, (depth, heads) in enumerate(zip(depths, num_heads)):
            dim = embed_dim * 2**s
            blocks = [
                SwinBlock(
                    dim,
                    res,
                    heads,
                    window_size,
                    0 if i % 2 == 0 else window_size // 2,
                    mlp_ratio,
                    rates[k + i],
                )
                for i in range(depth)
            ]
            k += depth
            last = s == len(depths) - 1
            self.layers.append(SwinStage(blocks, None if last else PatchMerging(dim, res)))
            if not last:
                res //= 2
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)

    def init_buffers(self) -> None:
        """(Re)build the derived buffers on the device of the parameters (after meta-device construction)."""
        device = self.norm.weight.device
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.relative_position_index = relative_position_index(m.window).to(device)
            elif isinstance(m, SwinBlock):
                mask = m._mask()
                m.attn_mask = None if mask is None else mask.to(device)

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Generator for the stochastic-depth draws in training mode."""
        for m in self.modules():
            if isinstance(m, SwinBlock):
                m.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, 3, S, S)`` normalised image. Returns ``(B, 1 + (S/32)², num_features)`` (mean token first)."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"Swin input must be {self.image_size}x{self.image_size}, got {tuple(x.shape)}")
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        x = self.norm(x)
        return torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
