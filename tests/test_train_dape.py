"""Stage-1 (DAPE) training (issue 6): one step equals the official DAPEModel step (fixtures README §12); the loss is
stable from logits; a trained DAPE.pth has the official layout and loads through DAPE.from_official."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from seesr.models.dape import build_student, build_teacher
from seesr.training.steps import dape_ram_input, dape_training_step, soft_label_bce
from tests.test_train_seesr import STEMS, one_thread, read


def _ram_kwargs(ram):
    return dict(tag_list=ram / "ram_tag_list.txt", thresholds=ram / "ram_tag_list_threshold.txt", arch=ram / "arch.json")


@pytest.fixture(scope="module")
def dape_step(fixtures_dir):
    ram = fixtures_dir / "ram-tiny"
    ref = load_file(fixtures_dir / "reference" / "train_step_dape.safetensors")
    info = json.loads((fixtures_dir / "reference" / "train_step_dape.json").read_text())
    # dropout / drop-path off and LoRA unmerged, starting from DAPE_tiny (fixtures README §12)
    student = build_student(ram / "ram_tiny.pth", ram / "DAPE_tiny.pth", **_ram_kwargs(ram)).eval()
    teacher = build_teacher(ram / "ram_tiny.pth", **_ram_kwargs(ram))
    train = fixtures_dir / "reference" / "train"
    gt = torch.stack([read(train / "gt" / f"{s}.png") for s in STEMS])
    lq = torch.stack([read(train / "sr_bicubic" / f"{s}.png") for s in STEMS])
    with one_thread():
        hr_in, lr_in = dape_ram_input(gt), dape_ram_input(lq)
    out = dape_training_step(student=student, teacher=teacher, hr_input=hr_in, lr_input=lr_in)
    out.loss.backward()
    return dict(ref=ref, info=info, out=out, student=student, teacher=teacher, hr_in=hr_in, lr_in=lr_in)


def test_dape_inputs_match_official_dataset(dape_step):
    info, ref = dape_step["info"], dape_step["ref"]
    for name, x in (("gt_ram", dape_step["hr_in"]), ("lq_ram", dape_step["lr_in"])):
        assert torch.equal(x[:, :, :24, :24], ref[f"{name}_patch"])
        for i, digest in enumerate(info["data"]["digest"][name]):
            assert hashlib.sha256(x[i].contiguous().numpy().tobytes()).hexdigest() == digest["sha256_le_bytes"]


def test_dape_step_loss_matches_official(dape_step):
    out, loss, ref = dape_step["out"], dape_step["info"]["loss"], dape_step["ref"]
    for name, want in (("l_fea", loss["l_fea"]), ("l_logits", loss["l_logits"]), ("loss", loss["l_total"])):
        assert abs(getattr(out, name).item() - want) <= 1e-5 * abs(want), name
    for name in ("teacher_image_embeds", "student_image_embeds", "teacher_logits", "student_logits"):
        got = getattr(out, name.replace("_image", ""))
        assert (got - ref[name]).abs().max() <= 1e-5 * max(1.0, ref[name].abs().max()), name


def test_dape_step_lora_gradients_match_official(dape_step):
    norms = dape_step["info"]["grad_norms"]
    named = {n: p for n, p in dape_step["student"].named_parameters() if p.requires_grad}
    assert set(named) == set(norms["per_parameter"]) and len(named) == 24
    assert all(n.endswith((".lora_A", ".lora_B")) for n in named)
    total = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in named.values())))
    assert abs(total - norms["total"]) <= 1e-4 * norms["total"]
    for group, want in norms["groups"].items():
        prefix = "visual_encoder" if group == "visual_encoder (all)" else group
        got = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for n, p in named.items() if n.startswith(prefix))))
        assert abs(got - want) <= 1e-4 * want, group
    for key, want in norms["per_parameter"].items():
        assert abs(float(named[key].grad.double().norm()) - want) <= 1e-4 * max(want, 1e-3 * norms["total"]), key
    for key, g_ref in dape_step["ref"].items():
        if key.startswith("grad/"):
            g = named[key[len("grad/") :]].grad
            assert (g - g_ref).abs().max() <= 1e-4 * g_ref.abs().max(), key
    assert all(p.grad is None for p in dape_step["teacher"].parameters())


def test_soft_label_bce_is_the_official_formula_and_stays_finite():
    s = torch.tensor([[0.3, -2.0, 5.0]])
    t = torch.tensor([[1.0, -0.5, 0.0]])
    p_s, p_t = torch.sigmoid(s), torch.sigmoid(t)
    official = (-(p_t * torch.log(p_s) + (1 - p_t) * torch.log(1 - p_s))).mean()
    assert torch.allclose(soft_label_bce(s, t), official, rtol=1e-6)
    saturated = torch.tensor([[200.0, -200.0]], requires_grad=True)
    loss = soft_label_bce(saturated, torch.tensor([[-3.0, 3.0]]))
    loss.backward()
    p = torch.sigmoid(saturated.detach())
    assert torch.isinf(-torch.log(1 - p)).any()  # the official formula overflows here
    assert torch.isfinite(loss) and torch.isfinite(saturated.grad).all()
