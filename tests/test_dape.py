"""DAPE (spec §1.4, §4) against the official outputs in ../shared/fixtures (README §4, §5b, §9, §10, §12)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from seesr.models.dape import DAPE, DAPEConfig, TaggingOptions
from seesr.pipeline.dape_lora import official_lora_state_dict, save_official_lora
from seesr.pipeline.dape_weights import load_dape, load_official_dape, save_dape
from seesr.training.dape_models import build_student, build_teacher
from tests.conftest import tolerance

PHOTOS = ("astronaut_128x128", "coffee_96x128")


@pytest.fixture(scope="module")
def ram(fixtures_dir: Path) -> dict[str, Path]:
    d = fixtures_dir / "ram-tiny"
    return {
        "ram": d / "ram_tiny.pth",
        "dape": d / "DAPE_tiny.pth",
        "tagenc": d / "DAPE_tiny_tagenc.pth",
        "tag_list": d / "ram_tag_list.txt",
        "thresholds": d / "ram_tag_list_threshold.txt",
        "arch": d / "arch.json",
    }


def _load(ram: dict[str, Path], lora: str | None) -> DAPE:
    return load_official_dape(
        ram["ram"],
        ram[lora] if lora else None,
        tag_list=ram["tag_list"],
        thresholds=ram["thresholds"],
        arch=ram["arch"],
    )


@pytest.fixture(scope="module")
def models(ram) -> dict[str, DAPE]:
    return {"plain": _load(ram, None), "dape": _load(ram, "dape")}


@pytest.fixture(scope="module")
def ref(fixtures_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    r = fixtures_dir / "reference"
    return load_file(str(r / "dape.safetensors")), json.loads((r / "dape.json").read_text())


def _u8_to_lr(u8: torch.Tensor) -> torch.Tensor:
    return u8.permute(2, 0, 1).unsqueeze(0).float() / 255.0


def _png(path: Path) -> torch.Tensor:
    return _u8_to_lr(torch.from_numpy(np.array(Image.open(path).convert("RGB"))))


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor, rel: float = 1e-5) -> None:
    err = float((ours.detach().float() - theirs.float()).abs().max())
    assert err <= tolerance(theirs, rel), f"max|Δ| {err:.3g} > {tolerance(theirs, rel):.3g}"


# ------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("photo", PHOTOS)
def test_preprocess_reproduces_official_ram_input(models, ref, photo):
    tensors, _ = ref
    lr = _u8_to_lr(tensors[f"{photo}/lr_u8"])
    target = tensors[f"{photo}/ram_input_384"]
    # the reference used antialias=True (torchvision 0.29); for upsampling False agrees to ~1e-6 in [0,1]
    _assert_close(models["dape"].preprocess(lr, antialias=True), target, rel=1e-6)
    _assert_close(models["dape"].preprocess(lr), target)
    assert models["dape"].preprocess(lr).shape == (1, 3, 384, 384)


@pytest.mark.parametrize("mode", ["plain", "dape"])
def test_tags_logits_embeds_match_official(models, ref, mode):
    tensors, meta = ref
    model = models[mode]
    for photo in PHOTOS:
        lr = _u8_to_lr(tensors[f"{photo}/lr_u8"])
        with torch.no_grad():
            out = model(lr)
        _assert_close(out.logits, tensors[f"{photo}/{mode}/logits"])
        _assert_close(out.image_embeds, tensors[f"{photo}/{mode}/image_embeds"])
        assert out.image_embeds.shape == (1, 145, 512)
        assert out.tag_strings[0] == meta["photos"][photo][mode]["tags"]
        fired = [model.tag_list.index(t) for t in out.tags[0]]
        assert fired == meta["photos"][photo][mode]["fired_indices"]
        # the same tensors through the training entry points (already-preprocessed input)
        x = torch.as_tensor(tensors[f"{photo}/ram_input_384"])
        with torch.no_grad():
            _assert_close(model.image_embeds(x), tensors[f"{photo}/{mode}/image_embeds"])
            _assert_close(model.tag_logits(x), tensors[f"{photo}/{mode}/logits"])


def test_dape_changes_the_tags(ref):
    _, meta = ref  # guards the parity test above against a loader that silently drops the LoRA
    assert any(meta["photos"][p]["dape"]["tags"] != meta["photos"][p]["plain"]["tags"] for p in PHOTOS)


def test_batch_equals_single_images(models, ref):
    tensors, _ = ref
    a = _u8_to_lr(tensors["astronaut_128x128/lr_u8"])
    with torch.no_grad():
        single = models["dape"](a)
        both = models["dape"](torch.cat([a, a.flip(-1)]))
    _assert_close(both.logits[:1], single.logits)
    _assert_close(both.image_embeds[:1], single.image_embeds)
    assert both.tags[0] == single.tags[0] and len(both.tag_strings) == 2


@pytest.mark.parametrize("variant,antialias", [("faithful", False), ("antialias", True)])
def test_large_lr_both_antialias_settings(models, fixtures_dir, variant, antialias):
    r = fixtures_dir / "reference"
    tensors = load_file(str(r / "dape_large.safetensors"))
    meta = json.loads((r / "dape_large.json").read_text())
    lr = _png(r / "lr" / "astronaut_512x400.png")
    _assert_close(
        models["plain"].preprocess(lr, antialias=antialias), tensors[f"{variant}/ram_input_384"], 1e-6
    )
    for mode, model in models.items():
        with torch.no_grad():
            out = model(lr, antialias=antialias)
        _assert_close(out.logits, tensors[f"{variant}/{mode}/logits"])
        _assert_close(out.image_embeds, tensors[f"{variant}/{mode}/image_embeds"])
        want = [model.tag_list[i] for i in torch.nonzero(tensors[f"{variant}/{mode}/targets"][0]).flatten()]
        assert out.tags[0] == want
        assert out.tag_strings[0] == meta["variants"][variant][mode]["tags"]
    # the default is the faithful (no antialias) path: differs visibly from the antialiased one here
    with torch.no_grad():
        default = models["dape"](lr).image_embeds
    _assert_close(default, tensors["faithful/dape/image_embeds"])
    assert float((default - tensors["antialias/dape/image_embeds"]).abs().max()) > 0.05


def test_tied_tag_encoder_lora_is_merged_first(ram, fixtures_dir, models):
    r = fixtures_dir / "reference"
    tensors = load_file(str(r / "dape_tagenc.safetensors"))
    model = _load(ram, "tagenc")
    sd = model.state_dict()
    for key, value in tensors.items():
        if key.startswith("merged/"):
            assert float((sd[key[len("merged/") :]] - value).abs().max()) <= 1e-7, key
    inputs = load_file(str(r / "dape.safetensors"))
    large = load_file(str(r / "dape_large.safetensors"))
    meta = json.loads((r / "dape_tagenc.json").read_text())
    for photo in (*PHOTOS, "astronaut_512x400"):
        x = (
            large["faithful/ram_input_384"]
            if photo == "astronaut_512x400"
            else inputs[f"{photo}/ram_input_384"]
        )
        with torch.no_grad():
            emb, logits = model.embeds_and_logits(x)
        _assert_close(logits, tensors[f"{photo}/logits"])
        _assert_close(emb, tensors[f"{photo}/image_embeds"])
        tags = model.tags_from_logits(logits)[0]
        want = [model.tag_list[i] for i in torch.nonzero(tensors[f"{photo}/targets"][0]).flatten()]
        assert tags == want
        assert ", ".join(tags) == meta["photos"][photo]["tags"]
    # ΔE really matters: DAPE_tiny alone gives other logits on the same input
    with torch.no_grad():
        other = models["dape"].tag_logits(inputs["astronaut_128x128/ram_input_384"])
    assert float((other - tensors["astronaut_128x128/logits"]).abs().max()) > 0.1


# ------------------------------------------------------------------------------------------ errors
def test_wrong_shape_checkpoint_is_a_clear_error(ram):
    # the tiny checkpoint against the default (full Swin-L) architecture
    with pytest.raises(ValueError, match=r"wrong shape.*visual_encoder"):
        load_official_dape(ram["ram"], tag_list=ram["tag_list"], thresholds=ram["thresholds"])


def test_tag_list_of_wrong_length(ram, tmp_path):
    short = tmp_path / "tags.txt"
    short.write_text("\n".join(ram["tag_list"].read_text().splitlines()[:-1]))
    with pytest.raises(ValueError, match=r"4584 tags, but the model has 4585"):
        load_official_dape(ram["ram"], tag_list=short, thresholds=ram["thresholds"], arch=ram["arch"])
    with pytest.raises(ValueError, match="thresholds"):
        load_official_dape(ram["ram"], tag_list=ram["tag_list"], thresholds=[0.5] * 3, arch=ram["arch"])


def test_non_checkpoint_files(ram, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    kw = dict(tag_list=ram["tag_list"], thresholds=ram["thresholds"], arch=ram["arch"])
    with pytest.raises(ValueError, match=r"junk\.pth is not a readable PyTorch checkpoint"):
        load_official_dape(junk, **kw)
    with pytest.raises(ValueError, match=r"junk\.pth is not a readable PyTorch checkpoint"):
        load_official_dape(ram["ram"], junk, **kw)
    # the LoRA file given as the RAM checkpoint and vice versa
    with pytest.raises(ValueError, match="no 'model' state dict"):
        load_official_dape(ram["dape"], **kw)
    with pytest.raises(ValueError, match="not LoRA tensors"):
        load_official_dape(ram["ram"], ram["ram"], **kw)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_official_dape(tmp_path / "missing.pth", **kw)
    bad_lora = tmp_path / "bad_lora.pth"
    sd = torch.load(ram["dape"], weights_only=True)
    sd["visual_encoder.layers.0.blocks.0.attn.qkv.lora_B"] = torch.zeros(5, 8)
    torch.save(sd, bad_lora)
    with pytest.raises(ValueError, match=r"bad_lora\.pth.*layers\.0\.blocks\.0\.attn\.qkv"):
        load_official_dape(ram["ram"], bad_lora, **kw)
    extra = tmp_path / "extra.pth"
    full = torch.load(ram["ram"], weights_only=True)
    full["model"]["visual_encoder.head.weight"] = torch.zeros(2, 2)
    torch.save(full, extra)
    with pytest.raises(ValueError, match=r"unexpected keys \['visual_encoder\.head\.weight'\]"):
        load_official_dape(extra, **kw)


def test_checkpoint_with_optimizer_state_and_vision_multi_names(ram, tmp_path, models, ref):
    full = torch.load(ram["ram"], weights_only=True)
    renamed = {k.replace("tagging_head", "vision_multi"): v for k, v in full["model"].items()}
    path = tmp_path / "ram_with_optim.pth"
    torch.save({"model": renamed, "optimizer": {"state": {}, "lr": 1.0}, "epoch": 3}, path)
    model = load_official_dape(path, tag_list=ram["tag_list"], thresholds=ram["thresholds"], arch=ram["arch"])
    x = ref[0]["coffee_96x128/ram_input_384"]
    with torch.no_grad():
        assert torch.equal(model.tag_logits(x), models["plain"].tag_logits(x))


def test_untied_tag_encoder_copy_warns_and_head_values_win(ram, tmp_path, models, ref, caplog):
    full = torch.load(ram["ram"], weights_only=True)
    key = "tag_encoder.encoder.layer.1.intermediate.dense.weight"
    full["model"][key] = full["model"][key].clone() + 1.0  # break the tie
    path = tmp_path / "untied.pth"
    torch.save(full, path)
    with caplog.at_level("WARNING", logger="seesr.pipeline.dape_weights"):
        model = load_official_dape(
            path, tag_list=ram["tag_list"], thresholds=ram["thresholds"], arch=ram["arch"]
        )
    assert "1 tag_encoder tensors differ" in caplog.text and key in caplog.text
    x = ref[0]["coffee_96x128/ram_input_384"]
    with torch.no_grad():
        assert torch.equal(model.tag_logits(x), models["plain"].tag_logits(x))


# ------------------------------------------------------------------------------------------ layout / sizes
def _official_keys(cfg: DAPEConfig) -> set[str]:
    """Inference keys of the official RAM state dict after the loader's filtering (spec §4.1)."""
    keys = {"label_embed", "visual_encoder.norm.weight", "visual_encoder.norm.bias"}
    keys |= {f"visual_encoder.patch_embed.{m}.{p}" for m in ("proj", "norm") for p in ("weight", "bias")}
    for s, depth in enumerate(cfg.depths):
        for b in range(depth):
            pre = f"visual_encoder.layers.{s}.blocks.{b}"
            keys.add(f"{pre}.attn.relative_position_bias_table")
            for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                keys |= {f"{pre}.{m}.weight", f"{pre}.{m}.bias"}
        if s < len(cfg.depths) - 1:
            pre = f"visual_encoder.layers.{s}.downsample"
            keys |= {f"{pre}.norm.weight", f"{pre}.norm.bias", f"{pre}.reduction.weight"}
    for m in ("image_proj", "wordvec_proj", "fc"):
        keys |= {f"{m}.weight", f"{m}.bias"}
    for i in range(cfg.head_layers):
        pre = f"tagging_head.encoder.layer.{i}"
        for m in (
            "crossattention.self.query",
            "crossattention.self.key",
            "crossattention.self.value",
            "crossattention.output.dense",
            "crossattention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ):
            keys |= {f"{pre}.{m}.weight", f"{pre}.{m}.bias"}
    return keys


def test_full_size_parameter_count_and_keys_on_meta():
    cfg = DAPEConfig()
    with torch.device("meta"):
        model = DAPE(cfg, [str(i) for i in range(cfg.num_classes)], [0.5] * cfg.num_classes)
    n = sum(p.numel() for p in model.parameters())
    # ≈212M: Swin-L encoder + image_proj + tagging head; the official RAM builds 471M (tag_encoder/decoder)
    assert n == 212_117_045
    sd = model.state_dict()
    assert set(sd) == _official_keys(cfg)
    assert sd["visual_encoder.layers.3.blocks.1.attn.qkv.weight"].shape == (4608, 1536)
    assert sd["visual_encoder.layers.2.blocks.17.attn.relative_position_bias_table"].shape == (529, 24)
    assert sd["tagging_head.encoder.layer.1.crossattention.self.key.weight"].shape == (768, 512)
    assert sd["label_embed"].shape == (4585, 512) and sd["image_proj.weight"].shape == (512, 1536)
    assert cfg.vision_width == 1536 and cfg.num_tokens == 145


def test_tiny_key_set_matches_fixture_checkpoint(ram, models):
    ckpt = torch.load(ram["ram"], weights_only=True, mmap=True)["model"]
    used = {
        k
        for k in ckpt
        if not k.startswith(("tag_encoder.", "text_decoder.")) and not k.endswith("relative_position_index")
    }
    assert set(models["plain"].state_dict()) == used == _official_keys(models["plain"].config)


def test_save_dape_round_trip(models, ref, tmp_path):
    model = models["dape"]
    save_dape(model, tmp_path / "dape")
    assert sorted(p.name for p in (tmp_path / "dape").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tag_list.txt",
        "tag_thresholds.txt",
    ]
    again = load_dape(tmp_path / "dape")
    assert again.config == model.config and again.tag_list == model.tag_list
    assert torch.equal(again.class_threshold, model.class_threshold)
    x = ref[0]["astronaut_128x128/ram_input_384"]
    with torch.no_grad():
        assert torch.equal(again.tag_logits(x), model.tag_logits(x))
        assert torch.equal(again.image_embeds(x), model.image_embeds(x))
    with pytest.raises(FileNotFoundError, match="lacks config.json"):
        load_dape(tmp_path)


def test_half_precision_runs(ram, ref):
    model = _load(ram, "dape").to(torch.bfloat16)
    tensors, _ = ref
    lr = _u8_to_lr(tensors["astronaut_128x128/lr_u8"])
    assert model.preprocess(lr).dtype == torch.float32
    with torch.no_grad():
        out = model(lr)
    assert out.image_embeds.dtype == torch.bfloat16 and model.class_threshold.dtype == torch.float32
    err = float((out.image_embeds.float() - tensors["astronaut_128x128/dape/image_embeds"]).abs().max())
    assert err < 0.1


# ------------------------------------------------------------------------------------------ tagging options
def test_threshold_blocklist_and_extra_tags(models, ref):
    model = models["dape"]
    x = ref[0]["astronaut_128x128/ram_input_384"]
    with torch.no_grad():
        logits = model.tag_logits(x)
    base = model.tags_from_logits(logits)[0]
    assert len(base) == 10 and base[0] == "anvil"
    assert model.tags_from_logits(logits, TaggingOptions(threshold=1.0))[0] == []
    assert len(model.tags_from_logits(logits, TaggingOptions(threshold=0.0))[0]) == model.num_classes
    probs = torch.sigmoid(logits[0])
    off = max((i for i in range(model.num_classes) if model.tag_list[i] not in base), key=lambda i: probs[i])
    over = TaggingOptions(threshold={base[0]: 1.0, model.tag_list[off]: float(probs[off]) - 1e-3})
    got = model.tags_from_logits(logits, over)[0]
    assert base[0] not in got and model.tag_list[off] in got and len(got) == len(base)
    full = model.class_threshold.clone()
    full[model.tag_list.index(base[1])] = 1.0
    assert base[1] not in model.tags_from_logits(logits, TaggingOptions(threshold=full.tolist()))[0]
    opts = TaggingOptions(blocklist=(base[2], base[3]), extra_tags=("my tag", base[4], "my tag"))
    got = model.tags_from_logits(logits, opts)[0]
    assert got == [t for t in base if t not in (base[2], base[3])] + ["my tag"]
    with pytest.raises(ValueError, match="not in the tag list"):
        model.tags_from_logits(logits, TaggingOptions(blocklist=("no such tag",)))
    with pytest.raises(ValueError, match="not in the tag list"):
        model.tags_from_logits(logits, TaggingOptions(threshold={"no such tag": 0.1}))
    with pytest.raises(ValueError, match="sequence of tags"):
        TaggingOptions(blocklist="anvil")


# ------------------------------------------------------------------------------------------ training helpers
def _train_input(u8: torch.Tensor) -> torch.Tensor:
    x = u8.permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, (512, 512), mode="bilinear", align_corners=False, antialias=False)
    x = torch.nn.functional.interpolate(x, (384, 384), mode="bilinear", align_corners=False, antialias=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def test_student_teacher_reproduce_official_dape_train_step(ram, fixtures_dir):
    """Unmerged trainable LoRA: outputs, loss and LoRA gradients of one official DAPE step (README §12)."""
    r = fixtures_dir / "reference"
    t = load_file(str(r / "train_step_dape.safetensors"))
    meta = json.loads((r / "train_step_dape.json").read_text())
    kw = dict(tag_list=ram["tag_list"], thresholds=ram["thresholds"], arch=ram["arch"])
    teacher = build_teacher(ram["ram"], **kw)
    student = build_student(ram["ram"], ram["dape"], **kw)
    hr, lq = _train_input(t["gt_u8"]), _train_input(t["sr_bicubic_u8"])
    _assert_close(hr[:, :, :24, :24], t["gt_ram_patch"], 1e-6)
    _assert_close(lq[:, :, :24, :24], t["lq_ram_patch"], 1e-6)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert {n for n, p in student.named_parameters() if p.requires_grad} == {
        k for k in official_lora_state_dict(student) if not k.startswith(("tag_encoder", "text_decoder"))
    }
    with torch.no_grad():
        t_emb, t_logits = teacher.embeds_and_logits(hr)
    s_emb, s_logits = student.embeds_and_logits(lq)
    _assert_close(t_emb, t["teacher_image_embeds"])
    _assert_close(t_logits, t["teacher_logits"])
    _assert_close(s_emb, t["student_image_embeds"])
    _assert_close(s_logits, t["student_logits"])
    l_fea = torch.nn.functional.mse_loss(s_emb, t_emb)
    p_t, p_s = torch.sigmoid(t_logits), torch.sigmoid(s_logits)
    l_logits = (-(p_t * torch.log(p_s) + (1 - p_t) * torch.log(1 - p_s))).mean()
    total = l_fea + l_logits
    assert float(total.detach()) == pytest.approx(meta["loss"]["l_total"], rel=1e-5)
    total.backward()
    grads = {n: p.grad for n, p in student.named_parameters() if p.grad is not None}
    assert set(grads) == {k[len("grad/") :] for k in t if k.startswith("grad/")}
    for name, g in grads.items():
        ref_g = t[f"grad/{name}"]
        assert float((g - ref_g).abs().max()) <= 1e-4 * float(ref_g.abs().max()) + 1e-12, name
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())))
    assert norm == pytest.approx(meta["grad_norms"]["total"], rel=1e-4)


