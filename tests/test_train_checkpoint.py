"""Training checkpoints (seesr.training.checkpoint): resuming reads no pickles; RNG states round-trip exactly."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from seesr.training.checkpoint import load_checkpoint, make_lr_scheduler, make_optimizer, save_checkpoint
from seesr.training.config import RunConfig

RAN: list[str] = []


def _record_unpickling() -> None:
    RAN.append("unpickled")


class _Payload:
    """Unpickling this object runs ``_record_unpickling`` — what an untrusted checkpoint could do."""

    def __reduce__(self):
        return (_record_unpickling, ())


def _accelerator() -> SimpleNamespace:
    return SimpleNamespace(
        is_main_process=True, process_index=0, num_processes=1, scaler=None, wait_for_everyone=lambda: None
    )


def _training_objects():
    param = torch.nn.Parameter(torch.ones(3))
    run = RunConfig(output_dir="unused", learning_rate=1e-3)
    optimizer = make_optimizer([param], run)
    return param, optimizer, make_lr_scheduler(optimizer, run)


def _checkpoint(tmp_path):
    _, optimizer, lr_scheduler = _training_objects()
    return save_checkpoint(
        _accelerator(),
        tmp_path,
        5,
        write_weights=lambda p: None,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        config={"seed": 1},
    )


def test_resume_restores_python_numpy_and_torch_rng_exactly(tmp_path):
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    random.gauss(0, 1)  # leaves a cached gauss_next in Python's state
    ckpt = _checkpoint(tmp_path)
    assert sorted(p.name for p in ckpt.iterdir() if "random" in p.name) == ["random_states_0.safetensors"]
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(), torch.rand(3))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    _, optimizer, lr_scheduler = _training_objects()
    step = load_checkpoint(
        _accelerator(), ckpt, read_weights=lambda p: None, optimizer=optimizer, lr_scheduler=lr_scheduler
    )
    assert step == 5
    got = (random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


@pytest.mark.parametrize("planted", ["random_states_0.pt", "optimizer.pt"])
def test_resume_never_unpickles_objects_from_the_checkpoint(tmp_path, planted):
    ckpt = _checkpoint(tmp_path)
    if planted == "random_states_0.pt":
        # the pre-safetensors layout: a pickled RNG file instead of random_states_0.safetensors
        for old in ckpt.glob("random_states_0.*"):
            old.unlink()
    torch.save({"state": _Payload()}, ckpt / planted)
    assert json.loads((ckpt / "training_state.json").read_text())["step"] == 5
    _, optimizer, lr_scheduler = _training_objects()
    RAN.clear()
    with pytest.raises(Exception) as refused:  # noqa: PT011 - the type is checked below, after the side effect
        load_checkpoint(
            _accelerator(), ckpt, read_weights=lambda p: None, optimizer=optimizer, lr_scheduler=lr_scheduler
        )
    assert RAN == [], "loading a checkpoint executed code from a pickle"
    assert isinstance(refused.value, (ValueError, FileNotFoundError)), repr(refused.value)
