"""Data-parallel `seesr upscale` (issue 15 part 1): sharding, device choice, and real 2-process gloo runs on the
CPU with the tiny weights, launched like a user would (`torchrun --standalone`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seesr.run.distributed import (
    Placement,
    World,
    balanced_shards,
    device_for_rank,
    placement_from_env,
    processed_pixels,
)
from tests.conftest import REPO_ROOT
from tests.tiny_pipeline import official_parts

# ---------------------------------------------------------------------------------------------------------
# pure functions


def test_shards_balance_pixels_not_counts_and_are_deterministic() -> None:
    costs = [100, 1, 1, 1, 1, 96]  # by count 3 + 3 (loads 102 / 99); by cost, the big one alone
    shards = balanced_shards(costs, 2)
    assert shards == balanced_shards(list(costs), 2) == [[0], [1, 2, 3, 4, 5]]
    assert [sum(costs[i] for i in s) for s in shards] == [100, 100]
    # every job exactly once, each shard in listing order; ties go to the earlier job and the lower rank
    assert sorted(i for s in balanced_shards([5] * 7, 3) for i in s) == list(range(7))
    assert balanced_shards([5] * 7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert balanced_shards([1, 2], 4) == [[1], [0], [], []]
    with pytest.raises(ValueError, match="world size must be >= 1"):
        balanced_shards([1], 0)


def test_cost_is_the_processed_size() -> None:
    from seesr.config import SamplingConfig

    s = SamplingConfig(process_size=64)
    assert processed_pixels(16, 16, s) == 64 * 64
    assert processed_pixels(8, 8, s) == 64 * 64  # enlarged to process_size first
    assert processed_pixels(32, 16, s) == 128 * 64


def test_placement_and_device_choice() -> None:
    assert placement_from_env({}) == Placement(0, 1, 0, 1)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    place = placement_from_env(env)
    assert place == Placement(3, 4, 1, 2)
    with pytest.raises(ValueError, match=r"RANK=4 is not in \[0, WORLD_SIZE=4\)"):
        placement_from_env({**env, "RANK": "4"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        placement_from_env({"WORLD_SIZE": "two"})
    assert device_for_rank("auto", place, cuda_count=2) == "cuda:1"
    assert device_for_rank(None, Placement(5, 8, 5, 8), cuda_count=2) == "cuda:1"
    assert device_for_rank("cuda", Placement(2, 8, 2, 8), cuda_count=2) == "cuda:0"
    assert device_for_rank("cpu", place, cuda_count=2) == "cpu"
    assert device_for_rank("auto", place, cuda_count=0) == "auto"
    assert device_for_rank("cuda:1", Placement(), cuda_count=2) == "cuda:1"  # one process: as typed
    with pytest.raises(ValueError, match="--device cuda:0 with 4 processes: each rank picks its own GPU"):
        device_for_rank("cuda:0", place, cuda_count=2)


def test_single_process_world_is_trivial(tmp_path: Path) -> None:
    w = World()
    assert not w.is_distributed and w.is_main
    assert w.share_jobs(["a", "b"], [1, 2]) == ["a", "b"]
    assert w.gather_at_end(3) == [3] and w.sidecar_fields() == {}
    assert w.run_on_local_rank0_first(lambda: 7) == 7
    w.check_shared_folder(tmp_path / "nowhere")  # nothing to check with one process
    assert World(Placement(0, 4, 0, 4), "cpu").share_of_budget(1000) == 250
    assert World(Placement(0, 8, 0, 2), "cpu").share_of_budget(1000) == 500  # per host


def test_refuses_cuda_k_with_several_ranks_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from seesr.cli import main

    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    rc = main(["upscale", str(tmp_path / "x.png"), "-o", str(tmp_path / "o"), "--device", "cuda:1"])
    err = capsys.readouterr().err
    assert rc == 1 and "--device cuda:1 with 2 processes" in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------------------------------------------------
# real runs (tiny weights, CPU, gloo)

SIZES = [(12, 16), (16, 16), (20, 12), (16, 24), (8, 8)]


def _inputs(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def _upscale_cmd(fixtures: Path, src: Path, out: Path, nproc: int, *extra: str) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in official_parts(fixtures).items()]
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)] if nproc else []
    return [
        sys.executable, *launch, "-m", "seesr", "upscale", str(src), "-o", str(out),
        "--steps", "1", "--process-size", "64", *flags, *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT / "src"), PYTHONWARNINGS="ignore")
    env.pop("SEESR_WEIGHTS", None)
    return env


def _sidecar(path: Path) -> dict:
    side = json.loads(path.read_text())
    side.pop("timings")  # what the run cost: measured, not a result
    side.pop("memory", None)
    plan = side.pop("plan")  # predictions and the budget depend on the process count (the budget is shared)
    side["planned_tiling"] = {
        k: plan[k] for k in ("processed", "latent_tiles", "vae_mode", "latent_tile_size")
    }
    side["output"] = Path(side["output"]).name
    return side


def test_two_processes_split_the_folder_and_match_one_process(fixtures_dir: Path, tmp_path: Path) -> None:
    src = _inputs(tmp_path / "in", SIZES)
    one = subprocess.run(
        _upscale_cmd(fixtures_dir, src, tmp_path / "one", 0), env=_env(), capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        _upscale_cmd(fixtures_dir, src, tmp_path / "two", 2),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "seesr upscale: 5 written, 0 skipped (exist), 0 failed" in one.stdout
    # rank 0 alone prints the summary, with per-rank counts
    assert two.stdout.count("seesr upscale: 5 written") == 1, two.stdout
    assert "per rank: 0: " in two.stdout

    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert names == [f"im{i}.png" for i in range(len(SIZES))]
    assert sorted(p.name for p in (tmp_path / "two").glob("*.png")) == names
    by_rank: dict[int, set[str]] = {0: set(), 1: set()}
    for name in names:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
        s2 = _sidecar(tmp_path / "two" / name.replace(".png", ".json"))
        s1 = _sidecar(tmp_path / "one" / name.replace(".png", ".json"))
        world = s2.pop("world")
        assert world["world_size"] == 2 and "world" not in s1
        assert s2 == s1, name
        by_rank[world["rank"]].add(name)
    # disjoint (each file has one rank), complete (checked above) and non-empty: both ranks worked
    assert by_rank[0] and by_rank[1] and not by_rank[0] & by_rank[1]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(t) for t in text]
    return kids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the ranks")
def test_rerun_after_a_killed_rank_finishes_only_the_missing_images(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    src = _inputs(tmp_path / "in", [(16, 16)] * 8)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _upscale_cmd(fixtures_dir, src, out, 2, "--steps", "4"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 400
    while not list(out.glob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    ranks = _children(proc.pid)
    assert len(ranks) == 2 and proc.poll() is None, "the run ended before an image was written"
    os.kill(ranks[1], signal.SIGKILL)  # a crashed rank: the launcher stops the other one
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert 0 < len(done) < 8, done

    rerun = subprocess.run(
        _upscale_cmd(fixtures_dir, src, out, 2, "--steps", "4"), env=_env(), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{8 - len(done)} written, {len(done)} skipped (exist), 0 failed" in rerun.stdout, rerun.stdout
    assert sorted(p.name for p in out.glob("*.png")) == [f"im{i}.png" for i in range(8)]
    assert {n: (out / n).stat().st_mtime_ns for n in done} == done  # finished images were not redone


# ---------------------------------------------------------------------------------------------------------
# --split tiles: one image, its latent tiles shared by the ranks (issue 15 item 2)

TILES_4 = (
    "--steps",
    "2",
    "--latent-tile-size",
    "16",
    "--latent-tile-overlap",
    "4",
)  # 56 px -> latent 28: 2x2


def test_split_tiles_one_image_matches_one_process(fixtures_dir: Path, tmp_path: Path) -> None:
    """Tolerance: the ranks' weighted sums are added in another order than one process adds the tiles (float32
    round-off, ~1e-7 relative); the 8-bit chain (rounded pipeline output, truncated colour fix, uint8 bicubic)
    can turn that into a step of a grey level or two at a few pixels. Measured: max 2 levels at 3 of 150 528
    values. The float result is compared at 1e-4 in tests/test_tile_split.py (threads for ranks)."""
    src = _inputs(tmp_path / "in", [(56, 56)])
    one = subprocess.run(
        _upscale_cmd(fixtures_dir, src, tmp_path / "one", 0, *TILES_4),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        _upscale_cmd(fixtures_dir, src, tmp_path / "two", 2, *TILES_4, "--split", "tiles"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert (
        two.stdout.count("seesr upscale: 1 written, 0 skipped (exist), 0 failed; every image's tiles split")
        == 1
    )
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "im0.json",
        "im0.png",
    ]  # rank 0 alone wrote

    a = np.asarray(Image.open(tmp_path / "one" / "im0.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "two" / "im0.png")).astype(int)
    diff = np.abs(a - b)
    assert a.shape == b.shape == (224, 224, 3)
    assert diff.max() <= 2 and (diff > 0).mean() <= 1e-3, (diff.max(), (diff > 0).mean())

    s2, s1 = _sidecar(tmp_path / "two" / "im0.json"), _sidecar(tmp_path / "one" / "im0.json")
    assert s2.pop("world") == {"rank": 0, "world_size": 2, "split": "tiles"}
    # what the ranks reported through the all-reduce, which also checked that every tile ran exactly once
    assert s2["settings"].pop("tile_split") == {"world_size": 2, "tiles_per_rank": [2, 2]}
    assert s1["planned_tiling"]["latent_tiles"] == [2, 2]
    assert s2 == s1


def test_split_tiles_is_refused_where_it_cannot_be_honoured(tmp_path: Path, capsys) -> None:
    from seesr.cli import main
    from seesr.cli.upscale_tiles import wanted

    rc = main(["upscale", str(tmp_path / "x.png"), "-o", str(tmp_path / "o"), "--split", "tiles"])
    err = capsys.readouterr().err
    assert (
        rc == 1 and "--split tiles shares each image's tiles among processes: launch it with torchrun" in err
    )
    assert len(err.strip().splitlines()) == 1, err
    two = World(Placement(0, 2, 0, 2), "cpu")
    with pytest.raises(ValueError, match="--split tiles cannot be --faithful"):
        wanted("tiles", two, faithful=True)
    assert wanted("tiles", two, faithful=False) and not wanted("images", two, faithful=True)


def test_split_tiles_failures_stop_the_run_but_bad_inputs_are_skipped_together() -> None:
    from seesr.cli.upscale_tiles import LockstepError, load_on_rank0, lockstep

    def boom() -> None:
        raise RuntimeError("CUDA error: out of memory")

    says = lambda err: f"x.png: {err}"  # noqa: E731
    expected = r"^x.png: CUDA error: out of memory \(rank 1\); --split tiles stops"
    with pytest.raises(LockstepError, match=expected), lockstep(True, 1, says):
        boom()
    # the folder mode: the image alone fails
    with pytest.raises(RuntimeError, match="out of memory"), lockstep(False, 1, says):
        boom()

    class OneRank:  # broadcast = identity; the error decided on "rank 0" reaches every rank the same way
        is_main = True

        def broadcast(self, value):
            return value

    def bad() -> None:
        raise ValueError("not an image")

    with pytest.raises(ValueError, match="^x.png: not an image$"):
        load_on_rank0(OneRank(), bad, lambda err: f"x.png: {err}")
    assert load_on_rank0(OneRank(), lambda: "img", str) == "img"
