"""Data-parallel `seesr make-pairs` and `seesr eval` (issue 15 item 1): each rank its share, the outcome that of one
process. Real runs are 2-process gloo jobs on the CPU launched like a user would (`torchrun --standalone`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seesr.cli import main
from seesr.metrics import fidelity, learned
from seesr.metrics.evaluate import evaluate_dirs, finish_eval, load_rgb, score_pairs, start_eval
from seesr.run.distributed import World, balanced_shards
from tests.conftest import REPO_ROOT

GT_NAMES = ("astronaut", "camera", "brick")


def _gt(tiny_weights_dir: Path, folder: Path, names=GT_NAMES) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(tiny_weights_dir / "degradation" / "gt" / f"{name}.png", folder / f"{name}.png")
    return folder


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT / "src"), PYTHONWARNINGS="ignore")


def _seesr(nproc: int, *args: str) -> list[str]:
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)] if nproc else []
    return [sys.executable, *launch, "-m", "seesr", *args]


def _run(nproc: int, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(_seesr(nproc, *args), env=_env(), capture_output=True, text=True, timeout=timeout)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _per_rank(stdout: str) -> list[tuple[int, int]]:
    """(written, failed) per rank from make-pairs' summary line."""
    tail = stdout.split("per rank: ", 1)[1].splitlines()[0]
    return [(int(w), int(f)) for w, f in re.findall(r"\d+: (\d+) written, (\d+) failed", tail)]


def _pairs_args(gt: Path, out: Path, *extra: str) -> list[str]:
    return ["make-pairs", "--gt", str(gt), "--out", str(out), "--device", "cpu", "--no-progress", *extra]


# ---------------------------------------------------------------------------------------------------------
# in one process


def test_plan_on_main_in_one_process_runs_the_plan_and_raises_its_error() -> None:
    w = World()
    assert w.plan_on_main(lambda: [1, 2]) == [1, 2]

    def bad() -> None:
        raise FileNotFoundError("no such folder: x")

    with pytest.raises(FileNotFoundError, match="no such folder: x"):
        w.plan_on_main(bad)


def test_make_pairs_an_unreadable_image_fails_its_pairs_alone(
    tiny_weights_dir, tmp_path, capsys, caplog
) -> None:
    gt = _gt(tiny_weights_dir, tmp_path / "hq", names=("astronaut", "camera"))
    data = (gt / "astronaut.png").read_bytes()
    (gt / "astronaut.png").write_bytes(data[: int(len(data) * 0.7)])  # header fine, pixels cut off
    out = tmp_path / "o"
    assert main(_pairs_args(gt, out, "--epochs", "2")) == 1
    assert "2 pair(s) written, 0 already present, 2 failed" in capsys.readouterr().out
    assert re.search(r"pair 0000001 not made: \S*astronaut.png: truncated", caplog.text), caplog.text
    # astronaut is image 0: pairs 1 and 3 fail; camera's pairs 2 and 4 are made as usual
    assert sorted(p.name for p in (out / "lr").iterdir()) == ["0000002.png", "0000004.png"]


def _eval_folders(root: Path, sizes=((24, 20), (16, 16), (40, 12), (12, 12), (20, 28))) -> tuple[Path, Path]:
    rng = np.random.default_rng(7)
    sr, gt = root / "sr", root / "gt"
    sr.mkdir(parents=True)
    gt.mkdir()
    for i, (h, w) in enumerate(sizes):
        g = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        s = np.clip(g.astype(int) + rng.integers(-20, 21, g.shape), 0, 255).astype(np.uint8)
        Image.fromarray(g).save(gt / f"im{i}.png")
        Image.fromarray(s).save(sr / f"im{i}.png")
    return sr, gt


