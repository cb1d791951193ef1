"""LoRA of DAPE (spec §4.3): fused-qkv q/v layout, merged vs unmerged equivalence, trainable mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seesr.models.lora import (
    LoRALinear,
    load_lora_state_dict,
    lora_delta,
    lora_parameters,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_delta_,
    merge_lora_,
)


def _qkv(dim: int = 16, seed: int = 0) -> LoRALinear:
    g = torch.Generator().manual_seed(seed)
    layer = LoRALinear(dim, 3 * dim, groups=(True, False, True))
    with torch.no_grad():
        layer.weight.copy_(torch.randn(3 * dim, dim, generator=g) * 0.1)
        layer.bias.copy_(torch.randn(3 * dim, generator=g) * 0.1)
    layer.enable_lora(r=8, alpha=1.0, generator=g)
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(2 * dim, 8, generator=g))
    return layer


def test_qkv_delta_layout_q_and_v_rows_only():
    dim = 16
    layer = _qkv(dim)
    a, b = layer.lora_A.detach(), layer.lora_B.detach()
    assert a.shape == (16, dim) and b.shape == (2 * dim, 8)
    assert layer.scale == pytest.approx(1 / 8)
    delta = layer.delta_weight().detach()
    torch.testing.assert_close(delta[:dim], b[:dim] @ a[:8] / 8, rtol=0, atol=1e-6)
    assert torch.count_nonzero(delta[dim : 2 * dim]) == 0  # k rows untouched
    torch.testing.assert_close(delta[2 * dim :], b[dim:] @ a[8:] / 8, rtol=0, atol=1e-6)


def test_unmerged_forward_equals_merged_forward():
    layer = _qkv()
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    expected = x @ (layer.weight + layer.delta_weight()).T + layer.bias
    unmerged = layer(x)
    torch.testing.assert_close(unmerged, expected, rtol=0, atol=1e-5)
    w_before = layer.weight.detach().clone()
    layer.merge_lora_()
    assert layer.lora_A is None and "lora_A" not in layer.state_dict()
    assert not torch.equal(layer.weight, w_before)
    torch.testing.assert_close(layer(x), unmerged.detach(), rtol=0, atol=1e-5)


def test_plain_linear_lora_and_merge_delta_matches_loralib_formula():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(12, 20, generator=g)
    a, b = torch.randn(8, 20, generator=g), torch.randn(12, 8, generator=g)
    merged = merge_delta_(w.clone(), a, b)
    torch.testing.assert_close(merged, w + (b @ a) * (1 / 8), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        lora_delta(a, b[:6], (True,), 12, 0.125)


def test_enable_lora_is_identity_and_seeded():
    layer1, layer2 = LoRALinear(10, 6), LoRALinear(10, 6)
    layer2.load_state_dict(layer1.state_dict())
    layer1.enable_lora(generator=torch.Generator().manual_seed(5))
    layer2.enable_lora(generator=torch.Generator().manual_seed(5))
    assert torch.equal(layer1.lora_A, layer2.lora_A)
    assert float(layer1.lora_A.detach().abs().max()) <= 1 / 10**0.5
    assert torch.count_nonzero(layer1.lora_B) == 0
    x = torch.randn(3, 10)
    torch.testing.assert_close(layer1(x), nn.functional.linear(x, layer1.weight, layer1.bias), rtol=0, atol=0)


def test_trainable_mode_only_lora_gets_gradients():
    model = nn.Sequential(_qkv(), nn.ReLU(), LoRALinear(48, 4))
    model[2].enable_lora(generator=torch.Generator().manual_seed(2))
    mark_only_lora_trainable(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"0.lora_A", "0.lora_B", "2.lora_A", "2.lora_B"}
    model(torch.randn(4, 16)).square().sum().backward()
    assert model[0].lora_A.grad is not None and float(model[0].lora_A.grad.abs().sum()) > 0
    assert float(model[0].lora_B.grad.abs().sum()) > 0
    assert model[0].weight.grad is None
    assert len(lora_parameters(model)) == 4


def test_lora_state_dict_round_trip_and_errors():
    src = _qkv(seed=7)
    sd = lora_state_dict(src, prefix="")
    assert set(sd) == {"lora_A", "lora_B"}
    holder = nn.Module()
    holder.qkv = _qkv(seed=8)
    state = {"qkv.lora_A": src.lora_A.detach(), "qkv.lora_B": src.lora_B.detach(), "other.lora_A": src.lora_A}
    left = load_lora_state_dict(holder, state)
    assert left == ["other.lora_A"]
    assert torch.equal(holder.qkv.lora_B, src.lora_B)
    with pytest.raises(ValueError, match="needs both"):
        load_lora_state_dict(holder, {"qkv.lora_A": src.lora_A})
    with pytest.raises(ValueError):
        load_lora_state_dict(holder, {"qkv.lora_A": src.lora_A, "qkv.lora_B": src.lora_B[:5]})
    merge_lora_(holder)
    assert lora_state_dict(holder) == {}
