"""The optimisation loop shared by both training stages (spec §4.4, §5).

One optimiser step = ``gradient_accumulation_steps`` micro-batches per process. For each micro-batch the stage's
``micro_step`` computes a loss (its own data preparation, draws and autocast forward); the loop runs backward,
skipping the DDP gradient all-reduce on all but the last micro-batch (``no_sync``). Then gradients are clipped to
``max_grad_norm``, the optimiser and LR schedule step, the loss is averaged over processes and logged, and every
``checkpointing_steps`` a resumable checkpoint is written (:mod:`seesr.training.checkpoint`). The final checkpoint
is written at ``max_train_steps``; the stage writes its final weights itself.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seesr.training.checkpoint import find_checkpoint, make_accelerator, save_checkpoint

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, dict[str, float]], None]
"""Called on every process after each optimiser step with ``(step, logs)`` (1-based step)."""


@dataclass
class MicroStepResult:
    """What a stage's micro-step returns.

    Attributes:
        loss: scalar loss of the micro-batch, with its graph (the loop divides it by the accumulation count).
        terms: extra scalars to average like the loss and log (e.g. DAPE's ``l_fea``, ``l_logits``).
    """

    loss: torch.Tensor
    terms: Mapping[str, torch.Tensor] = field(default_factory=dict)


MicroStep = Callable[[dict[str, Any], int, int], MicroStepResult]
"""``(batch, step, micro) -> result``: step is the 0-based optimiser step, micro the micro-batch index."""


def start_run(run: Any, resume: str | None) -> tuple[Any, Path | None]:
    """``(accelerator, checkpoint to resume from or None)`` for a run (see :func:`find_checkpoint`).

    Raises:
        ValueError: a fresh run (``resume=None``) in an output folder that already holds checkpoints.
        FileNotFoundError: an explicit ``resume`` folder is not a checkpoint.
    """
    out = Path(run.output_dir)
    accelerator = make_accelerator(run)
    ckpt = find_checkpoint(out, resume)
    if resume is None and find_checkpoint(out, "latest") is not None:
        raise ValueError(
            f"{out} already holds checkpoints; pass resume='latest' (CLI --resume) or a new output_dir"
        )
    return accelerator, ckpt


def run_training_loop(
    *,
    accelerator: Any,
    run: Any,
    batches: Iterable[dict[str, Any]],
    start: int,
    micro_step: MicroStep,
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    ddp_modules: Sequence[torch.nn.Module],
    write_weights: Callable[[Path], None],
    resolved_config: dict[str, Any],
    after_step: Callable[[int], None] | None = None,
    on_step_end: StepCallback | None = None,
) -> None:
    """Run optimiser steps ``start .. run.max_train_steps - 1`` and write the final checkpoint (collective).

    Args:
        accelerator: the run's ``accelerate.Accelerator``.
        run: the :class:`~seesr.training.config.RunConfig`.
        batches: the loader, positioned at ``start`` (one item per micro-batch).
        start: optimiser steps already done (0 for a fresh run, the checkpoint's step on resume).
        micro_step: the stage's loss for one micro-batch.
        params: the trainable parameters (clipped together).
        optimizer, lr_scheduler: stepped once per optimiser step.
        ddp_modules: the ``accelerator.prepare``-d trainable modules whose gradient sync is deferred.
        write_weights: writes the model files of a checkpoint into the given folder (main process).
        resolved_config: stored in every checkpoint's ``training_state.json``.
        after_step: called with the 1-based step after logging and checkpointing (stage 2: validation).
        on_step_end: see :data:`StepCallback`.

    Raises:
        FloatingPointError: the loss is not finite.
    """
    device = accelerator.device
    accumulation = run.gradient_accumulation_steps
    out = Path(run.output_dir)

    def checkpoint(step: int) -> None:
        save_checkpoint(
            accelerator,
            out,
            step,
            write_weights=write_weights,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            config=resolved_config,
            total_limit=run.checkpoints_total_limit,
        )

    batch_iter = iter(batches)
    for step in range(start, run.max_train_steps):
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        term_sums: dict[str, torch.Tensor] = {}
        for micro in range(accumulation):
            batch = next(batch_iter)
            with contextlib.ExitStack() as sync:
                if micro < accumulation - 1:
                    for module in ddp_modules:
                        sync.enter_context(accelerator.no_sync(module))
                result = micro_step(batch, step, micro)
                accelerator.backward(result.loss / accumulation)
            loss_sum += result.loss.detach() / accumulation
            for name, value in result.terms.items():
                term_sums[name] = term_sums.get(name, 0) + value.detach() / accumulation
        grad_norm = float("nan")
        if run.max_grad_norm > 0:
            grad_norm = float(accelerator.clip_grad_norm_(params, run.max_grad_norm))
        optimizer.step()
        if not accelerator.optimizer_step_was_skipped:
            lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        loss = float(accelerator.reduce(loss_sum, reduction="mean"))
        logs = {"loss": loss}
        if term_sums:
            reduced = accelerator.reduce(torch.stack(list(term_sums.values())), reduction="mean").tolist()
            logs.update(zip(term_sums, reduced))
        logs["lr"] = float(lr_scheduler.get_last_lr()[0])
        logs["grad_norm"] = grad_norm
        logs["step_time_s"] = time.perf_counter() - t0
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {done}")
        if run.logging_steps and (done % run.logging_steps == 0 or done == run.max_train_steps):
            terms = "".join(f" {k} {logs[k]:.5f}" for k in term_sums)
            logger.info("step %d/%d loss %.5f%s lr %.3g", done, run.max_train_steps, loss, terms, logs["lr"])
            if run.report_to == "tensorboard":
                accelerator.log(logs, step=done)
        if run.checkpointing_steps and done % run.checkpointing_steps == 0 and done < run.max_train_steps:
            checkpoint(done)
        if after_step is not None:
            after_step(done)
        if on_step_end is not None:
            on_step_end(done, logs)
    checkpoint(run.max_train_steps)
