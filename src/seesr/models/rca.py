"""RCA: the representation cross-attention modules of SeeSR (paper §3.3, spec §2.3).

SeeSR places one "image attention" after every text cross-attention of the UNet and the ControlNet. Each is a full
diffusers ``Transformer2DModel`` built exactly like the text transformer of the same layer, except that its
keys/values come from the 512-d DAPE soft prompt (``image_encoder_hidden_states``, (B, 145, 512)).

We add them by composition instead of forking diffusers: every cross-attention block gets an ``image_attentions``
``ModuleList`` (so state-dict keys equal the official ones, spec §2.5) and a forward hook on each text transformer
applies the matching RCA module to its output. The soft prompt reaches the hooks through an :class:`RCAContext`
bound for the duration of one model forward. The context is thread-local, so two threads may run forwards of the
same model with different soft prompts; ``torch.compile`` traces the hooks and the context without graph breaks
(tests/test_rca_context.py). Like the official blocks, each RCA module receives the ``cross_attention_kwargs`` of
the text transformer it follows.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

import torch
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

IMAGE_CROSS_ATTENTION_DIM = 512
"""Width of the DAPE soft-prompt tokens; hard-coded in the official blocks, not stored in model configs."""


class RCAContext(threading.local):
    """Holds the soft prompt while one UNet/ControlNet forward runs, separately in every thread.

    ``embeds`` is ``None`` outside a forward. ``bypass`` skips every RCA module (the paper's "hard prompt only"
    ablation). Being a ``threading.local``, each thread sees only what it bound itself.
    """

    def __init__(self) -> None:
        self.embeds: torch.Tensor | None = None
        self.bypass = False
        self.active = False

    @contextlib.contextmanager
    def bind(self, embeds: torch.Tensor | None, *, bypass: bool = False) -> Iterator[None]:
        """Make ``embeds`` ((B, N, 512), any float dtype) visible to the RCA hooks inside the ``with`` block."""
        if embeds is None and not bypass:
            raise ValueError(
                "image_encoder_hidden_states is required by a model with RCA (use_image_cross_attention=True): "
                "pass the DAPE soft prompt of shape (B, 145, 512), or bypass_rca=True for the hard-prompt-only ablation"
            )
        if embeds is not None and (embeds.ndim != 3 or embeds.shape[-1] != IMAGE_CROSS_ATTENTION_DIM):
            raise ValueError(
                f"image_encoder_hidden_states must have shape (B, N, {IMAGE_CROSS_ATTENTION_DIM}), "
                f"got {tuple(embeds.shape)}"
            )
        saved = (self.embeds, self.bypass, self.active)  # nested binds (a model calling itself) restore
        self.embeds, self.bypass, self.active = embeds, bypass, True
        try:
            yield
        finally:
            self.embeds, self.bypass, self.active = saved

    def __deepcopy__(self, memo: dict[int, Any]) -> RCAContext:
        # a thread-local cannot be copied or pickled; a copied model gets its own fresh (unbound) context
        return type(self)()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), ())


def cross_attention_blocks(model: Any) -> list[Any]:
    """Blocks of a UNet/ControlNet that hold text cross-attention transformers (``.attentions``), in forward order."""
    blocks: list[Any] = list(model.down_blocks)
    if getattr(model, "mid_block", None) is not None:
        blocks.append(model.mid_block)
    blocks.extend(getattr(model, "up_blocks", []))
    return [b for b in blocks if getattr(b, "attentions", None) is not None and len(b.attentions) > 0]


def build_rca_like(text_attention: Transformer2DModel) -> Transformer2DModel:
    """A fresh RCA module configured like ``text_attention`` but attending to 512-d soft-prompt tokens."""
    # Not ``from_config``: diffusers marks positionally passed init args as "defaults" in the saved config and
    # from_config would then drop them (heads, head dim), so pass every public config value explicitly.
    kwargs = {k: v for k, v in text_attention.config.items() if not k.startswith("_")}
    kwargs["cross_attention_dim"] = IMAGE_CROSS_ATTENTION_DIM
    return Transformer2DModel(**kwargs)


def attach_rca(model: Any, context: RCAContext) -> int:
    """Give every cross-attention block of ``model`` its ``image_attentions`` and hook them after the text attention.

    Returns:
        The number of RCA modules added (SD-2 UNet: 16, ControlNet: 7).
    """
    count = 0
    for block in cross_attention_blocks(model):
        rca = nn.ModuleList([build_rca_like(attn) for attn in block.attentions])
        block.image_attentions = rca
        for text_attn, image_attn in zip(block.attentions, rca):
            # functools.partial (not a closure) so that copy.deepcopy of the model re-targets the hook correctly
            text_attn.register_forward_hook(
                functools.partial(_apply_rca, image_attn, context), with_kwargs=True
            )
        count += len(rca)
    return count


def _apply_rca(
    image_attn: Transformer2DModel,
    context: RCAContext,
    _module: nn.Module,
    _args: Any,
    kwargs: dict[str, Any],
    output: Any,
):
    if not context.active:
        raise RuntimeError(
            "an RCA-equipped block was called outside its model's forward; call the UNet/ControlNet itself"
        )
    if context.bypass:
        return output
    hidden = output[0] if isinstance(output, tuple) else output.sample
    embeds = context.embeds.to(dtype=hidden.dtype)  # type: ignore[union-attr]
    hidden = image_attn(
        hidden,
        encoder_hidden_states=embeds,
        cross_attention_kwargs=kwargs.get("cross_attention_kwargs"),
        return_dict=False,
    )[0]
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    output.sample = hidden
    return output