def test_eval_shares_merge_to_the_one_process_result_with_fid_once(tmp_path, monkeypatch) -> None:
    sr, gt = _eval_folders(tmp_path)
    fid_calls: list[int] = []

    def extractor(files):  # a stand-in for InceptionV3: per-image colour mean and spread
        fid_calls.append(len(files))
        return np.stack(
            [np.r_[load_rgb(f).mean((0, 2, 3)).numpy(), load_rgb(f).std((0, 2, 3)).numpy()] for f in files]
        )

    monkeypatch.setattr(learned, "load_fid_extractor", lambda device: extractor)
    real_ssim = fidelity.ssim_y

    def ssim_failing_on_two(sr_t, gt_t, crop=0):
        # fails on im1 and im3 (by size); the first failing image in pair order is the one reported
        if tuple(sr_t.shape[-2:]) in ((16, 16), (12, 12)):
            raise RuntimeError(f"boom {tuple(sr_t.shape[-2:])}")
        return real_ssim(sr_t, gt_t, crop)

    monkeypatch.setattr(fidelity, "ssim_y", ssim_failing_on_two)
    metrics = ["psnr", "ssim", "fid"]
    one = evaluate_dirs(sr, gt, metrics=metrics)
    assert fid_calls == [5, 5]
    assert one.failures == {"ssim": "SSIM: failed on im1.png: RuntimeError: boom (16, 16)"}

    fid_calls.clear()
    result, pairs = start_eval(sr, gt, metrics=metrics)
    costs = [a.stat().st_size for _, a, _ in pairs]
    shards = balanced_shards(costs, 2)
    assert all(shards) and 1 in shards[0] + shards[1] and 3 in shards[0] + shards[1]
    shares = [score_pairs(result, pairs, s, progress=False) for s in shards]
    assert not fid_calls  # the ranks score per image only
    assert sorted(k for s in shares for k in s.per_image) == [f"im{i}" for i in range(5)]
    two = finish_eval(result, pairs, shares[::-1])  # gathered in any order
    assert fid_calls == [5, 5]  # FID once, over every image
    assert two.as_dict() == one.as_dict()
    assert list(two.per_image) == [f"im{i}" for i in range(5)] and "ssim" not in two.per_image["im0"]
    assert two.aggregate["psnr"] == sum(r["psnr"] for r in one.per_image.values()) / 5
    with pytest.raises(ValueError, match="no scores for 2 image"):
        finish_eval(start_eval(sr, gt, metrics=["psnr"])[0], pairs, [score_pairs(result, pairs, [0, 1, 2])])


# ---------------------------------------------------------------------------------------------------------
# real 2-process runs (gloo, CPU)


