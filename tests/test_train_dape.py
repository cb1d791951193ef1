"""Stage-1 (DAPE) training (issue 6): one step equals the official DAPEModel step (fixtures README §12); the loss is
stable from logits; a trained DAPE.pth has the official layout and loads through load_official_dape."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from seesr.training.dape_models import build_student, build_teacher
from seesr.training.steps import dape_ram_input, dape_training_step, soft_label_bce
from tests.test_train_seesr import STEMS, one_thread, read


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Tiny models run faster on one thread on a shared 2-core machine (and the fixtures were built on one)."""
    with one_thread():
        yield


def _ram_kwargs(ram):
    return dict(
        tag_list=ram / "ram_tag_list.txt",
        thresholds=ram / "ram_tag_list_threshold.txt",
        arch=ram / "arch.json",
    )


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
            assert (
                hashlib.sha256(x[i].contiguous().numpy().tobytes()).hexdigest() == digest["sha256_le_bytes"]
            )


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
        got = float(
            torch.sqrt(sum((p.grad.double() ** 2).sum() for n, p in named.items() if n.startswith(prefix)))
        )
        assert abs(got - want) <= 1e-4 * want, group
    for key, want in norms["per_parameter"].items():
        assert abs(float(named[key].grad.double().norm()) - want) <= 1e-4 * max(
            want, 1e-3 * norms["total"]
        ), key
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


# ------------------------------------------------------------------------------------------------ the loop
def tiny_dape_config(fixtures_dir, output_dir, **run) -> dict:
    ram = fixtures_dir / "ram-tiny"
    run_cfg = dict(
        output_dir=str(output_dir),
        max_train_steps=2,
        train_batch_size=2,
        mixed_precision="no",
        report_to="none",
        checkpointing_steps=0,
        logging_steps=1,
        learning_rate=1e-3,
    )
    run_cfg.update(run)
    return dict(
        ram=dict(
            ram_checkpoint=str(ram / "ram_tiny.pth"),
            dape_checkpoint=None,
            tag_list=str(ram / "ram_tag_list.txt"),
            thresholds=str(ram / "ram_tag_list_threshold.txt"),
            arch=str(ram / "arch.json"),
        ),
        data=dict(paired_roots=[str(fixtures_dir / "reference" / "train")], resolution=64, tags="none"),
        run=run_cfg,
    )


@pytest.fixture(scope="module")
def dape_runs(tiny_weights_dir, tmp_path_factory):
    """A fresh 3-step DAPE run through the CLI, and the same run killed after step 3 (checkpoint at 2) + resumed."""
    from seesr.cli import main
    from seesr.training.config import TrainDAPEConfig, load_train_config
    from seesr.training.train_dape import train_dape
    from tests.test_train_seesr import write_yaml

    root = tmp_path_factory.mktemp("dape")
    paths = {
        name: write_yaml(
            root / f"{name}.yaml",
            tiny_dape_config(tiny_weights_dir, root / name, max_train_steps=3, checkpointing_steps=2),
        )
        for name in ("a", "b")
    }
    with one_thread():
        assert main(["train-dape", "--config", str(paths["a"])]) == 0

        def kill(step, logs):
            if step == 3:
                raise KeyboardInterrupt("simulated kill")

        with pytest.raises(KeyboardInterrupt):
            train_dape(load_train_config(TrainDAPEConfig, paths["b"]), on_step_end=kill)
        assert main(["train-dape", "--config", str(paths["b"]), "--resume"]) == 0
    return root


def test_trained_dape_pth_has_the_official_layout_and_loads(dape_runs, tiny_weights_dir):
    from seesr.pipeline.dape_weights import load_dape, load_official_dape

    ram = tiny_weights_dir / "ram-tiny"
    trained = torch.load(dape_runs / "a" / "DAPE.pth", weights_only=True)
    official = torch.load(ram / "DAPE_tiny.pth", weights_only=True)
    assert list(trained) == list(official)
    assert all(trained[k].shape == official[k].shape and trained[k].dtype == torch.float32 for k in official)
    # a fresh run starts from lora_B = 0; three steps moved the trained LoRA B of the Swin and the tagging head
    assert all(trained[k].abs().max() > 0 for k in trained if k.endswith("lora_B") and "visual_encoder" in k)
    loaded = load_official_dape(ram / "ram_tiny.pth", dape_runs / "a" / "DAPE.pth", **_ram_kwargs(ram))
    plain = load_official_dape(ram / "ram_tiny.pth", None, **_ram_kwargs(ram))
    merged_ours = load_dape(dape_runs / "a" / "dape")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        e_loaded, e_ours, e_plain = loaded(x).image_embeds, merged_ours(x).image_embeds, plain(x).image_embeds
    assert (e_loaded - e_ours).abs().max() <= 1e-5 * max(1.0, e_ours.abs().max())
    assert (e_loaded - e_plain).abs().max() > 1e-4  # the trained LoRA changes the soft prompt


def test_killed_dape_run_resumes_bit_identical(dape_runs):
    a = torch.load(dape_runs / "a" / "DAPE.pth", weights_only=True)
    b = torch.load(dape_runs / "b" / "DAPE.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    mid = torch.load(dape_runs / "a" / "checkpoint-2" / "DAPE.pth", weights_only=True)
    assert any(not torch.equal(a[k], mid[k]) for k in a)


def test_dape_trains_from_hq_images_with_online_degradation(tiny_weights_dir, tmp_path):
    from seesr.cli import main
    from tests.test_train_seesr import write_yaml

    cfg = tiny_dape_config(tiny_weights_dir, tmp_path / "out", max_train_steps=1, train_batch_size=2)
    cfg["data"] = dict(
        hq_roots=[str(tiny_weights_dir / "reference" / "train" / "gt")], resolution=64, tags="none"
    )
    with one_thread():
        assert main(["train-dape", "--config", str(write_yaml(tmp_path / "c.yaml", cfg))]) == 0
    trained = torch.load(tmp_path / "out" / "DAPE.pth", weights_only=True)
    official = torch.load(tiny_weights_dir / "ram-tiny" / "DAPE_tiny.pth", weights_only=True)
    assert list(trained) == list(official)
    state = json.loads((tmp_path / "out" / "checkpoint-1" / "training_state.json").read_text())
    assert state["step"] == 1 and state["config"]["data"]["hq_roots"]
