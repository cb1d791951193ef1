"""Low-rank adaptation as used by DAPE (spec §4.3; paper §3.1 "DAPE").

The official code uses ``loralib`` (microsoft/LoRA, 0.1.2):

* every Swin ``attn.qkv`` is a ``MergedLinear(dim, 3*dim, r=8, enable_lora=[True, False, True])``: one fused
  weight whose q and v row blocks get a rank-8 update, the k rows none;
* the tagging head's cross-attention ``query`` and ``key`` are ``lora.Linear(., ., r=8)``.

Both use ``lora_alpha = 1`` so the update is scaled by ``alpha / r = 1/8``. :class:`LoRALinear` covers both cases
with one class: the output rows are split into ``len(groups)`` equal blocks and the blocks marked ``True`` get an
update. Tensor layout and names follow loralib exactly so the official ``DAPE.pth`` keys load unchanged:

* ``lora_A``: ``(r * n_enabled, in_features)``; rows ``[i*r, (i+1)*r)`` belong to the i-th enabled block;
* ``lora_B``: ``(out_block * n_enabled, r)``; rows ``[i*out_block, (i+1)*out_block)`` belong to it;
* ``delta_W[block_i] = (B_i @ A_i) * scale``.

A layer is in one of two states:

* **plain / merged** (inference): ``lora_A``/``lora_B`` are ``None``; the forward is ``F.linear``. Deltas from a
  checkpoint are added once into ``weight`` (:func:`merge_delta_`), which is what loralib's ``eval()`` does.
* **unmerged, trainable** (DAPE stage-1 training, issue 6): :meth:`LoRALinear.enable_lora` creates the two
  parameters; the forward is ``W x + b + (x A_iᵀ B_iᵀ) * scale`` on the enabled row blocks. Nothing is added into
  ``weight``, so the frozen base stays bit-identical.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_RANK",
    "LoRALinear",
    "iter_lora_layers",
    "load_lora_state_dict",
    "lora_delta",
    "lora_parameters",
    "lora_state_dict",
    "mark_only_lora_trainable",
    "merge_delta_",
    "merge_lora_",
]

DEFAULT_RANK = 8
DEFAULT_ALPHA = 1.0


def _check_shapes(
    lora_A: torch.Tensor, lora_B: torch.Tensor, groups: Sequence[bool], out_features: int
) -> tuple[int, int]:
    """Validate loralib shapes; return ``(rank, rows per block)``."""
    n_on = sum(bool(g) for g in groups)
    if n_on == 0:
        raise ValueError(f"LoRA groups {tuple(groups)} enable no output block")
    block = out_features // len(groups)
    r = lora_A.shape[0] // n_on if lora_A.ndim == 2 else 0
    if (
        lora_A.ndim != 2
        or lora_B.ndim != 2
        or r == 0
        or r * n_on != lora_A.shape[0]
        or tuple(lora_B.shape) != (block * n_on, r)
        or block * len(groups) != out_features
    ):
        raise ValueError(
            f"LoRA shapes lora_A {tuple(lora_A.shape)} / lora_B {tuple(lora_B.shape)} do not fit a layer with "
            f"{out_features} outputs and groups {tuple(groups)} (expected lora_A (r*{n_on}, in), "
            f"lora_B ({block * n_on}, r))"
        )
    return r, block


def _delta_blocks(
    lora_A: torch.Tensor, lora_B: torch.Tensor, groups: Sequence[bool], out_features: int, scale: float
) -> list[tuple[slice, torch.Tensor]]:
    """``[(row slice of the base weight, (B_i @ A_i) * scale)]`` for the enabled blocks."""
    r, block = _check_shapes(lora_A, lora_B, groups, out_features)
    out = []
    i = 0
    for g, on in enumerate(groups):
        if on:
            # loralib computes (B @ A) first and scales afterwards; keep that order for bitwise-close merges
            d = (lora_B[i * block : (i + 1) * block] @ lora_A[i * r : (i + 1) * r]) * scale
            out.append((slice(g * block, (g + 1) * block), d))
            i += 1
    return out


def lora_delta(
    lora_A: torch.Tensor, lora_B: torch.Tensor, groups: Sequence[bool], out_features: int, scale: float
) -> torch.Tensor:
    """Full-size weight update of one LoRA layer.

    Args:
        lora_A: ``(r * n_enabled, in_features)``.
        lora_B: ``(out_features // len(groups) * n_enabled, r)``.
        groups: which equal output-row blocks get an update, e.g. ``(True, False, True)`` for q/k/v.
        out_features: rows of the base weight.
        scale: ``alpha / r``.

    Returns:
        ``(out_features, in_features)`` tensor, zero on disabled blocks, in ``lora_A``'s dtype.

    Raises:
        ValueError: if the shapes do not fit ``groups``/``out_features``.
    """
    blocks = _delta_blocks(lora_A, lora_B, groups, out_features, scale)
    parts = []
    for on in groups:
        if on:
            parts.append(blocks.pop(0)[1])
        else:
            parts.append(lora_A.new_zeros(out_features // len(groups), lora_A.shape[1]))
    return torch.cat(parts, dim=0)


def merge_delta_(
    weight: torch.Tensor,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    groups: Sequence[bool] = (True,),
    scale: float = DEFAULT_ALPHA / DEFAULT_RANK,
) -> torch.Tensor:
    """Add a LoRA update into ``weight`` in place (loralib's merge on ``eval()``) and return it.

    Only the enabled row blocks are touched (no full-size temporary).

    Args:
        weight: ``(out, in)`` base weight, modified in place.
        lora_A: see :func:`lora_delta`.
        lora_B: see :func:`lora_delta`.
        groups: enabled output blocks.
        scale: ``alpha / r``.

    Raises:
        ValueError: if the shapes do not fit.
    """
    if lora_A.ndim == 2 and lora_A.shape[1] != weight.shape[1]:
        raise ValueError(f"lora_A {tuple(lora_A.shape)} does not fit a weight of shape {tuple(weight.shape)}")
    a, b = lora_A.to(weight.dtype), lora_B.to(weight.dtype)
    with torch.no_grad():
        for rows, d in _delta_blocks(a, b, groups, weight.shape[0], scale):
            weight[rows].add_(d.to(weight.device))
    return weight


class LoRALinear(nn.Linear):
    """``nn.Linear`` with an optional unmerged LoRA update on selected output-row blocks.

    State-dict keys are those of the official layers: ``weight``, ``bias`` and, when LoRA is enabled,
    ``lora_A`` / ``lora_B``.

    Args:
        in_features: input width.
        out_features: output width (a multiple of ``len(groups)``).
        bias: whether the layer has a bias.
        groups: output-row blocks that receive a LoRA update; ``(True,)`` = plain ``lora.Linear``,
            ``(True, False, True)`` = the q/v update of a fused qkv (``lora.MergedLinear``).
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, groups: Sequence[bool] = (True,)
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if out_features % len(groups) != 0 or not any(groups):
            raise ValueError(f"out_features={out_features} cannot be split into LoRA groups {tuple(groups)}")
        self.groups = tuple(bool(g) for g in groups)
        self.r = 0
        self.scale = 0.0
        self.lora_A: nn.Parameter | None
        self.lora_B: nn.Parameter | None
        self.register_parameter("lora_A", None)
        self.register_parameter("lora_B", None)

    @property
    def lora_enabled(self) -> bool:
        """True when the layer holds unmerged ``lora_A``/``lora_B`` parameters."""
        return self.lora_A is not None

    def enable_lora(
        self, r: int = DEFAULT_RANK, alpha: float = DEFAULT_ALPHA, generator: torch.Generator | None = None
    ) -> None:
        """Create trainable, unmerged LoRA parameters initialised like loralib.

        ``lora_A`` ~ kaiming-uniform(a=√5) = U(-1/√in, 1/√in) drawn from ``generator``; ``lora_B`` = 0, so the
        layer's output is unchanged until training moves ``lora_B``.
        """
        if r <= 0:
            raise ValueError(f"LoRA rank must be positive, got {r}")
        n_on = sum(self.groups)
        block = self.out_features // len(self.groups)
        dev, dt = self.weight.device, self.weight.dtype
        a = torch.empty(r * n_on, self.in_features, device=dev, dtype=dt)
        if a.device.type != "meta":
            bound = 1.0 / math.sqrt(self.in_features)
            with torch.no_grad():
                a.uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(block * n_on, r, device=dev, dtype=dt))
        self.r = r
        self.scale = alpha / r

    def set_lora(self, lora_A: torch.Tensor, lora_B: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> None:
        """Install given LoRA tensors (copied) as unmerged trainable parameters; the rank is read from lora_B."""
        r = int(lora_B.shape[1])
        _check_shapes(lora_A, lora_B, self.groups, self.out_features)
        if lora_A.shape[1] != self.in_features:
            raise ValueError(
                f"lora_A {tuple(lora_A.shape)} does not fit in_features={self.in_features} of this layer"
            )
        dev, dt = self.weight.device, self.weight.dtype
        self.lora_A = nn.Parameter(lora_A.detach().to(dev, dt).clone())
        self.lora_B = nn.Parameter(lora_B.detach().to(dev, dt).clone())
        self.r = r
        self.scale = alpha / r

    def delta_weight(self) -> torch.Tensor:
        """Current full-size update ``(out, in)`` (zeros when LoRA is not enabled)."""
        if self.lora_A is None or self.lora_B is None:
            return torch.zeros_like(self.weight)
        return lora_delta(self.lora_A, self.lora_B, self.groups, self.out_features, self.scale)

    def merge_lora_(self) -> None:
        """Fold the LoRA update into ``weight`` and drop the LoRA parameters (back to a plain layer)."""
        if self.lora_A is None:
            return
        with torch.no_grad():
            self.weight.add_(self.delta_weight().detach())
        self.lora_A = None
        self.lora_B = None
        self.r = 0
        self.scale = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.lora_A is None or self.lora_B is None:
            return out
        # low-rank path: x Aᵀ (r*n_on wide), then each enabled block's B; disabled blocks get zeros
        xa = F.linear(x, self.lora_A)
        block = self.out_features // len(self.groups)
        parts: list[torch.Tensor] = []
        i = 0
        for on in self.groups:
            if on:
                a_part = xa[..., i * self.r : (i + 1) * self.r]
                parts.append(F.linear(a_part, self.lora_B[i * block : (i + 1) * block]))
                i += 1
            else:
                parts.append(out.new_zeros(*out.shape[:-1], block))
        return out + torch.cat(parts, dim=-1) * self.scale

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.groups != (True,):
            s += f", lora_groups={self.groups}"
        if self.lora_A is not None:
            s += f", lora_r={self.r}, lora_scale={self.scale:g}"
        return s


def iter_lora_layers(module: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """Yield ``(qualified_name, layer)`` for every :class:`LoRALinear` in ``module`` (registration order)."""
    for name, sub in module.named_modules():
        if isinstance(sub, LoRALinear):
            yield name, sub


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """All enabled ``lora_A``/``lora_B`` parameters of ``module`` (for the optimiser)."""
    params: list[nn.Parameter] = []
    for _, layer in iter_lora_layers(module):
        if layer.lora_A is not None and layer.lora_B is not None:
            params += [layer.lora_A, layer.lora_B]
    return params


def mark_only_lora_trainable(module: nn.Module) -> None:
    """``requires_grad`` only on LoRA tensors (loralib ``mark_only_lora_as_trainable``, bias='none')."""
    for p in module.parameters():
        p.requires_grad_(False)
    for p in lora_parameters(module):
        p.requires_grad_(True)


def lora_state_dict(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """``{prefix + name + '.lora_A' | '.lora_B': tensor}`` of all enabled LoRA layers (detached, same device)."""
    out: dict[str, torch.Tensor] = {}
    for name, layer in iter_lora_layers(module):
        if layer.lora_A is not None and layer.lora_B is not None:
            base = f"{prefix}{name}." if name else prefix
            out[f"{base}lora_A"] = layer.lora_A.detach()
            out[f"{base}lora_B"] = layer.lora_B.detach()
    return out


def load_lora_state_dict(
    module: nn.Module, state: Mapping[str, torch.Tensor], alpha: float = DEFAULT_ALPHA
) -> list[str]:
    """Install LoRA tensors by layer name as unmerged parameters.

    Args:
        module: model holding :class:`LoRALinear` layers.
        state: ``{layer_name + '.lora_A' | '.lora_B': tensor}``; keys for layers not in ``module`` are returned.
        alpha: LoRA alpha (scale = alpha / r).

    Returns:
        The keys of ``state`` that matched no layer of ``module`` (sorted).

    Raises:
        ValueError: if a layer gets only one of its two tensors or a shape does not fit.
    """
    layers = dict(iter_lora_layers(module))
    used: set[str] = set()
    for name, layer in layers.items():
        ka, kb = f"{name}.lora_A", f"{name}.lora_B"
        if ka in state or kb in state:
            if ka not in state or kb not in state:
                raise ValueError(f"LoRA state for {name!r} needs both {ka!r} and {kb!r}")
            layer.set_lora(state[ka], state[kb], alpha=alpha)
            used |= {ka, kb}
    return sorted(set(state) - used)


def merge_lora_(module: nn.Module) -> None:
    """Fold every enabled LoRA layer of ``module`` into its weight (in place)."""
    for _, layer in iter_lora_layers(module):
        layer.merge_lora_()
