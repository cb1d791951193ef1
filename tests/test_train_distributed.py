"""Multi-process training (issue 6): a real 2-process CPU run (gloo, launched with torchrun) has world size 2 and
gives the same weights as 1 process at the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT
from tests.test_train_seesr import load_folder_weights, one_thread, tiny_seesr_config, write_yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_at_the_same_global_batch(tiny_weights_dir, tmp_path):
    from seesr.cli import main

    # Adam's first steps move every weight by ~lr * sign(g); for gradients at the 1e-8 level (some biases here)
    # the sign is float noise, so a larger epsilon keeps the comparison about the gradients, not that noise
    common = dict(adam_epsilon=1e-3, max_train_steps=2)
    one = write_yaml(
        tmp_path / "one.yaml",
        tiny_seesr_config(tiny_weights_dir, tmp_path / "one", train_batch_size=2, **common),
    )
    two = write_yaml(
        tmp_path / "two.yaml",
        tiny_seesr_config(tiny_weights_dir, tmp_path / "two", train_batch_size=1, **common),
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT / "src"))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), "-m", "seesr", "train", "--config", str(two),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with one_thread():
        assert main(["train", "--config", str(one)]) == 0

    state_two = json.loads((tmp_path / "two" / "checkpoint-2" / "training_state.json").read_text())
    state_one = json.loads((tmp_path / "one" / "checkpoint-2" / "training_state.json").read_text())
    assert state_two["num_processes"] == 2 and state_one["num_processes"] == 1
    assert (tmp_path / "two" / "checkpoint-2" / "random_states_1.safetensors").is_file()
    w1, w2 = load_folder_weights(tmp_path / "one"), load_folder_weights(tmp_path / "two")
    start = load_folder_weights(tiny_weights_dir / "seesr-tiny")
    assert w1.keys() == w2.keys() == start.keys()
    moved = max(float((w1[k] - start[k]).abs().max()) for k in w1)
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert moved > 1e-5  # two AdamW steps moved the weights ...
    # ... identically up to float rounding (all-reduce of two half-batch means vs one batch mean; weights are O(1))
    assert diff <= 1e-6 and diff <= 0.01 * moved, (diff, moved)
    for k in w1:
        if ".image_attentions." not in k and k.startswith("unet."):
            assert torch.equal(w1[k], w2[k])


@pytest.mark.slow
def test_dape_two_processes_match_one_process(tiny_weights_dir, tmp_path):
    """Stage 1 likewise (dropout off: its masks are drawn per process and micro-batch)."""
    from seesr.cli import main
    from tests.test_train_dape import tiny_dape_config

    def cfg(name, batch):
        c = tiny_dape_config(tiny_weights_dir, tmp_path / name, train_batch_size=batch, adam_epsilon=1e-3)
        c.update(drop_path_rate=0.0, head_dropout=0.0)
        return write_yaml(tmp_path / f"{name}.yaml", c)

    one, two = cfg("one", 2), cfg("two", 1)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT / "src"))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), "-m", "seesr", "train-dape", "--config", str(two),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with one_thread():
        assert main(["train-dape", "--config", str(one)]) == 0
    state = json.loads((tmp_path / "two" / "checkpoint-2" / "training_state.json").read_text())
    assert state["num_processes"] == 2
    w1 = torch.load(tmp_path / "one" / "DAPE.pth", weights_only=True)
    w2 = torch.load(tmp_path / "two" / "DAPE.pth", weights_only=True)
    moved = max(float(w1[k].abs().max()) for k in w1 if k.endswith("lora_B") and "visual_encoder" in k)
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert moved > 1e-4 and diff <= 1e-6, (diff, moved)


def test_step_sampler_splits_global_batches_independently_of_world_size():
    from seesr.training.data import StepBatchSampler

    def batches(world, batch, accum=1, start=0, shuffle=True):
        per_rank = [
            list(
                StepBatchSampler(
                    10, batch_size=batch, accumulation=accum, rank=r, world_size=world, seed=3, shuffle=shuffle,
                    start_step=start, max_steps=6,
                )
            )
            for r in range(world)
        ]  # fmt: skip
        # per optimiser step: the sorted (index, position) pairs of all ranks and micro-steps
        steps = []
        for s in range(6 - start):
            items = [it for r in range(world) for b in per_rank[r][s * accum : (s + 1) * accum] for it in b]
            steps.append(sorted(items, key=lambda it: it[1]))
        return steps

    one = batches(1, 4)
    assert one == batches(2, 2) == batches(4, 1) == batches(2, 1, accum=2)
    assert one[2:] == batches(2, 2, start=2)  # resume = start at the step
    positions = [p for step in one for _, p in step]
    assert positions == list(range(24))
    epoch0 = [i for step in one for i, p in step if p < 10]
    epoch1 = [i for step in one for i, p in step if 10 <= p < 20]
    assert (
        sorted(epoch0) == sorted(epoch1) == list(range(10)) and epoch0 != epoch1
    )  # a fresh permutation per epoch
    assert [i for step in batches(1, 4, shuffle=False) for i, _ in step][:12] == [*range(10), 0, 1]
