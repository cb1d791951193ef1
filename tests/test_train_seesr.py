"""Stage-2 training (issue 6): one step equals the official train_seesr.py step (fixtures README §11); trainable set;
SD-2-size trainable count; the training loop's outputs load like the release."""

from __future__ import annotations

import contextlib
import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from seesr.io import load_image
from seesr.models.controlnet import SeeSRControlNet
from seesr.models.unet import SeeSRUNet
from seesr.training.config import RAMConfig
from seesr.training.models import (
    configure_trainable,
    count_parameters,
    load_frozen_sd2,
    load_soft_prompt,
    sd2_size_trainable_count,
)
from seesr.training.steps import SeeSRDraws, captions_with_null_text, seesr_ram_input, seesr_training_step
from tests.test_models import SD2_UNET

STEMS = ("0000001", "0000002")


@contextlib.contextmanager
def one_thread():
    """The fixtures were built with torch.set_num_threads(1); resizes are bit-exact only with one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Tiny models run faster on one thread on a shared 2-core machine (and the fixtures were built on one)."""
    with one_thread():
        yield


def read(path) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(load_image(path).rgb)).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module")
def step_result(fixtures_dir):
    ref = load_file(fixtures_dir / "reference" / "train_step_seesr.safetensors")
    info = json.loads((fixtures_dir / "reference" / "train_step_seesr.json").read_text())
    ram = fixtures_dir / "ram-tiny"
    unet = SeeSRUNet.from_pretrained(fixtures_dir / "seesr-tiny", subfolder="unet")
    controlnet = SeeSRControlNet.from_pretrained(fixtures_dir / "seesr-tiny", subfolder="controlnet")
    vae, text_encoder, tokenizer, scheduler = load_frozen_sd2(fixtures_dir / "sd2-tiny")
    dape = load_soft_prompt(
        RAMConfig(
            ram_checkpoint=str(ram / "ram_tiny.pth"),
            dape_checkpoint=str(ram / "DAPE_tiny.pth"),
            tag_list=str(ram / "ram_tag_list.txt"),
            thresholds=str(ram / "ram_tag_list_threshold.txt"),
            arch=str(ram / "arch.json"),
        )
    )
    train = fixtures_dir / "reference" / "train"
    gt = torch.stack([read(train / "gt" / f"{s}.png") for s in STEMS])
    cond = torch.stack([read(train / "sr_bicubic" / f"{s}.png") for s in STEMS])
    prompts = [(train / "tag" / f"{s}.txt").read_text() for s in STEMS]
    trainable = configure_trainable(unet, controlnet)
    controlnet.train()
    draws = SeeSRDraws(ref["vae_posterior_eps"], ref["timesteps"], ref["noise"], torch.tensor([0.7, 0.2]))
    with one_thread():
        ram_input = seesr_ram_input(cond)
    out = seesr_training_step(
        unet=unet,
        controlnet=controlnet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        noise_scheduler=scheduler,
        soft_prompt=dape,
        gt=gt,
        cond=cond,
        prompts=prompts,
        draws=draws,
        null_text_ratio=0.5,
    )
    out.loss.backward()
    frozen = [p for m in (vae, text_encoder, dape) for p in m.parameters()]
    frozen += [p for n, p in unet.named_parameters() if ".image_attentions." not in n]
    models = dict(
        unet=unet,
        controlnet=controlnet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        soft_prompt=dape,
    )
    return dict(
        ref=ref, info=info, out=out, gt=gt, cond=cond, prompts=prompts, draws=draws, models=models,
        ram_input=ram_input, trainable=trainable, frozen=frozen,
    )  # fmt: skip


def _norm(params) -> float:
    return float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)))


def test_inputs_match_official_dataset(step_result):
    ref, info = step_result["ref"], step_result["info"]
    assert torch.equal(step_result["gt"] * 2 - 1, ref["pixel_values"])
    assert torch.equal(step_result["cond"], ref["conditioning_pixel_values"])
    x = step_result["ram_input"]
    assert torch.equal(x[:, :, :24, :24], ref["ram_values_patch"])
    for i, digest in enumerate(info["data"]["ram_values"]["digest"]):
        assert hashlib.sha256(x[i].contiguous().numpy().tobytes()).hexdigest() == digest["sha256_le_bytes"]


