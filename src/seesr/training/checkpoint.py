"""Accelerate set-up, optimiser / LR schedule, and resumable checkpoints shared by both stages (spec §4.4, §5).

A checkpoint ``<output_dir>/checkpoint-<step>/`` holds:

* the model weights in release layout — stage 2: ``unet/`` + ``controlnet/`` (diffusers ``save_pretrained``,
  safetensors, what ``SeeSRUNet/SeeSRControlNet.from_pretrained`` and the pipeline load); stage 1: ``DAPE.pth``
  (official LoRA key layout) + ``lora.safetensors`` (ours);
* ``optimizer.pt``, ``lr_scheduler.pt``, ``scaler.pt`` (fp16 only), ``training_state.json`` (step, config);
* ``random_states_<rank>.safetensors``: Python, NumPy, torch CPU and CUDA global RNG states of every process
  (tensors, with the few scalars in the safetensors metadata).

Resuming never unpickles: the ``.pt`` files are read with ``torch.load(weights_only=True)`` and the RNG states are
plain tensors, so a checkpoint folder from elsewhere cannot run code.

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


RNG_FILE = "random_states_{rank}.safetensors"


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """This process's global RNG states as ``(tensors, metadata)`` for a safetensors file."""
    version, py_words, gauss_next = random.getstate()
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors = {
        "python": torch.tensor(py_words, dtype=torch.int64),
        "numpy": torch.from_numpy(np.asarray(np_key, dtype=np.int64)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = st
    meta = {
        "python": json.dumps({"version": version, "gauss_next": gauss_next}),
        "numpy": json.dumps(
            {"name": np_name, "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": np_gauss}
        ),
    }
    return tensors, meta


def _set_rng_state(path: Path) -> None:
    """Restore the global RNG states from a file written by :func:`save_checkpoint` (no unpickling)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    try:
        py, npy = json.loads(meta["python"]), json.loads(meta["numpy"])
        random.setstate((py["version"], tuple(tensors["python"].tolist()), py["gauss_next"]))
        key = tensors["numpy"].numpy().astype(np.uint32)
        np.random.set_state((npy["name"], key, npy["pos"], npy["has_gauss"], npy["gauss"]))
        torch.set_rng_state(tensors["torch"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a random-state file written by save_checkpoint ({err})") from err
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors)) if f"cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


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
    from safetensors.torch import save_file

    rng_tensors, rng_meta = _rng_state()
    save_file(rng_tensors, str(tmp / RNG_FILE.format(rank=accelerator.process_index)), metadata=rng_meta)
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


def _load_tensors_only(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``), on CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refusals come in several types; report them as one
        raise ValueError(f"{path}: not a weights-only checkpoint file ({type(err).__name__}: {err})") from err


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
    rng_file = path / RNG_FILE.format(rank=accelerator.process_index)
    if not rng_file.is_file():
        rng_file = path / RNG_FILE.format(rank=0)
    if not rng_file.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} has no {RNG_FILE.format(rank=0)} (written by an older seesr?)"
        )
    read_weights(path)
    optimizer.load_state_dict(_load_tensors_only(path / "optimizer.pt"))
    lr_scheduler.load_state_dict(_load_tensors_only(path / "lr_scheduler.pt"))
    if getattr(accelerator, "scaler", None) is not None and (path / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(_load_tensors_only(path / "scaler.pt"))
    _set_rng_state(rng_file)
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
