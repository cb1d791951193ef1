"""Accelerate set-up, optimiser / LR schedule, and resumable checkpoints shared by both stages (spec §4.4, §5).

A checkpoint ``<output_dir>/checkpoint-<step>/`` holds:

* the model weights in release layout — stage 2: ``unet/`` + ``controlnet/`` (diffusers ``save_pretrained``,
  safetensors, what ``SeeSRUNet/SeeSRControlNet.from_pretrained`` and the pipeline load); stage 1: ``DAPE.pth``
  (official LoRA key layout) + ``lora.safetensors`` (ours);
* ``optimizer.pt``, ``lr_scheduler.pt``, ``scaler.pt`` (fp16 only), ``training_state.json`` (step, config);
* ``random_states_<rank>.pt``: Python, NumPy, torch CPU and CUDA global RNG states of every process.

The training draws themselves (diffusion noise, timesteps, null-text coins, degradation, crops, data order) come
from generators keyed by ``(seed, step, sample position)``, so restoring the step restores them exactly. A folder is
written under a temporary name and renamed when complete, so a run killed while saving leaves no half checkpoint.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "training_state.json"


def make_accelerator(run_cfg: Any, *, log_dir: Path | None = None) -> Any:
    """An ``accelerate.Accelerator`` for the run: mixed precision (forced ``no`` without CUDA), TensorBoard when
    ``report_to == 'tensorboard'``; DDP/multi-node/multi-CPU as launched (``accelerate launch`` or ``torchrun``)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    mixed = run_cfg.mixed_precision if torch.cuda.is_available() else "no"
    if mixed != run_cfg.mixed_precision:
        logger.info("no CUDA device: mixed_precision %s -> no", run_cfg.mixed_precision)
    # accelerate sets up multi-process CPU runs (gloo) only when told the run is on CPU
    cpu = not torch.cuda.is_available() and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    )
    log_with = "tensorboard" if run_cfg.report_to == "tensorboard" else None
    project = ProjectConfiguration(
        project_dir=str(run_cfg.output_dir), logging_dir=str(log_dir or Path(run_cfg.output_dir) / "logs")
    )
    return Accelerator(cpu=cpu, mixed_precision=mixed, log_with=log_with, project_config=project)


def weight_dtype_for(accelerator: Any) -> torch.dtype:
    """dtype of the frozen models: fp16/bf16 under mixed precision, else fp32 (train_seesr.py)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        str(accelerator.mixed_precision), torch.float32
    )


def make_optimizer(params: list[torch.nn.Parameter], run_cfg: Any) -> torch.optim.Optimizer:
    """AdamW over ``params`` with the run's lr, betas, eps and weight decay."""
    if not params:
        raise ValueError("no trainable parameters")
    return torch.optim.AdamW(
        params,
        lr=run_cfg.learning_rate,
        betas=(run_cfg.adam_beta1, run_cfg.adam_beta2),
        eps=run_cfg.adam_epsilon,
        weight_decay=run_cfg.weight_decay,
    )


def lr_factor(step: int, run_cfg: Any) -> float:
    """Multiplier of the base LR at optimiser step ``step`` (0-based): linear warm-up over ``lr_warmup_steps``
    (BasicSR style: ``(step + 1) / warmup``), then constant or ``lr_gamma`` per passed milestone."""
    factor = 1.0
    if run_cfg.lr_scheduler == "multistep":
        factor = run_cfg.lr_gamma ** sum(step >= m for m in run_cfg.lr_milestones)
    if run_cfg.lr_warmup_steps and step < run_cfg.lr_warmup_steps:
        factor *= (step + 1) / run_cfg.lr_warmup_steps
    return factor


def make_lr_scheduler(optimizer: torch.optim.Optimizer, run_cfg: Any) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` of :func:`lr_factor`; step it once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, run_cfg))


def find_checkpoint(output_dir: str | Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: ``None`` (fresh run), ``"latest"`` (highest step in ``output_dir``; ``None``
    when there is none yet) or an explicit folder.

    Raises:
        FileNotFoundError: an explicit folder is not a complete checkpoint.
    """
    if resume is None:
        return None
    if resume != "latest":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"not a training checkpoint (no {STATE_FILE}): {path}")
        return path
    out = Path(output_dir)
    found = sorted(
        (int(m.group(1)), p)
        for p in (out.iterdir() if out.is_dir() else [])
        if (m := CHECKPOINT_RE.match(p.name)) and (p / STATE_FILE).is_file()
    )
    return found[-1][1] if found else None


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    accelerator: Any,
    output_dir: str | Path,
    step: int,
    *,
    write_weights: Callable[[Path], None],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    config: dict[str, Any],
    total_limit: int = 0,
) -> Path:
    """Write ``checkpoint-<step>`` (see the module docstring); collective: call on every process.

    Args:
        write_weights: main-process callback writing the model files into the given folder.
        total_limit: keep only the newest ``total_limit`` checkpoints (0 = all).
    """
    out = Path(output_dir)
    final = out / f"checkpoint-{step}"
    tmp = out / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"random_states_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        write_weights(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), tmp / "lr_scheduler.pt")
        if getattr(accelerator, "scaler", None) is not None:
            torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
        state = {"step": step, "num_processes": accelerator.num_processes, "config": config}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if total_limit:
            old = sorted(
                (int(m.group(1)), p)
                for p in out.iterdir()
                if (m := CHECKPOINT_RE.match(p.name)) and p != final
            )
            for _, p in old[: max(0, len(old) - (total_limit - 1))]:
                shutil.rmtree(p, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    accelerator: Any,
    path: Path,
    *,
    read_weights: Callable[[Path], None],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
) -> int:
    """Restore weights (via ``read_weights``), optimiser, LR schedule, grad scaler and RNG states; returns the step.

    A checkpoint written with a different number of processes resumes too (the data position and the keyed draws
    do not depend on it); the per-process global RNG states are then taken from process 0's file.
    """
    state = json.loads((path / STATE_FILE).read_text())
    read_weights(path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    lr_scheduler.load_state_dict(torch.load(path / "lr_scheduler.pt", weights_only=True))
    if getattr(accelerator, "scaler", None) is not None and (path / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))
    rng_file = path / f"random_states_{accelerator.process_index}.pt"
    if not rng_file.is_file():
        rng_file = path / "random_states_0.pt"
    # our own file: NumPy and Python RNG states are not plain tensors
    _set_rng_state(torch.load(rng_file, weights_only=False))
    logger.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])


def write_resolved_config(
    accelerator: Any, out: Path, resolved: dict[str, Any], report_to: str, name: str
) -> None:
    """Write the resolved run config beside the outputs (main process) and start the TensorBoard tracker."""
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(resolved, indent=1) + "\n")
    if report_to == "tensorboard":
        accelerator.init_trackers(name, config=_flat_hparams(resolved))


def _flat_hparams(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TensorBoard hparams accept only scalars/strings: flatten nested dicts, stringify lists and None."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flat_hparams(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)):
            flat[f"{prefix}{k}"] = v
        else:
            flat[f"{prefix}{k}"] = str(v)
    return flat