def test_one_step_matches_official(step_result):
    ref, info, out = step_result["ref"], step_result["info"], step_result["out"]
    assert out.captions == info["data"]["prompts"]
    assert (out.image_embeds - ref["ram_image_embeds"]).abs().max() <= 1e-5 * ref[
        "ram_image_embeds"
    ].abs().max()
    assert (out.latents - ref["latents"]).abs().max() <= 1e-5
    assert (out.model_pred - ref["model_pred"]).abs().max() <= 1e-5 * max(1.0, ref["model_pred"].abs().max())
    assert abs(out.loss.item() - info["loss"]) <= 1e-5 * abs(info["loss"])
    assert abs(out.loss.item() - ref["loss"].item()) <= 1e-5 * abs(info["loss"])


def test_one_step_gradients_match_official(step_result):
    info, ref, trainable = step_result["info"], step_result["ref"], step_result["trainable"]
    norms = info["grad_norms"]
    cn = [p for n, p in trainable if n.startswith("controlnet.")]
    rca = [p for n, p in trainable if n.startswith("unet.")]
    for got, want in (
        (_norm(cn), norms["controlnet_total"]),
        (_norm(rca), norms["unet_image_attentions_total"]),
        (_norm(cn + rca), norms["global_norm_clip_grad_norm_"]),
    ):
        assert abs(got - want) <= 1e-4 * want, (got, want)
    named = dict(trainable)
    for key, want in norms["per_parameter"].items():
        got = float(named[key].grad.double().norm())
        assert abs(got - want) <= 1e-4 * max(want, 1e-3 * norms["global_norm_clip_grad_norm_"]), key
    full = [k for k in ref if k.startswith("grad/")]
    assert len(full) == 7
    for key in full:
        g_ref = ref[key]
        g = named[key[len("grad/") :]].grad
        assert (g - g_ref).abs().max() <= 1e-4 * g_ref.abs().max(), key


def test_trainable_set_is_controlnet_plus_rca(step_result):
    info, trainable = step_result["info"], step_result["trainable"]
    assert len(trainable) == 674
    assert count_parameters(trainable) == 962_656
    # same names (registration order differs: our RCA lists are attached after the stock sub-modules)
    assert sorted(n for n, _ in trainable) == sorted(
        [f"controlnet.{n}" for n in info["trainable"]["controlnet_names"]]
        + [f"unet.{n}" for n in info["trainable"]["unet_trainable_names"]]
    )
    assert all(p.requires_grad and p.grad is not None for _, p in trainable)
    assert all(not p.requires_grad and p.grad is None for p in step_result["frozen"])


def test_null_text_rule():
    u = torch.tensor([0.7, 0.2, 0.5, 0.4999])
    assert captions_with_null_text(["a,", "b,", "c,", "d,"], u, 0.5) == ["a,", "", "c,", ""]
    assert captions_with_null_text(["a,"], torch.tensor([0.0]), 0.0) == ["a,"]
    with pytest.raises(ValueError, match="null-text"):
        captions_with_null_text(["a,"], u, 0.5)


def test_sd2_size_trainable_count_on_meta():
    n_controlnet, n_rca = sd2_size_trainable_count(SD2_UNET)
    assert (n_controlnet, n_rca) == (489_031_440, 260_849_600)


# ------------------------------------------------------------------------------------------------ the loop
def tiny_seesr_config(fixtures_dir, output_dir, **run) -> dict:
    """A stage-2 run config (plain dict, as YAML) over the tiny fixtures: fine-tune seesr-tiny on reference/train."""
    ram = fixtures_dir / "ram-tiny"
    run_cfg = dict(
        output_dir=str(output_dir),
        max_train_steps=2,
        train_batch_size=2,
        mixed_precision="no",
        report_to="none",
        checkpointing_steps=0,
        logging_steps=1,
    )
    run_cfg.update(run)
    return dict(
        pretrained_model=str(fixtures_dir / "sd2-tiny"),
        init_from=str(fixtures_dir / "seesr-tiny"),
        ram=dict(
            ram_checkpoint=str(ram / "ram_tiny.pth"),
            dape_checkpoint=str(ram / "DAPE_tiny.pth"),
            tag_list=str(ram / "ram_tag_list.txt"),
            thresholds=str(ram / "ram_tag_list_threshold.txt"),
            arch=str(ram / "arch.json"),
        ),
        data=dict(paired_roots=[str(fixtures_dir / "reference" / "train")], resolution=64),
        run=run_cfg,
    )