def test_make_pairs_two_processes_write_the_files_of_one_process(tiny_weights_dir, tmp_path) -> None:
    gt = _gt(tiny_weights_dir, tmp_path / "hq", names=("astronaut", "camera"))
    one = _run(0, *_pairs_args(gt, tmp_path / "one", "--epochs", "2", "--batch-size", "3"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run(2, *_pairs_args(gt, tmp_path / "two", "--epochs", "2"))
    assert two.returncode == 0, two.stderr[-3000:]
    # every file (gt/lr/sr_bicubic of 4 pairs, make_pairs.json) byte-identical: seeds follow the pair, not the rank
    files = _files(tmp_path / "one")
    assert len(files) == 13 and _files(tmp_path / "two") == files
    # rank 0 alone prints the summary; the per-rank counts are non-empty and add up to the 4 pairs (each pair
    # written by one rank: disjoint and, with the files above, complete)
    assert two.stdout.count("make-pairs: 4 pair(s) written") == 1, two.stdout
    per_rank = _per_rank(two.stdout)
    assert len(per_rank) == 2 and all(w > 0 for w, _ in per_rank), two.stdout
    assert sum(w for w, _ in per_rank) == 4 and all(f == 0 for _, f in per_rank)


@pytest.mark.slow
def test_eval_two_processes_give_the_one_process_metrics_and_report(tmp_path) -> None:
    sr, gt = _eval_folders(tmp_path)
    common = ["eval", "--sr", str(sr), "--gt", str(gt), "--metrics", "psnr", "ssim", "--dataset", "Toy"]
    one = _run(0, *common, "--out", str(tmp_path / "one"))
    two = _run(2, *common, "--out", str(tmp_path / "two"))
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    counts = re.search(r"5 images scored; per rank: 0: (\d+), 1: (\d+)", two.stderr)
    assert counts and int(counts[1]) > 0 and int(counts[2]) > 0 and int(counts[1]) + int(counts[2]) == 5
    assert two.stdout.count("PSNR ↑") == 1  # the table from rank 0 only
    a = json.loads((tmp_path / "one" / "metrics.json").read_text())
    b = json.loads((tmp_path / "two" / "metrics.json").read_text())
    # tolerance: 1e-12 absolute (the same per-image code on the same pixels; the means summed in pair order)
    for stem in a["per_image"]:
        assert b["per_image"][stem] == pytest.approx(a["per_image"][stem], abs=1e-12), stem
    assert b["aggregate"] == pytest.approx(a["aggregate"], abs=1e-12)
    assert list(b["per_image"]) == list(a["per_image"]) and b["failures"] == a["failures"] == {}
    assert (tmp_path / "two" / "report.md").read_text() == (tmp_path / "one" / "report.md").read_text()
    assert (tmp_path / "two" / "metrics.csv").read_text() == (tmp_path / "one" / "metrics.csv").read_text()


@pytest.mark.slow
def test_make_pairs_two_processes_bad_file_and_plan_error(tiny_weights_dir, tmp_path) -> None:
    gt = _gt(tiny_weights_dir, tmp_path / "hq")
    data = (gt / "brick.png").read_bytes()
    (gt / "brick.png").write_bytes(data[: int(len(data) * 0.8)])  # header fine, pixels cut off
    one = _run(0, *_pairs_args(gt, tmp_path / "one"))
    two = _run(2, *_pairs_args(gt, tmp_path / "two"))
    assert one.returncode == 1 and two.returncode != 0
    assert "2 pair(s) written, 0 already present, 1 failed" in one.stdout
    assert (
        "2 pair(s) written, 0 already present, 1 failed" in two.stdout
        and "pair 0000002 not made" in two.stderr
    )
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
    # a usage error found while planning (another seed than the folder's) ends every rank with its one line
    start = time.monotonic()
    bad = _run(2, *_pairs_args(gt, tmp_path / "two", "--seed", "5"), timeout=300)
    assert bad.returncode != 0 and bad.stderr.count("was made with a different seed") == 2, bad.stderr[-2000:]
    assert time.monotonic() - start < 200  # no rank waits for a broadcast that never comes


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(t) for t in (task / "children").read_text().split()]
    return kids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the ranks")
def test_make_pairs_rerun_after_a_killed_rank_makes_only_the_missing_pairs(
    tiny_weights_dir, tmp_path
) -> None:
    gt = _gt(tiny_weights_dir, tmp_path / "hq", names=("astronaut", "camera", "coffee", "rocket"))
    out = tmp_path / "out"
    args = _pairs_args(gt, out, "--epochs", "3", "--batch-size", "1")
    proc = subprocess.Popen(
        _seesr(2, *args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not (out / "sr_bicubic").is_dir() or not list((out / "sr_bicubic").glob("*.png")):
        assert time.monotonic() < deadline and proc.poll() is None, "the run ended before a pair was written"
        time.sleep(0.1)
    ranks = _children(proc.pid)
    assert len(ranks) == 2 and proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(ranks[1], signal.SIGKILL)  # a crashed rank: the launcher stops the other one
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    # sr_bicubic is a pair's last file: these pairs were complete when the run stopped
    done = {p.name: p.stat().st_mtime_ns for p in (out / "sr_bicubic").glob("*.png")}
    assert 0 < len(done) < 12, done

    rerun = _run(2, *args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{12 - len(done)} pair(s) written, {len(done)} already present, 0 failed" in rerun.stdout, (
        rerun.stdout
    )
    assert {n: (out / "sr_bicubic" / n).stat().st_mtime_ns for n in done} == done  # not redone
    ref = _run(0, *_pairs_args(gt, tmp_path / "ref", "--epochs", "3"))
    assert ref.returncode == 0
    assert _files(out) == _files(tmp_path / "ref")  # no truncated file, no temporary left behind
