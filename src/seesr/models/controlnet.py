"""SeeSRControlNet: the SD-2 ControlNet with RCA modules (paper §3.3, spec §2.4).

The ControlNet reads the LR image (bicubic-upscaled, in [0, 1]) through the stock conditioning embedding and, like
the UNet, has an RCA module after each text cross-attention of its down and mid blocks. Keys and config equal the
official release (``use_image_cross_attention`` in ``config.json``).

The conditioning embedding depends only on the condition image, which is the same at every denoising step; the
pipeline computes it once per tile with :meth:`SeeSRControlNet.embed_condition` and hands it to ``forward`` as
``cond_embedding`` (the embedding module then returns it instead of recomputing it).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

from seesr.models.loading import StrictLoadingMixin, extend_init_signature
from seesr.models.rca import RCAContext, attach_rca


class _PrecomputedEmbedding(threading.local):
    """Per-thread slot for a precomputed conditioning embedding, set for the duration of one forward."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    @contextlib.contextmanager
    def bind(self, value: torch.Tensor | None) -> Iterator[None]:
        saved, self.value = self.value, value
        try:
            yield
        finally:
            self.value = saved

    def __deepcopy__(self, memo: dict[int, Any]) -> _PrecomputedEmbedding:
        return type(self)()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), ())


class CachableConditioningEmbedding(ControlNetConditioningEmbedding):
    """The stock conditioning embedding (same parameters and keys) that can return a precomputed output."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.precomputed = _PrecomputedEmbedding()

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        value = self.precomputed.value
        return super().forward(conditioning) if value is None else value


class SeeSRControlNet(StrictLoadingMixin, ControlNetModel):
    """ControlNetModel + RCA. Config: every ``ControlNetModel`` key plus ``use_image_cross_attention``."""

    def __init__(self, *args: Any, use_image_cross_attention: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_to_config(use_image_cross_attention=use_image_cross_attention)
        self.controlnet_cond_embedding = CachableConditioningEmbedding(
            conditioning_embedding_channels=self.config.block_out_channels[0],
            block_out_channels=self.config.conditioning_embedding_out_channels,
            conditioning_channels=self.config.conditioning_channels,
        )
        self._rca_context = RCAContext()
        self.num_rca_modules = attach_rca(self, self._rca_context) if use_image_cross_attention else 0

    extend_init_signature(__init__, ControlNetModel.__init__, use_image_cross_attention=False)

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        controlnet_cond: torch.Tensor,
        *args: Any,
        image_encoder_hidden_states: torch.Tensor | None = None,
        bypass_rca: bool = False,
        cond_embedding: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """diffusers ControlNet forward plus the soft prompt and an optional precomputed condition embedding.

        Args:
            sample: (B, 4, h, w) noisy latents.
            timestep: scalar or (B,) timesteps.
            encoder_hidden_states: (B, 77, text_dim) text embeddings.
            controlnet_cond: (B, 3, 8h, 8w) LR condition image in [0, 1], pixel space.
            image_encoder_hidden_states: (B, 145, 512) DAPE soft prompt (required with RCA unless ``bypass_rca``).
            bypass_rca: skip every RCA module.
            cond_embedding: ``embed_condition(controlnet_cond)`` computed earlier, (B, C0, h, w) with C0 =
                ``block_out_channels[0]``; then ``controlnet_cond`` itself is not embedded again.
            *args, **kwargs: remaining ``ControlNetModel.forward`` arguments (``conditioning_scale``, ...).

        Returns:
            As ``ControlNetModel.forward``: ``(down_block_res_samples, mid_block_res_sample)`` already multiplied
            by ``conditioning_scale``.
        """
        if cond_embedding is not None:
            want = (sample.shape[0], self.config.block_out_channels[0], *sample.shape[-2:])
            if tuple(cond_embedding.shape) != want:
                raise ValueError(f"cond_embedding must have shape {want}, got {tuple(cond_embedding.shape)}")
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.controlnet_cond_embedding.precomputed.bind(cond_embedding))
            if self.num_rca_modules:
                stack.enter_context(self._rca_context.bind(image_encoder_hidden_states, bypass=bypass_rca))
            return super().forward(sample, timestep, encoder_hidden_states, controlnet_cond, *args, **kwargs)

    @torch.no_grad()
    def embed_condition(self, controlnet_cond: torch.Tensor) -> torch.Tensor:
        """The conditioning embedding of ``controlnet_cond`` ((B, 3, 8h, 8w) in [0, 1]) -> (B, C0, h, w).

        Applies the channel order of the config exactly as ``forward`` does, so passing the result as
        ``cond_embedding`` gives the same output as passing the image.
        """
        if self.config.controlnet_conditioning_channel_order == "bgr":
            controlnet_cond = torch.flip(controlnet_cond, dims=[1])
        with self.controlnet_cond_embedding.precomputed.bind(None):
            return self.controlnet_cond_embedding(controlnet_cond)

    @classmethod
    def from_unet(  # type: ignore[override]
        cls,
        unet: UNet2DConditionModel,
        *,
        use_image_cross_attention: bool | None = None,
        load_weights_from_unet: bool = True,
        **controlnet_kwargs: Any,
    ) -> SeeSRControlNet:
        """A ControlNet shaped like ``unet`` with its encoder weights copied (train_seesr.py, spec §5).

        Every ControlNet config key that the UNet config also has is taken from the UNet; ControlNet-only keys
        (conditioning embedding channels, channel order, ...) keep their defaults unless given in
        ``controlnet_kwargs``. ``conv_in``, the time embedding, the down blocks and the mid block (RCA included)
        are copied with ``strict=True``; the conditioning embedding and the zero convolutions stay freshly
        initialised (zeros).

        Args:
            unet: the source UNet (``SeeSRUNet`` or stock).
            use_image_cross_attention: defaults to the UNet's own setting.
        """
        if use_image_cross_attention is None:
            use_image_cross_attention = bool(unet.config.get("use_image_cross_attention", False))
        names = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
        config = {k: v for k, v in unet.config.items() if k in names and not k.startswith("_")}
        config.update(controlnet_kwargs)
        controlnet = cls(**config, use_image_cross_attention=use_image_cross_attention)
        if load_weights_from_unet:
            for name in ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block"):
                getattr(controlnet, name).load_state_dict(getattr(unet, name).state_dict(), strict=True)
            if controlnet.class_embedding is not None:
                controlnet.class_embedding.load_state_dict(unet.class_embedding.state_dict(), strict=True)
        return controlnet