def write_yaml(path, data: dict):
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def load_folder_weights(folder) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("unet", "controlnet"):
        for k, v in load_file(folder / name / "diffusion_pytorch_model.safetensors").items():
            out[f"{name}.{k}"] = v
    return out


@pytest.fixture(scope="module")
def killed_and_resumed(tiny_weights_dir, tmp_path_factory):
    """Run A: 3 steps uninterrupted. Run B: killed after step 3 (checkpoint at 2), then resumed via the CLI."""
    from seesr.cli import main
    from seesr.training.config import TrainSeeSRConfig, load_train_config
    from seesr.training.train_seesr import train_seesr

    root = tmp_path_factory.mktemp("resume")
    runs = {}
    with one_thread():
        for name in ("a", "b"):
            cfg_path = write_yaml(
                root / f"{name}.yaml",
                tiny_seesr_config(
                    tiny_weights_dir, root / name, max_train_steps=3, train_batch_size=1, gradient_accumulation_steps=2,
                    checkpointing_steps=2,
                ),
            )  # fmt: skip
            runs[name] = cfg_path
        assert main(["train", "--config", str(runs["a"])]) == 0

        def kill(step, logs):
            if step == 3:
                raise KeyboardInterrupt("simulated kill")

        with pytest.raises(KeyboardInterrupt):
            train_seesr(load_train_config(TrainSeeSRConfig, runs["b"]), on_step_end=kill)
        assert not (root / "b" / "unet").exists()  # died before the final save
        assert main(["train", "--config", str(runs["b"]), "--resume"]) == 0
    return root


