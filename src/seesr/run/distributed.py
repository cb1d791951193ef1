"""Data-parallel runs across processes and nodes (``torchrun`` / ``accelerate launch``) on torch.distributed.

A launcher starts N copies of the same command and tells each who it is through the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``). :func:`session` turns that
into a :class:`World`: it picks the process's device (``LOCAL_RANK % device_count`` on CUDA) *before* the
process group starts, then starts it (NCCL on CUDA, gloo on the CPU) with a timeout.

The work itself needs no communication: rank 0 lists the inputs and makes the plan, :meth:`World.share_jobs`
broadcasts it once and every rank keeps its own balanced share (:func:`balanced_shards`), each image with the
seed it has in a single process. The only other collectives are the shared-folder check before the work and
one gather of the per-rank counts after it, never inside the per-image loop.

``seesr upscale --split tiles`` is the other mode: every rank takes every image and the ranks share each image's
latent tiles (:meth:`World.tile_reducer`, one all-reduce per denoising step, see
:class:`seesr.pipeline.tiling.TileSplit`); rank 0 alone writes.

Without a launcher (``WORLD_SIZE`` unset or 1) every function here is a no-op and nothing imports
torch.distributed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds a collective of the setup (plan broadcast, folder check, weights barrier) may wait for a peer
DEFAULT_TIMEOUT_S = 1800
#: the end-of-run gather waits for the slowest rank; a crashed peer still ends it at once (closed connection)
_FINISH_TIMEOUT = datetime.timedelta(days=7)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Who this process is, from the launcher's environment (all 0/1 without a launcher)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1


def placement_from_env(env: Mapping[str, str] | None = None) -> Placement:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE`` (set by torchrun and accelerate).

    Raises:
        ValueError: a value that is not an integer, or a rank outside ``[0, WORLD_SIZE)``.
    """
    env = os.environ if env is None else env

    def num(name: str, default: int) -> int:
        raw = env.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not an integer (set by torchrun/accelerate)") from None

    world = num("WORLD_SIZE", 1)
    rank = num("RANK", 0)
    local_rank = num("LOCAL_RANK", rank if world > 1 else 0)
    local_world = num("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    if not 0 <= local_rank < max(local_world, 1):
        raise ValueError(f"LOCAL_RANK={local_rank} is not in [0, LOCAL_WORLD_SIZE={local_world})")
    return Placement(rank, world, local_rank, local_world)


def device_for_rank(requested: str | None, place: Placement, *, cuda_count: int | None = None) -> str | None:
    """The device this rank should use: ``cuda:{LOCAL_RANK % device_count}`` when CUDA is meant.

    Args:
        requested: ``--device`` as typed (None/"auto"/"cuda"/"cpu"/"mps"/"cuda:K").
        cuda_count: CUDA devices visible here (default: ask torch).

    Returns:
        the device string to pass on (unchanged in a single process).

    Raises:
        ValueError: ``cuda:K`` typed while several ranks run (each rank picks its own GPU).
    """
    if place.world_size == 1:
        return requested
    req = (requested or "auto").lower()
    if req.startswith("cuda:"):
        raise ValueError(
            f"--device {requested} with {place.world_size} processes: each rank picks its own GPU "
            "(LOCAL_RANK % device count); pass --device cuda or leave it out, and choose GPUs with "
            "CUDA_VISIBLE_DEVICES"
        )
    if req not in ("auto", "cuda"):
        return requested
    if cuda_count is None:
        import torch

        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda_count == 0:
        return requested  # "auto" falls to mps/cpu; "cuda" fails in the one resolver with one line
    return f"cuda:{place.local_rank % cuda_count}"


def balanced_shards(costs: Sequence[float], world_size: int) -> list[list[int]]:
    """Split job indices among ranks so that each gets about the same total cost.

    Greedy longest-processing-time: jobs in order of decreasing cost (ties: the earlier job first) each go to
    the rank with the least cost so far (ties: the lower rank). Deterministic for a given list; each rank's
    indices come back in increasing order, so a rank processes its images in the listing order.
    """
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    loads = [0.0] * world_size
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(costs)), key=lambda j: (-costs[j], j)):
        r = min(range(world_size), key=lambda k: (loads[k], k))
        loads[r] += float(costs[i])
        shards[r].append(i)
    return [sorted(s) for s in shards]