def test_official_lora_layout_round_trip(ram, models, ref, tmp_path):
    kw = dict(tag_list=ram["tag_list"], thresholds=ram["thresholds"], arch=ram["arch"])
    student = build_student(ram["ram"], ram["dape"], **kw)
    official = torch.load(ram["dape"], weights_only=True)
    written = official_lora_state_dict(student)
    assert list(written) == list(official)  # 56 keys, official order
    for k, v in official.items():
        assert written[k].shape == v.shape, k
        if not k.startswith(("tag_encoder.", "text_decoder.")):
            assert torch.equal(written[k], v), k
        else:
            assert torch.count_nonzero(written[k]) == 0  # zeros without a template
    with_template = official_lora_state_dict(student, ram["dape"])
    assert all(torch.equal(with_template[k], v) for k, v in official.items())
    path = tmp_path / "DAPE_out.pth"
    save_official_lora(path, student)
    reloaded = load_official_dape(ram["ram"], path, **kw)
    x = ref[0]["coffee_96x128/ram_input_384"]
    with torch.no_grad():
        _assert_close(reloaded.tag_logits(x), models["dape"].tag_logits(x))
        # the unmerged student and its merged save agree as well
        _assert_close(student.eval().tag_logits(x), models["dape"].tag_logits(x))
    fresh = build_student(ram["ram"], **kw, generator=torch.Generator().manual_seed(0))
    assert all(
        float(p.detach().abs().sum()) == 0 for n, p in fresh.named_parameters() if n.endswith("lora_B")
    )
    with torch.no_grad():  # lora_B = 0: a fresh student equals the teacher
        _assert_close(fresh.tag_logits(x), models["plain"].tag_logits(x))


