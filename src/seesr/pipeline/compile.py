"""Opt-in fast kernels: ``torch.compile`` of the denoiser (whole or regional) and channels_last.

Nothing here is on by default: on the CPU neither helps measurably (docs/benchmarks.md), and compiling costs
minutes on the first call. Regional compilation compiles each repeated block (every ResNet block and every text
transformer; the RCA module runs inside the text transformer's forward hook, so it is compiled with it) instead of
the whole UNet, which compiles faster because the same block code is reused across layers.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel


def compile_models(
    pipe: Any, *, regional: bool = True, backend: str = "inductor", mode: str | None = None
) -> int:
    """Compile ``pipe.unet`` and ``pipe.controlnet`` in place (``nn.Module.compile``; state dicts unchanged).

    Args:
        pipe: a :class:`~seesr.pipeline.pipeline.SeeSRPipeline` (anything with ``.unet`` and ``.controlnet``).
        regional: compile every ResNet block and text transformer (+ its RCA hook) separately; otherwise the
            two whole models.
        backend: ``torch.compile`` backend ("inductor"; "eager"/"aot_eager" for checks).
        mode: ``torch.compile`` mode (e.g. "max-autotune"), or None.

    Returns:
        The number of modules compiled.
    """
    if regional:
        # one ResNet/transformer code object serves every layer width: dynamo needs one graph per shape set
        # (process-wide dynamo setting; raised, never lowered)
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), 64))
    count = 0
    for model in (pipe.unet, pipe.controlnet):
        if not regional:
            model.compile(backend=backend, mode=mode)
            count += 1
            continue
        for module in model.modules():
            # image attentions run inside their text transformer's hook: compile only the text ones
            if isinstance(module, ResnetBlock2D) or (
                isinstance(module, Transformer2DModel) and not _is_image_attention(model, module)
            ):
                module.compile(backend=backend, mode=mode)
                count += 1
    return count


def _is_image_attention(model: torch.nn.Module, module: torch.nn.Module) -> bool:
    return any(module is m for block in model.modules() for m in getattr(block, "image_attentions", []))


def set_channels_last(pipe: Any, enabled: bool = True) -> None:
    """Put the UNet, ControlNet and VAE weights in channels_last (``enabled``) or contiguous memory format."""
    fmt = torch.channels_last if enabled else torch.contiguous_format
    for model in (pipe.unet, pipe.controlnet, pipe.vae):
        model.to(memory_format=fmt)


def describe_kernels(pipe: Any) -> dict[str, Any]:
    """What :func:`compile_models` and :func:`set_channels_last` did to ``pipe``, read from the models themselves
    (for the sidecar): ``{"compiled_modules": int, "channels_last": bool}``."""
    compiled = sum(
        getattr(m, "_compiled_call_impl", None) is not None
        for model in (pipe.unet, pipe.controlnet)
        for m in model.modules()
    )
    weight = pipe.unet.conv_in.weight  # (C, 4, 3, 3): the two formats differ in strides
    channels_last = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    return {"compiled_modules": int(compiled), "channels_last": bool(channels_last)}
