"""SeeSRControlNet: the SD-2 ControlNet with RCA modules (paper §3.3, spec §2.4).

The ControlNet reads the LR image (bicubic-upscaled, in [0, 1]) through the stock conditioning embedding and, like
the UNet, has an RCA module after each text cross-attention of its down and mid blocks. Keys and config equal the
official release (``use_image_cross_attention`` in ``config.json``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from seesr.models.loading import StrictLoadingMixin, extend_init_signature
from seesr.models.rca import RCAContext, attach_rca


class SeeSRControlNet(StrictLoadingMixin, ControlNetModel):
    """ControlNetModel + RCA. Config: every ``ControlNetModel`` key plus ``use_image_cross_attention``."""

    def __init__(self, *args: Any, use_image_cross_attention: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_to_config(use_image_cross_attention=use_image_cross_attention)
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
        **kwargs: Any,
    ):
        """diffusers ControlNet forward plus the soft prompt.

        Args:
            sample: (B, 4, h, w) noisy latents.
            timestep: scalar or (B,) timesteps.
            encoder_hidden_states: (B, 77, text_dim) text embeddings.
            controlnet_cond: (B, 3, 8h, 8w) LR condition image in [0, 1], pixel space.
            image_encoder_hidden_states: (B, 145, 512) DAPE soft prompt (required with RCA unless ``bypass_rca``).
            *args, **kwargs: remaining ``ControlNetModel.forward`` arguments (``conditioning_scale``, ...).

        Returns:
            As ``ControlNetModel.forward``: ``(down_block_res_samples, mid_block_res_sample)`` already multiplied
            by ``conditioning_scale``.
        """
        if self.num_rca_modules == 0:
            return super().forward(sample, timestep, encoder_hidden_states, controlnet_cond, *args, **kwargs)
        with self._rca_context.bind(image_encoder_hidden_states, bypass=bypass_rca):
            return super().forward(sample, timestep, encoder_hidden_states, controlnet_cond, *args, **kwargs)

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
