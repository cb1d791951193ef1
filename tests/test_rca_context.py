"""RCA context: thread-local, passes cross_attention_kwargs on like the official blocks, traceable by dynamo."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from seesr.models.controlnet import SeeSRControlNet
from seesr.models.unet import SeeSRUNet


@pytest.fixture(scope="module")
def unet(fixtures_dir):
    return SeeSRUNet.from_pretrained(fixtures_dir / "seesr-tiny", subfolder="unet").eval()


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 16, 16, generator=g)
    text = torch.randn(1, 77, 16, generator=g)
    soft = torch.randn(1, 145, 512, generator=g)
    return x, text, soft


@torch.no_grad()
def _forward(unet, x, text, soft, **kw):
    return unet(x, torch.tensor(500), text, image_encoder_hidden_states=soft, return_dict=False, **kw)[0]


def test_two_threads_with_different_soft_prompts_do_not_mix(unet):
    x, text, soft_a = _inputs(0)
    soft_b = _inputs(1)[2]
    alone_a, alone_b = _forward(unet, x, text, soft_a), _forward(unet, x, text, soft_b)
    assert not torch.allclose(alone_a, alone_b)

    # A binds its prompt and waits in its first block until B has bound its own and waits there too; then A runs
    # to the end while B waits. With one shared context A reads B's prompt, and B then finds no prompt at all.
    a_in, b_in, a_done = threading.Event(), threading.Event(), threading.Event()
    first = unet.down_blocks[0].attentions[0]
    paused: set[str] = set()

    def pause(*_args):
        name = threading.current_thread().name
        if name in paused:
            return
        paused.add(name)
        if name == "A":
            a_in.set()
            b_in.wait(timeout=60)
        elif name == "B":
            b_in.set()
            a_done.wait(timeout=60)

    handle = first.register_forward_pre_hook(pause)
    results: dict[str, torch.Tensor] = {}
    errors: list[BaseException] = []

    def run(name, soft, before=None, after=None):
        try:
            if before is not None:
                before.wait(timeout=60)
            results[name] = _forward(unet, x, text, soft)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            if after is not None:
                after.set()

    threads = [
        threading.Thread(target=run, name="A", args=("A", soft_a, None, a_done)),
        threading.Thread(target=run, name="B", args=("B", soft_b, a_in)),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        handle.remove()
    assert not errors, errors
    assert torch.equal(results["A"], alone_a)
    assert torch.equal(results["B"], alone_b)


def test_rca_receives_cross_attention_kwargs(unet):
    # the official blocks hand the text transformer's cross_attention_kwargs to the image attention too
    text_seen: list[object] = []
    rca_seen: list[object] = []
    block = unet.down_blocks[0]
    hooks = [
        block.attentions[0].register_forward_pre_hook(
            lambda _m, _a, kw: text_seen.append(kw.get("cross_attention_kwargs")), with_kwargs=True
        ),
        block.image_attentions[0].register_forward_pre_hook(
            lambda _m, _a, kw: rca_seen.append(kw.get("cross_attention_kwargs")), with_kwargs=True
        ),
    ]
    try:
        x, text, soft = _inputs(0)
        plain = _forward(unet, x, text, soft)
        scaled = _forward(unet, x, text, soft, cross_attention_kwargs={"scale": 1.0})
    finally:
        for h in hooks:
            h.remove()
    assert rca_seen[0] is None and text_seen[0] is None
    assert isinstance(text_seen[1], dict) and rca_seen[1] is text_seen[1]
    assert torch.equal(plain, scaled)


def test_deepcopied_model_has_its_own_context(unet):
    twin = copy.deepcopy(unet)
    assert twin._rca_context is not unet._rca_context
    hook = next(iter(twin.down_blocks[0].attentions[0]._forward_hooks.values()))
    assert hook.args == (twin.down_blocks[0].image_attentions[0], twin._rca_context)
    x, text, soft = _inputs(0)
    # copied weights live at other addresses, so CPU kernels may round differently
    assert torch.allclose(_forward(twin, x, text, soft), _forward(unet, x, text, soft), rtol=1e-5, atol=1e-6)


def test_compiled_forward_equals_eager_without_graph_breaks_from_rca(unet):
    x, text, soft = _inputs(2)
    eager = _forward(unet, x, text, soft)
    torch._dynamo.reset()

    def fn(x, text, soft):
        return unet(x, torch.tensor(500), text, image_encoder_hidden_states=soft, return_dict=False)[0]

    with torch.no_grad():
        explained = torch._dynamo.explain(fn)(x, text, soft)
        compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)(x, text, soft)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


def test_controlnet_precomputed_condition_embedding_gives_the_same_output(fixtures_dir):
    cn = SeeSRControlNet.from_pretrained(fixtures_dir / "seesr-tiny", subfolder="controlnet").eval()
    x, text, soft = _inputs(3)
    cond = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    t = torch.tensor(500)
    with torch.no_grad():
        down, mid = cn(x, t, text, cond, image_encoder_hidden_states=soft, return_dict=False)
        emb = cn.embed_condition(cond)
        down2, mid2 = cn(
            x,
            t,
            text,
            torch.zeros_like(cond),
            image_encoder_hidden_states=soft,
            cond_embedding=emb,
            return_dict=False,
        )
    assert torch.equal(mid, mid2) and all(torch.equal(a, b) for a, b in zip(down, down2))

    def fn(x, text, soft, emb):
        return cn(x, t, text, x, image_encoder_hidden_states=soft, cond_embedding=emb, return_dict=False)[1]

    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(fn)(x, text, soft, emb)
    torch._dynamo.reset()
    assert explained.graph_break_count == 0, explained.break_reasons
    with pytest.raises(ValueError, match="cond_embedding must have shape"):
        cn(x, t, text, cond, image_encoder_hidden_states=soft, cond_embedding=emb[..., :8], return_dict=False)


def test_regional_compile_matches_eager(unet):
    from types import SimpleNamespace

    from seesr.pipeline.compile import compile_models

    twin = copy.deepcopy(unet)
    x, text, soft = _inputs(5)
    eager = _forward(twin, x, text, soft)
    torch._dynamo.reset()
    holder = SimpleNamespace(unet=twin, controlnet=torch.nn.Module())
    assert compile_models(holder, regional=True, backend="eager") > 10
    compiled = _forward(twin, x, text, soft)
    torch._dynamo.reset()
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-6)
