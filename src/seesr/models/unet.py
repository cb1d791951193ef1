"""SeeSRUNet: the SD-2 UNet with RCA modules after every text cross-attention (paper §3.3, spec §2).

Built on the current diffusers ``UNet2DConditionModel`` by composition (see :mod:`seesr.models.rca`); state-dict
keys and ``config.json`` (with ``use_image_cross_attention``) are those of the official release, so
``SeeSRUNet.from_pretrained("<seesr>/", subfolder="unet")`` loads the released files unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from seesr.models.loading import StrictLoadingMixin, extend_init_signature, raise_on_bad_keys
from seesr.models.rca import RCAContext, attach_rca

RCA_KEY = "image_attentions"

SD2_BASE_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "norm_num_groups": 32,
}
"""The SD-2-base UNet architecture (stabilityai/stable-diffusion-2-base ``unet/config.json``, spec §3); add
``use_image_cross_attention=True`` for SeeSR's. Used to build full-size models on the meta device."""


class SeeSRUNet(StrictLoadingMixin, UNet2DConditionModel):
    """UNet2DConditionModel + RCA.

    Config: every ``UNet2DConditionModel`` key plus ``use_image_cross_attention`` (bool). With it False the model
    is the stock diffusers UNet.
    """

    def __init__(self, *args: Any, use_image_cross_attention: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_to_config(use_image_cross_attention=use_image_cross_attention)
        self._rca_context = RCAContext()
        self.num_rca_modules = attach_rca(self, self._rca_context) if use_image_cross_attention else 0

    extend_init_signature(__init__, UNet2DConditionModel.__init__, use_image_cross_attention=False)

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        *args: Any,
        image_encoder_hidden_states: torch.Tensor | None = None,
        bypass_rca: bool = False,
        **kwargs: Any,
    ):
        """diffusers UNet forward plus the soft prompt.

        Args:
            sample: (B, 4, h, w) noisy latents (scaled latent space).
            timestep: scalar or (B,) diffusion timesteps.
            encoder_hidden_states: (B, 77, text_dim) text-encoder last hidden states.
            image_encoder_hidden_states: (B, 145, 512) DAPE soft prompt; required when RCA is present unless
                ``bypass_rca``.
            bypass_rca: skip every RCA module (paper ablation "hard prompt only").
            *args, **kwargs: the remaining ``UNet2DConditionModel.forward`` arguments, e.g.
                ``down_block_additional_residuals``, ``mid_block_additional_residual``, ``return_dict``.

        Returns:
            As ``UNet2DConditionModel.forward``: the predicted noise (B, 4, h, w).
        """
        if self.num_rca_modules == 0:
            return super().forward(sample, timestep, encoder_hidden_states, *args, **kwargs)
        with self._rca_context.bind(image_encoder_hidden_states, bypass=bypass_rca):
            return super().forward(sample, timestep, encoder_hidden_states, *args, **kwargs)

    def rca_parameters(self):
        """Parameters of the RCA modules (what stage-2 training updates in the UNet)."""
        return (p for name, p in self.named_parameters() if f".{RCA_KEY}." in name)

    @classmethod
    def from_base_and_rca(
        cls,
        base_unet: str | Path,
        seesr_unet: str | Path,
        *,
        torch_dtype: torch.dtype | None = None,
    ) -> tuple[SeeSRUNet, dict[str, str]]:
        """Assemble a UNet from another SD-2-family base (e.g. sd-turbo) plus SeeSR's RCA weights (spec §2.7, §7.3).

        Config and every non-RCA weight come from ``base_unet`` (a diffusers UNet folder); every
        ``image_attentions`` weight comes from ``seesr_unet`` (the released ``seesr/unet`` folder). Unlike the
        official ``from_pretrained_orig`` (``strict=False``) every key must be supplied exactly once.

        Returns:
            The model and a provenance map ``{state-dict key: source file}``.

        Raises:
            WeightsError: a key is missing from its source, or a source holds keys the model does not have.
        """
        base_dir, seesr_dir = Path(base_unet), Path(seesr_unet)
        config = json.loads(_require(base_dir / "config.json").read_text())
        config["use_image_cross_attention"] = True
        model = cls.from_config(config)
        base_file, base_sd = _read_weights(base_dir)
        seesr_file, seesr_sd = _read_weights(seesr_dir)
        wanted = model.state_dict()
        merged: dict[str, torch.Tensor] = {}
        provenance: dict[str, str] = {}
        base_unexpected = [k for k in base_sd if RCA_KEY not in k and k not in wanted]
        for key in wanted:
            source, sd, path = (
                ("seesr", seesr_sd, seesr_file) if f".{RCA_KEY}." in key else ("base", base_sd, base_file)
            )
            if key in sd:
                merged[key] = sd[key]
                provenance[key] = str(path)
        missing = [k for k in wanted if k not in merged]
        raise_on_bad_keys(f"{base_dir} + {seesr_dir}", missing=missing, unexpected=base_unexpected)
        result = model.load_state_dict(merged, strict=True)
        del result
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        return model.eval(), provenance


def _require(path: Path) -> Path:
    if not path.is_file():
        from seesr.errors import WeightsError

        raise WeightsError(f"missing file: {path}")
    return path


def _read_weights(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The state dict of a diffusers model folder (safetensors preferred; ``.bin`` loaded weights-only)."""
    st = folder / "diffusion_pytorch_model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        return st, load_file(str(st))
    binf = folder / "diffusion_pytorch_model.bin"
    if binf.is_file():
        return binf, torch.load(binf, map_location="cpu", weights_only=True)
    from seesr.errors import WeightsError

    raise WeightsError(f"no diffusion_pytorch_model.safetensors or .bin in {folder}")
