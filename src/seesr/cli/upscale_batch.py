"""`seesr upscale --batch-size N`: group the outputs to make into pipeline calls, and run one call.

An output is one (input, sample) pair. Outputs whose inputs have the same (upright) size and the same plan —
the run's settings are shared, only the seed differs between samples — are grouped, in the order the inputs
were listed, into calls of up to N images (:func:`seesr.run.job.upscale_images`). Each image is drawn with its
own seed exactly as alone, so its result equals the lone run up to float round-off. Batching never changes an
image's tiling: a batch that would not fit the memory budget with it is made smaller instead
(:meth:`seesr.cli.upscale._Planner.fit_batch`). With N = 1 the outputs run in the listed order, one call each,
as they always did.

Failures stay per image: an input that cannot be read or written fails alone, and when a batched call itself
raises, its images are run again one by one so that only the culprit is reported.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Unit:
    """One output to make: sample ``k`` of ``item`` (an :class:`seesr.io.InputFile`) into ``out``, with ``plan``."""

    item: Any
    k: int
    out: Any
    plan: Any


def make_batches(
    jobs: list[tuple[Any, list[tuple[int, Any]], Any]],
    batch_size: int,
    fit: Callable[[Any, int], tuple[int, Any]],
) -> list[tuple[list[Unit], Any]]:
    """Group ``jobs`` ((item, [(k, OutputPlan)], plan) per input) into calls of at most ``batch_size`` images.

    ``fit(plan, n)`` returns how many images of that plan fit the budget together (<= n) and the plan of such a
    call. Returns (units, plan of the call) per call, in the order the first unit of each group was listed.
    """
    units = [Unit(item, k, out, plan) for item, todo, plan in jobs for k, out in todo]
    if batch_size <= 1:
        return [([u], u.plan) for u in units]
    groups: dict[Any, list[Unit]] = {}
    for u in units:
        groups.setdefault((tuple(u.plan.input_size), u.plan.tiling), []).append(u)
    batches: list[tuple[list[Unit], Any]] = []
    for members in groups.values():
        n, plan = fit(members[0].plan, min(batch_size, len(members)))
        for start in range(0, len(members), n):
            chunk = members[start : start + n]
            batches.append((chunk, plan if len(chunk) == n else fit(members[0].plan, len(chunk))[1]))
    return batches


@dataclasses.dataclass
class BatchRunner:
    """Runs calls of :func:`make_batches` for one ``seesr upscale`` run (state: the decoded inputs kept for reuse
    and the inputs that already failed, which are reported once and not tried again)."""

    pipe: Any
    settings: Any
    args: Any
    max_pixels: int
    planner: Any
    fail: Callable[[Path, str], None]
    reason: Callable[[BaseException, Path], str]
    loaded: dict[Path, Any] = dataclasses.field(default_factory=dict)
    failed: set[Path] = dataclasses.field(default_factory=set)

    def run(self, units: list[Unit], plan: Any) -> int:
        """Make the outputs of one call; returns the files written. Failures go to ``fail``, one per input."""
        units = [u for u in units if u.item.path not in self.failed]
        images, kept = self._load(units)
        if not kept:
            return 0
        if len(kept) > 1:
            names = ", ".join(u.out.output.name for u in kept)
            logger.info("batch of %d (%dx%d): %s", len(kept), *kept[0].plan.input_size, names)
        try:
            outcomes = self._call(kept, images, plan)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            if len(kept) == 1:
                self._failed(kept[0], err)
                return 0
            logger.info("batch of %d failed (%s); running its images one by one", len(kept), err)
            _free_memory()
            return sum(self.run([u], u.plan) for u in kept)
        written = 0
        for u, outcome in zip(kept, outcomes):
            if isinstance(outcome, BaseException):
                self._failed(u, outcome)
            else:
                written += 1
        return written

    def _failed(self, unit: Unit, err: BaseException) -> None:
        logger.debug("failure on %s", unit.item.path, exc_info=err)
        self.failed.add(unit.item.path)
        self.fail(unit.item.path, self.reason(err, unit.item.path))
        _free_memory()

    def _load(self, units: list[Unit]) -> tuple[list[Any], list[Unit]]:
        from seesr import io

        keep = {u.item.path for u in units}
        self.loaded = {
            p: img for p, img in self.loaded.items() if p in keep
        }  # the previous call's, if reused
        images, kept = [], []
        for u in units:
            path = u.item.path
            if path in self.failed:
                continue
            if path not in self.loaded:
                try:
                    img = io.load_image(
                        path, max_pixels=self.max_pixels, allow_truncated=self.args.allow_truncated
                    )
                except KeyboardInterrupt:
                    raise
                except Exception as err:
                    self._failed(u, err)
                    continue
                self.loaded[path] = img
                for note in img.warnings:
                    _emit(f"{path}: warning: {note}")
                if img.bit_depth > self.settings.bit_depth:
                    logger.info(
                        "%s: %d-bit input written as %d-bit (--bit-depth 16 keeps more)",
                        path,
                        img.bit_depth,
                        self.settings.bit_depth,
                    )
            images.append(self.loaded[path])
            kept.append(u)
        return images, kept

    def _call(self, units: list[Unit], images: list[Any], plan: Any) -> list[Any]:
        from tqdm import tqdm

        from seesr.run import throughput
        from seesr.run.costs import format_costs
        from seesr.run.distributed import current
        from seesr.run.job import OutputTarget, upscale_images

        settings, args = self.settings, self.args
        samplings = [dataclasses.replace(settings.sampling, seed=settings.sampling.seed + u.k) for u in units]
        targets = [
            OutputTarget(
                image=u.out.output,
                sidecar=u.out.sidecar,
                format=settings.fmt,
                bit_depth=settings.bit_depth,
                prompt_text=u.out.output.parent / "txt" / (u.out.output.stem + ".txt")
                if args.save_prompts
                else None,
            )
            for u in units
        ]
        steps = tqdm(
            total=settings.sampling.num_inference_steps,
            desc="  steps",
            leave=False,
            disable=None if current().is_main else True,
            file=sys.stderr,
        )

        def callback(step: int, total: int) -> None:
            steps.total = total
            steps.n = step
            steps.refresh()

        fields = {
            "dtype_requested": settings.dtype or "auto",
            "plan": plan.as_record(),
            **current().sidecar_fields(),
        }
        try:
            outcomes = upscale_images(
                self.pipe,
                images,
                targets,
                samplings=samplings,
                tiling=plan.tiling,
                tags=settings.tags,
                preset=settings.preset or "default",
                input_names=[str(u.item.path) for u in units],
                callback=callback,
                extras=[{"sample_index": u.k, **fields} for u in units],
            )
        finally:
            steps.close()
        done = [o for o in outcomes if not isinstance(o, BaseException)]
        if getattr(args, "verbose", False):  # `seesr -v upscale`: where the time and memory went
            for job in done:
                _emit(f"{job.record['output']}: {format_costs(job.record)}")
        if done and "denoise" in done[0].record["timings"]:
            # the call's timings cover all its images: fold in the per-image share
            n = len(units)
            per_image = {k: v / n for k, v in done[0].record["timings"].items()}
            throughput.record_run(
                self.planner.throughput_file,
                self.planner.throughput_key,
                units[0].plan,
                per_image,
                steps=samplings[0].num_inference_steps,
                batch=2 if samplings[0].guidance_scale > 1.0 else 1,
            )
        return outcomes


def _emit(line: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(line, file=sys.stderr)


def _free_memory() -> None:
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