def processed_pixels(width: int, height: int, sampling: Any) -> int:
    """Pixels the pipeline processes for a ``width``×``height`` input (the cost used for balancing)."""
    from seesr.pipeline.sizing import plan_sizes

    plan = plan_sizes((width, height), sampling.upscale, sampling.process_size, max_pixels=None)
    return plan.processed[0] * plan.processed[1]


class World:
    """The process group of one run, or a single process (``world_size == 1``) where every call is trivial."""

    def __init__(self, place: Placement | None = None, device: str | None = None) -> None:
        self.place = place or Placement()
        self.device = device
        self._setup: Any = None  # gloo group for the setup collectives (pickled objects on the CPU)
        self._finish: Any = None  # gloo group with a long timeout for the end-of-run gather

    @property
    def rank(self) -> int:
        return self.place.rank

    @property
    def world_size(self) -> int:
        return self.place.world_size

    @property
    def is_distributed(self) -> bool:
        return self.place.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.place.rank == 0

    # -- collectives (all ranks must call them, in the same order) --------------------------------------

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.is_distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self._setup)
        return box[0]  # type: ignore[no-any-return]

    def barrier(self) -> None:
        if self.is_distributed:
            import torch.distributed as dist

            dist.barrier(group=self._setup)

    def gather_at_end(self, value: T) -> list[T]:
        """Every rank's ``value`` (in rank order) on every rank; waits for the slowest rank."""
        if not self.is_distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value, group=self._finish)
        return out

    def plan_on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 alone and return its result on every rank (a collective: all ranks call it).

        When ``fn`` raises on rank 0, every rank raises the same exception (the usage errors of a run: a
        missing folder, settings that differ from a resumed run), instead of the others waiting for a
        broadcast that never comes.
        """
        if not self.is_distributed:
            return fn()
        outcome: tuple[bool, Any] = (True, None)
        if self.is_main:
            try:
                outcome = (True, fn())
            except Exception as err:  # sent to the other ranks, then raised here too
                outcome = (False, err if _picklable(err) else RuntimeError(str(err)))
        ok, value = self.broadcast(outcome)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def share_jobs(self, jobs: Sequence[T], costs: Sequence[float], *, unit: str = "images") -> list[T]:
        """Broadcast rank 0's job list and return this rank's balanced share (see :func:`balanced_shards`)."""
        if not self.is_distributed:
            return list(jobs)
        jobs, costs = self.broadcast((list(jobs), list(costs)))
        mine = balanced_shards(costs, self.world_size)[self.rank]
        logger.info("rank %d/%d: %d of %d %s", self.rank, self.world_size, len(mine), len(jobs), unit)
        return [jobs[i] for i in mine]

    def run_on_local_rank0_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on each host's local rank 0, wait for all of them, then run it on the other ranks.

        For work that fills a shared cache (weights download): the others then find it done. A collective:
        every rank must call it. A failure on a local rank 0 fails that rank (the launcher then stops all).
        """
        if not self.is_distributed:
            return fn()
        first = self.place.local_rank == 0
        result = fn() if first else None
        self.barrier()
        return result if first else fn()  # type: ignore[return-value]

    def check_shared_folder(self, folder: str | Path) -> None:
        """Refuse an output folder that some rank cannot see (several nodes without a shared file system).

        Rank 0 writes a marker file; after a barrier every rank looks for it; the verdict is gathered.

        Raises:
            ValueError: on every rank, naming the ranks that did not see rank 0's file.
        """
        if not self.is_distributed:
            return
        folder = Path(folder)
        token = self.broadcast(uuid.uuid4().hex if self.is_main else "")
        marker = folder / f".seesr-shared-{token}"
        if self.is_main:
            marker.write_text("written by rank 0 to check that every rank sees this folder\n")
        self.barrier()
        seen = marker.is_file()
        import torch.distributed as dist

        verdicts: list[Any] = [None] * self.world_size
        dist.all_gather_object(verdicts, (seen, os.uname().nodename), group=self._setup)
        if self.is_main:
            marker.unlink(missing_ok=True)
        blind = [f"rank {r} on {host}" for r, (ok, host) in enumerate(verdicts) if not ok]
        if blind:
            raise ValueError(
                f"output folder {folder} is not shared: {', '.join(blind)} cannot see the files rank 0 writes "
                "there; with several nodes, -o must be on a shared file system"
            )

    # -- helpers that need no communication ---------------------------------------------------------------

    def share_of_budget(self, total: int) -> int:
        """A memory budget divided among the processes of this host that share it.

        On CUDA the ranks of a host spread over its GPUs (:func:`device_for_rank`), so a GPU is shared by
        ``ceil(LOCAL_WORLD_SIZE / device_count)`` processes; on the CPU (and MPS) all local ranks share it.
        """
        sharing = self.place.local_world_size
        if self.device and self.device.startswith("cuda"):
            import torch

            count = max(torch.cuda.device_count(), 1)
            sharing = -(-self.place.local_world_size // count)
        return max(1, int(total) // max(sharing, 1))

    def tile_reducer(self) -> GroupReducer | None:
        """The group summing the tile outputs of ``--split tiles`` (None in a single process)."""
        return GroupReducer(self.rank, self.world_size) if self.is_distributed else None

    def sidecar_fields(self, split: str = "images") -> dict[str, Any]:
        """``{"world": {"rank", "world_size", "split"}}`` for the sidecar of a distributed run, else nothing."""
        if not self.is_distributed:
            return {}
        return {"world": {"rank": self.rank, "world_size": self.world_size, "split": split}}


class GroupReducer:
    """:class:`seesr.pipeline.tiling.TileReducer` over the default process group (NCCL on CUDA, else gloo)."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def all_reduce_sum(self, tensor: Any) -> None:
        import torch.distributed as dist

        if tensor.device.type in ("cpu", "cuda"):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            return
        host = tensor.cpu()  # gloo has no MPS tensors: sum on the host
        dist.all_reduce(host, op=dist.ReduceOp.SUM)
        tensor.copy_(host)


def _picklable(value: Any) -> bool:
    import pickle

    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


_current = World()


def current() -> World:
    """The :class:`World` of the running :func:`session` (a single process outside one)."""
    return _current


@contextlib.contextmanager
def session(device: str | None = None, *, env: Mapping[str, str] | None = None) -> Iterator[World]:
    """Start the process group the launcher asks for (or nothing), and end it on exit.

    Args:
        device: ``--device`` as typed; :attr:`World.device` is what this rank should use.
        env: the environment (default ``os.environ``); ``SEESR_DIST_TIMEOUT`` (seconds) bounds the setup
            collectives (default :data:`DEFAULT_TIMEOUT_S`).

    Raises:
        ValueError: a bad launcher variable, ``--device cuda:K`` with several ranks, a bad timeout.
    """
    global _current
    env = os.environ if env is None else env
    place = placement_from_env(env)
    dev = device_for_rank(device, place)
    world = World(place, dev)
    if not world.is_distributed:
        yield world
        return
    import torch
    import torch.distributed as dist

    raw = env.get("SEESR_DIST_TIMEOUT") or str(DEFAULT_TIMEOUT_S)
    try:
        timeout = datetime.timedelta(seconds=float(raw))
    except ValueError:
        raise ValueError(f"SEESR_DIST_TIMEOUT={raw!r} is not a number of seconds") from None
    on_cuda = dev is not None and dev.startswith("cuda")
    if on_cuda and dev is not None:
        torch.cuda.set_device(torch.device(dev))  # before the group starts: NCCL binds to it
    dist.init_process_group(
        backend="nccl" if on_cuda else "gloo",
        rank=place.rank,
        world_size=place.world_size,
        timeout=timeout,
    )
    try:
        world._setup = dist.new_group(backend="gloo", timeout=timeout) if on_cuda else None
        world._finish = dist.new_group(backend="gloo", timeout=_FINISH_TIMEOUT)
        _current = world
        yield world
    finally:
        _current = World()
        dist.destroy_process_group()
