"""One image's latent tiles shared by several processes (issue 15 item 2), without processes: the ranks are
threads and the all-reduce is a fake that sums the threads' tensors in rank order. The real 2-process gloo run is
in tests/test_distributed_upscale.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch

from seesr.config import SamplingConfig, TilingConfig
from seesr.pipeline import tiling
from seesr.pipeline.tiling import TileBox, TileSplit, share_bounds, tile_boxes, tiled_apply_batched
from tests.tiny_pipeline import build_tiny_pipeline


class _Room:
    """What the fake ranks share: a barrier and one slot per rank."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world, timeout=120)
        self.slots: list[torch.Tensor | None] = [None] * world
        self.calls = 0


class FakeReducer:
    """A :class:`seesr.pipeline.tiling.TileReducer` for threads: every rank gets the rank-ordered sum."""

    def __init__(self, room: _Room, rank: int, world_size: int, slot: int | None = None) -> None:
        self.room, self.rank, self.world_size = room, rank, world_size
        self.slot = rank if slot is None else slot  # the thread's own place (a test may give a wrong rank)

    def all_reduce_sum(self, tensor: torch.Tensor) -> None:
        self.room.slots[self.slot] = tensor.clone()
        self.room.barrier.wait()
        total = torch.stack([s for s in self.room.slots if s is not None]).sum(0)
        if self.slot == 0:
            self.room.calls += 1
        self.room.barrier.wait()
        tensor.copy_(total)


def _on_ranks(
    world: int, job: Callable[[Any], Any], ranks: list[int] | None = None
) -> tuple[list[Any], _Room]:
    room = _Room(world)
    reducers = [FakeReducer(room, r, world, slot) for slot, r in enumerate(ranks or list(range(world)))]
    with ThreadPoolExecutor(world) as pool:
        futures = [pool.submit(job, red) for red in reducers]
        return [f.result(timeout=300) for f in futures], room


def test_shares_are_contiguous_balanced_and_cover_everything() -> None:
    for count in range(0, 9):
        for world in range(1, 6):
            bounds = [share_bounds(count, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # disjoint, nothing skipped
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1, (count, world, sizes)
    assert [share_bounds(4, r, 2) for r in range(2)] == [(0, 2), (2, 4)]


@pytest.mark.parametrize("world", [2, 3, 5])
def test_split_stitching_equals_one_process(world: int) -> None:
    """5 ranks for 4 tiles: one rank runs none and still takes part in the all-reduce."""
    boxes = tile_boxes(20, 20, 12, 4, faithful=False)
    assert len(boxes) == 4
    gen = torch.Generator().manual_seed(0)
    values = {b: torch.randn(2, 4, b.height, b.width, generator=gen) for b in boxes}
    weights = lambda h, w: tiling.gaussian_weights(h, w, faithful=False)  # noqa: E731

    def apply(split: TileSplit | None, ran: list[TileBox]) -> torch.Tensor:
        def fn(group: list[TileBox]) -> list[torch.Tensor]:
            ran.extend(group)
            return [values[b] for b in group]

        return tiled_apply_batched(
            fn,
            (2, 4, 20, 20),
            boxes,
            weights,
            tile_batch=2,
            out_dtype=torch.float32,
            device="cpu",
            split=split,
        )

    alone = apply(None, [])

    def rank_job(reducer: FakeReducer) -> tuple[torch.Tensor, list[TileBox], list[int]]:
        split, ran = TileSplit(reducer), []
        out = apply(split, ran)
        return out, ran, split.tiles_per_rank

    results, room = _on_ranks(world, rank_job)
    assert room.calls == 1  # one collective for values, weights and bookkeeping
    ran_by_rank = [ran for _, ran, _ in results]
    assert sorted(b for ran in ran_by_rank for b in ran) == sorted(boxes)  # every tile once
    assert sum(1 for ran in ran_by_rank if ran) == min(world, len(boxes))
    for out, _, per_rank in results:
        assert per_rank == [len(r) for r in ran_by_rank]
        assert torch.equal(out, results[0][0])  # every rank holds the same bits
        torch.testing.assert_close(out, alone, rtol=1e-6, atol=1e-6)  # summation order differs only


def test_a_tile_run_twice_or_never_is_refused() -> None:
    boxes = tile_boxes(20, 20, 12, 4, faithful=False)

    def rank_job(reducer: FakeReducer) -> torch.Tensor:
        return tiled_apply_batched(
            lambda g: [torch.ones(1, 1, b.height, b.width) for b in g],
            (1, 1, 20, 20),
            boxes,
            lambda h, w: torch.ones(h, w),
            tile_batch=1,
            out_dtype=torch.float32,
            device="cpu",
            split=TileSplit(reducer),
        )

    # both threads believe they are rank 0: tiles 0-1 run twice, 2-3 never
    with pytest.raises(
        ValueError, match=r"each tile must run on exactly one rank, got run counts \[2.0, 2.0, 0.0"
    ):
        _on_ranks(2, rank_job, ranks=[0, 0])


@pytest.fixture(scope="module")
def tiny_pipe(tiny_weights_dir):
    return build_tiny_pipeline(tiny_weights_dir)


def _lr() -> torch.Tensor:
    return torch.rand(1, 3, 56, 56, generator=torch.Generator().manual_seed(3))


SAMPLING = SamplingConfig(num_inference_steps=2, process_size=64, color_fix="none")
TILED = TilingConfig(latent_tile_size=16, latent_tile_overlap=4)  # latent 28x28: 2x2 tiles


def test_pipeline_with_split_tiles_equals_one_process(tiny_pipe) -> None:
    alone = tiny_pipe(_lr(), SAMPLING, TILED, show_progress=False, return_trace=True)
    assert alone.settings["latent_tiled"] and "tile_split" not in alone.settings

    def rank_job(reducer: FakeReducer) -> Any:
        return tiny_pipe(_lr(), SAMPLING, TILED, show_progress=False, return_trace=True, tile_reducer=reducer)

    results, room = _on_ranks(2, rank_job)
    assert (
        room.calls == 1 + SAMPLING.num_inference_steps
    )  # a line-up before the loop, one all-reduce per step
    for res in results:
        assert res.settings["tile_split"] == {"world_size": 2, "tiles_per_rank": [2, 2]}
        assert torch.equal(res.image, results[0].image)  # the ranks never drift apart
        assert torch.equal(res.trace["step1/latents_out"], results[0].trace["step1/latents_out"])
        torch.testing.assert_close(res.trace["step1/eps"], alone.trace["step1/eps"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(res.image, alone.image, rtol=0, atol=1e-4)


def test_untiled_image_runs_on_rank_0_and_is_exact(tiny_pipe) -> None:
    whole = TilingConfig(latent_tile_size=64)
    alone = tiny_pipe(_lr(), SAMPLING, whole, show_progress=False)

    def rank_job(reducer: FakeReducer) -> Any:
        return tiny_pipe(_lr(), SAMPLING, whole, show_progress=False, tile_reducer=reducer)

    results, _ = _on_ranks(2, rank_job)
    for res in results:
        assert res.settings["tile_split"]["tiles_per_rank"] == [1, 0]
        assert torch.equal(res.image, alone.image)  # x + 0 == x


def test_faithful_refuses_a_split(tiny_pipe) -> None:
    faithful = SamplingConfig(num_inference_steps=1, process_size=64, faithful=True)
    with pytest.raises(ValueError, match="tile_reducer cannot be combined with faithful=True"):
        tiny_pipe(_lr(), faithful, TILED, show_progress=False, tile_reducer=FakeReducer(_Room(1), 0, 1))