def test_killed_run_resumes_bit_identical(killed_and_resumed):
    root = killed_and_resumed
    a, b = load_folder_weights(root / "a"), load_folder_weights(root / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = load_folder_weights(root / "a" / "checkpoint-2")
    assert any(not torch.equal(a[k], start[k]) for k in a)  # step 3 did change the weights
    opt_a = torch.load(root / "a" / "checkpoint-3" / "optimizer.pt", weights_only=True)
    opt_b = torch.load(root / "b" / "checkpoint-3" / "optimizer.pt", weights_only=True)
    for i, st in opt_a["state"].items():
        assert all(torch.equal(st[k], opt_b["state"][i][k]) for k in st)


def test_trained_folder_loads_like_the_release(killed_and_resumed, tiny_weights_dir):
    out = killed_and_resumed / "a"
    unet = SeeSRUNet.from_pretrained(out, subfolder="unet")
    controlnet = SeeSRControlNet.from_pretrained(out, subfolder="controlnet")
    ref = SeeSRUNet.from_pretrained(tiny_weights_dir / "seesr-tiny", subfolder="unet")
    assert unet.config.use_image_cross_attention and controlnet.config.use_image_cross_attention
    trained, start = unet.state_dict(), ref.state_dict()
    assert trained.keys() == start.keys()
    # frozen UNet weights are untouched; the RCA moved
    assert all(torch.equal(trained[k], start[k]) for k in trained if ".image_attentions." not in k)
    assert any(not torch.equal(trained[k], start[k]) for k in trained if ".image_attentions." in k)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["max_train_steps"] == 3 and cfg["null_text_ratio"] == 0.5


def make_tiny_sd2_base(fixtures_dir, folder, *, prediction_type="epsilon"):
    """An SD-2-base-like folder: sd2-tiny's VAE/text encoder/tokenizer + a stock UNet (seesr-tiny minus RCA)."""
    import shutil

    from diffusers import UNet2DConditionModel

    src = fixtures_dir / "sd2-tiny"
    folder.mkdir(parents=True)
    for sub in ("vae", "text_encoder", "tokenizer"):
        (folder / sub).symlink_to(src / sub, target_is_directory=True)
    (folder / "scheduler").mkdir(parents=True)
    sched = json.loads((src / "scheduler" / "scheduler_config.json").read_text())
    sched["prediction_type"] = prediction_type
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    config = json.loads((fixtures_dir / "seesr-tiny" / "unet" / "config.json").read_text())
    config.pop("use_image_cross_attention")
    unet = UNet2DConditionModel.from_config(config)
    sd = load_file(fixtures_dir / "seesr-tiny" / "unet" / "diffusion_pytorch_model.safetensors")
    unet.load_state_dict({k: v for k, v in sd.items() if ".image_attentions." not in k}, strict=True)
    unet.save_pretrained(folder / "unet")
    shutil.copy(src / "model_index.json", folder / "model_index.json")
    return folder


def test_fresh_start_from_sd2_with_online_degradation_tags_and_v_loss(tiny_weights_dir, tmp_path):
    """SD-2 start (fresh RCA, ControlNet from the UNet), HQ-only data degraded online, tags from a frozen RAM, and
    a v-prediction base: one step runs and the outputs load strictly."""
    from seesr.cli import main
    from seesr.training.models import unet_from_sd2

    base = make_tiny_sd2_base(tiny_weights_dir, tmp_path / "sd2", prediction_type="v_prediction")
    fresh = unet_from_sd2(base)
    stock = load_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    state = fresh.state_dict()
    assert all(torch.equal(state[k], v) for k, v in stock.items())
    assert len(state) - len(stock) == 286  # the fresh RCA tensors
    cfg = tiny_seesr_config(tiny_weights_dir, tmp_path / "out", max_train_steps=1, report_to="tensorboard")
    cfg.update(
        pretrained_model=str(base),
        init_from=None,
        validation_steps=1,
        validation_images=[str(tiny_weights_dir / "reference" / "lr" / "coffee_48x64.png")],
        validation_inference_steps=1,
        data=dict(
            hq_roots=[str(tiny_weights_dir / "reference" / "train" / "gt")],
            resolution=64,
            tags="online",
            hq_min_pixels=0,  # the fixture GTs are 64 px, far below the official 384² filter
            hq_min_bytes=0,
        ),
    )
    with one_thread():
        assert main(["train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg))]) == 0
    unet = SeeSRUNet.from_pretrained(tmp_path / "out", subfolder="unet")
    controlnet = SeeSRControlNet.from_pretrained(tmp_path / "out", subfolder="controlnet")
    assert unet.num_rca_modules == 11 and controlnet.num_rca_modules == 5
    assert load_image(tmp_path / "out" / "validation" / "step-1" / "coffee_48x64.png").rgb.shape == (
        192,
        256,
        3,
    )
    assert list((tmp_path / "out" / "logs").rglob("events.out.tfevents.*"))


def test_v_prediction_base_trains_on_the_velocity(step_result, fixtures_dir):
    """With a v-prediction scheduler the target is alpha_t * noise - sigma_t * x0 and the loss is MSE to it."""
    from diffusers import DDPMScheduler

    ref = step_result["ref"]
    sched = DDPMScheduler.from_pretrained(
        fixtures_dir / "sd2-tiny", subfolder="scheduler", prediction_type="v_prediction"
    )
    with torch.no_grad():
        out = seesr_training_step(
            **step_result["models"], noise_scheduler=sched, gt=step_result["gt"], cond=step_result["cond"],
            prompts=step_result["prompts"], draws=step_result["draws"],
        )  # fmt: skip
    t = ref["timesteps"]
    a = sched.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - sched.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    velocity = a * ref["noise"] - s * ref["latents"]
    assert (out.target - velocity).abs().max() <= 1e-5
    assert not torch.allclose(out.target, ref["noise"])
    assert (
        abs(out.loss.item() - torch.mean((out.model_pred - velocity) ** 2).item()) <= 1e-5 * out.loss.item()
    )
    assert (out.model_pred - ref["model_pred"]).abs().max() <= 1e-5 * max(1.0, ref["model_pred"].abs().max())


def test_controlnet_only_ablation_trains_without_rca(tiny_weights_dir, tmp_path):
    """Paper Table 7 exp. 1: no DAPE, no RCA, empty captions; the UNet gets no trainable parameters."""
    from seesr.cli import main

    base = make_tiny_sd2_base(tiny_weights_dir, tmp_path / "sd2")
    cfg = tiny_seesr_config(tiny_weights_dir, tmp_path / "out", max_train_steps=1)
    cfg.update(
        pretrained_model=str(base),
        init_from=None,
        use_rca=False,
        data=dict(paired_roots=[str(tiny_weights_dir / "reference" / "train")], resolution=64, tags="none"),
    )
    with one_thread():
        assert main(["train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg))]) == 0
    unet = SeeSRUNet.from_pretrained(tmp_path / "out", subfolder="unet")
    controlnet = SeeSRControlNet.from_pretrained(tmp_path / "out", subfolder="controlnet")
    assert unet.num_rca_modules == 0 and controlnet.num_rca_modules == 0
    stock = load_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in stock.items())


def test_shipped_configs_load_and_hold_the_recipes():
    from seesr.training.checkpoint import lr_factor
    from seesr.training.config import TrainDAPEConfig, TrainSeeSRConfig, load_train_config
    from tests.conftest import REPO_ROOT

    configs = {p.stem: p for p in (REPO_ROOT / "configs").glob("*.yaml")}
    assert len(configs) >= 8
    loaded = {
        name: load_train_config(TrainDAPEConfig if "dape" in name else TrainSeeSRConfig, path)
        for name, path in configs.items()
    }
    paper = loaded["train_seesr_paper_8gpu"].run
    assert paper.train_batch_size * paper.gradient_accumulation_steps * 8 == 32
    assert (paper.max_train_steps, paper.learning_rate, paper.weight_decay) == (100_000, 5e-5, 1e-2)
    single = loaded["train_seesr_24gb"].run
    assert (
        single.train_batch_size * single.gradient_accumulation_steps == 32 and single.gradient_checkpointing
    )
    assert loaded["ablation_controlnet_only"].use_rca is False
    assert loaded["ablation_controlnet_only"].data.tags == "none"
    assert loaded["ablation_plain_ram"].ram.dape_checkpoint is None
    dape = loaded["train_dape_paper"].run
    assert (dape.max_train_steps, dape.learning_rate, dape.train_batch_size * 8) == (20_000, 1e-4, 32)
    official = loaded["train_dape_official"].run
    assert (official.max_train_steps, official.train_batch_size, official.lr_milestones) == (
        300_000,
        8,
        (20000, 30000),
    )
    factors = [lr_factor(s, official) for s in (0, 48, 49, 19_999, 20_000, 29_999, 30_000)]
    assert factors == [1 / 50, 49 / 50, 1.0, 1.0, 0.5, 0.5, 0.25]


def test_config_rejects_unknown_keys_and_bad_data(tmp_path):
    from seesr.training.config import TrainSeeSRConfig, load_train_config

    bad = write_yaml(tmp_path / "bad.yaml", {"run": {"max_train_step": 10}})
    with pytest.raises(ValueError, match="max_train_step"):
        load_train_config(TrainSeeSRConfig, bad)
    both = write_yaml(tmp_path / "both.yaml", {"data": {"paired_roots": ["a"], "hq_roots": ["b"]}})
    with pytest.raises(ValueError, match="exactly one"):
        load_train_config(TrainSeeSRConfig, both)
    partial = load_train_config(
        TrainSeeSRConfig, write_yaml(tmp_path / "p.yaml", {"run": {"max_train_steps": 7}})
    )
    assert partial.run.max_train_steps == 7 and partial.run.learning_rate == 5e-5


def test_gradient_checkpointing_gives_the_same_gradients(step_result, fixtures_dir):
    """Recomputing activations in backward (RCA hooks included) must not change the step's gradients."""
    ref_grads = {n: p.grad.clone() for n, p in step_result["trainable"]}
    unet = SeeSRUNet.from_pretrained(fixtures_dir / "seesr-tiny", subfolder="unet")
    controlnet = SeeSRControlNet.from_pretrained(fixtures_dir / "seesr-tiny", subfolder="controlnet")
    trainable = configure_trainable(unet, controlnet)
    unet.enable_gradient_checkpointing()
    controlnet.enable_gradient_checkpointing()
    assert unet.is_gradient_checkpointing and controlnet.is_gradient_checkpointing
    unet.train()
    controlnet.train()
    models = dict(step_result["models"], unet=unet, controlnet=controlnet)
    out = seesr_training_step(
        **models, noise_scheduler=load_frozen_sd2(fixtures_dir / "sd2-tiny")[3], gt=step_result["gt"],
        cond=step_result["cond"], prompts=step_result["prompts"], draws=step_result["draws"],
    )  # fmt: skip
    out.loss.backward()
    assert abs(out.loss.item() - step_result["out"].loss.item()) <= 1e-6
    for name, p in trainable:
        g_ref = ref_grads[name]
        assert (p.grad - g_ref).abs().max() <= 1e-5 * max(1e-6, g_ref.abs().max()), name


def test_cli_errors_are_one_line(killed_and_resumed, tmp_path, capsys):
    from seesr.cli import main

    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err
    # a folder with checkpoints is not silently restarted
    assert main(["train", "--config", str(killed_and_resumed / "a.yaml")]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["train-dape", "--config", str(tmp_path / "missing.yaml")]) == 1