def test_student_stochastic_layers_are_seeded(ram, ref):
    kw = dict(tag_list=ram["tag_list"], thresholds=ram["thresholds"], arch=ram["arch"])
    student = build_student(ram["ram"], ram["dape"], **kw, drop_path_rate=0.1, head_dropout=0.1)
    x = ref[0]["coffee_96x128/ram_input_384"]
    outs = []
    for _ in range(2):
        student.set_generator(torch.Generator().manual_seed(3))
        with torch.no_grad():
            outs.append(student.embeds_and_logits(x))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    with torch.no_grad():
        emb, logits = student.eval().embeds_and_logits(x)
    assert float((outs[0][0] - emb).abs().max()) > 1e-3 and float((outs[0][1] - logits).abs().max()) > 1e-3


# ------------------------------------------------------------------------------------------ CLI
def test_cli_tag_json(ram, fixtures_dir, ref, tmp_path, capsys):
    from seesr.cli import main

    lr_dir = fixtures_dir / "reference" / "lr"
    images = [str(lr_dir / f"{p}.png") for p in PHOTOS]
    args = ["--ram", str(ram["ram"]), "--dape", str(ram["dape"]), "--tag-list", str(ram["tag_list"])]
    args += ["--thresholds", str(ram["thresholds"]), "--dape-arch", str(ram["arch"])]
    assert main(["tag", *images, "--json", *args]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["tag_string"] for r in result] == [ref[1]["photos"][p]["dape"]["tags"] for p in PHOTOS]
    assert result[0]["tags"] == ref[1]["photos"][PHOTOS[0]]["dape"]["tags"].split(", ")

    save_dape(_load(ram, "dape"), tmp_path / "w")
    opts = ["--extra-tags", "x, y", "--blocklist", "anvil"]
    assert main(["tag", images[1], "--weights", str(tmp_path / "w"), *opts]) == 0
    line = capsys.readouterr().out.strip()
    want = [t for t in ref[1]["photos"][PHOTOS[1]]["dape"]["tags"].split(", ") if t != "anvil"] + ["x", "y"]
    assert line == f"{images[1]}: {', '.join(want)}"

    assert main(["tag", images[0], "--weights", str(tmp_path / "w"), "--threshold", "1.0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["tags"] == []
    assert main(["tag", str(tmp_path / "missing.png"), "--weights", str(tmp_path / "w")]) == 1
    assert "image not found" in capsys.readouterr().err
    assert main(["tag", images[0], "--ram", str(ram["ram"])]) == 1
    assert "--tag-list" in capsys.readouterr().err
