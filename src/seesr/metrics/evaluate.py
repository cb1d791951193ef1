"""Evaluate a folder of restored images against a folder of references (paper §4.1, Table 2).

Images are paired by file stem (``0001.png`` with ``0001.jpg``); optional suffixes can be stripped from stems
first (e.g. ``_out``, ``_HR``). Every image of either folder must have a partner and the same size: a
missing partner or a size mismatch is a ``ValueError`` naming the files, because a partial or resized
comparison would silently change the numbers.

PSNR/SSIM are computed in-house (:mod:`seesr.metrics.fidelity`) with the optional border crop; the learned
metrics and FID go through pyiqa (:mod:`seesr.metrics.learned`) on the full images. A learned metric that
cannot be loaded is recorded in ``EvalResult.failures`` and the others still run.

:func:`evaluate_dirs` is three steps that a data-parallel run (``seesr eval`` under torchrun) spreads out:
:func:`start_eval` pairs the files (once, rank 0), :func:`score_pairs` scores any subset of the pairs with the
per-image metrics (each rank its share), :func:`finish_eval` merges the shares in pair order and computes the
folder-level values (the means, FID) once — the numbers are those of one process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seesr.io import DEFAULT_MAX_OUTPUT_PIXELS, IMAGE_EXTENSIONS, load_image, probe_image
from seesr.metrics.registry import MetricSpec, resolve_metrics

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

# Restored images are x4 outputs: read them (and their references) up to the output cap.
_MAX_PIXELS = DEFAULT_MAX_OUTPUT_PIXELS


@dataclass
class EvalResult:
    """Scores of one evaluation.

    Attributes:
        sr_dir: the folder of restored images.
        gt_dir: the reference folder, or None (no-reference metrics only).
        metrics: the metrics requested, in Table 2 order.
        per_image: stem -> {metric name: value} for per-image metrics.
        aggregate: metric name -> mean over images (FID: the folder-level value).
        failures: metric name -> the one-line reason it was not computed.
        protocol: the conventions used (Y definition, crop, versions), written into reports.
    """

    sr_dir: str
    gt_dir: str | None
    metrics: list[MetricSpec]
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    aggregate: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sr_dir": self.sr_dir,
            "gt_dir": self.gt_dir,
            "metrics": {s.name: {"label": s.label, "lower_better": s.lower_better} for s in self.metrics},
            "aggregate": self.aggregate,
            "failures": self.failures,
            "protocol": self.protocol,
            "per_image": self.per_image,
        }


def list_images(folder: str | Path, strip_suffixes: Sequence[str] = ()) -> dict[str, Path]:
    """Image files directly inside ``folder``, keyed by stem (after stripping the first matching suffix).

    Raises:
        FileNotFoundError: if ``folder`` is not a directory.
        ValueError: if it holds no images, or two files share a stem.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    out: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        stem = p.stem
        for suf in strip_suffixes:
            if suf and stem.endswith(suf) and len(stem) > len(suf):
                stem = stem[: -len(suf)]
                break
        if stem in out:
            raise ValueError(f"two images in {root} share the stem {stem!r}: {out[stem].name} and {p.name}")
        out[stem] = p
    if not out:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {root}")
    return out


def match_pairs(
    sr_dir: str | Path, gt_dir: str | Path | None, strip_suffixes: Sequence[str] = ()
) -> list[tuple[str, Path, Path | None]]:
    """Pair restored and reference images by stem, checking partners and sizes.

    Returns:
        Sorted ``(stem, sr_path, gt_path or None)``.

    Raises:
        ValueError: an image without partner (names it) or a size mismatch (names both files and sizes).
    """
    sr = list_images(sr_dir, strip_suffixes)
    if gt_dir is None:
        return [(k, sr[k], None) for k in sorted(sr)]
    gt = list_images(gt_dir, strip_suffixes)
    no_gt, no_sr = sorted(set(sr) - set(gt)), sorted(set(gt) - set(sr))
    if no_gt or no_sr:
        parts = []
        if no_gt:
            parts.append(
                f"{len(no_gt)} image(s) in {sr_dir} without a reference in {gt_dir}: "
                + ", ".join(sr[k].name for k in no_gt[:5])
            )
        if no_sr:
            parts.append(
                f"{len(no_sr)} reference(s) in {gt_dir} without an image in {sr_dir}: "
                + ", ".join(gt[k].name for k in no_sr[:5])
            )
        raise ValueError("; ".join(parts) + " (images are paired by file stem)")
    pairs: list[tuple[str, Path, Path | None]] = []
    for k in sorted(sr):
        a = probe_image(sr[k], max_pixels=_MAX_PIXELS).upright_size  # headers only
        b = probe_image(gt[k], max_pixels=_MAX_PIXELS).upright_size
        if a != b:
            raise ValueError(
                f"size mismatch: {sr[k]} is {a[0]}x{a[1]} but its reference {gt[k]} is "
                f"{b[0]}x{b[1]}; expected equal sizes (no resizing is done)"
            )
        pairs.append((k, sr[k], gt[k]))
    return pairs


def load_rgb(path: str | Path) -> torch.Tensor:
    """Read an image as (1,3,H,W) float32 in [0,1], RGB, through :func:`seesr.io.load_image` (as ``seesr upscale``
    reads its inputs: EXIF-oriented, 16 bits kept, ICC to sRGB; alpha dropped). For the 8-bit sRGB PNGs that
    ``seesr upscale`` writes this equals PIL's ``convert('RGB')`` / 255."""
    import torch

    rgb = load_image(path, max_pixels=_MAX_PIXELS).rgb
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()


def _pyiqa_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("pyiqa")
    except Exception:  # not installed
        return None


@dataclass
class ShareScores:
    """Per-image scores of some of the pairs (:func:`score_pairs`), to be merged by :func:`finish_eval`.

    Attributes:
        per_image: stem -> {metric name: value}.
        failures: metric name -> (index of the first pair it failed on, -1 when it did not load; the reason).
    """

    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)


def start_eval(
    sr_dir: str | Path,
    gt_dir: str | Path | None = None,
    metrics: Sequence[str] | None = None,
    crop_border: int = 0,
    device: str = "cpu",
    strip_suffixes: Sequence[str] = (),
) -> tuple[EvalResult, list[tuple[str, Path, Path | None]]]:
    """Check the arguments and pair the files: an empty :class:`EvalResult` (metrics, protocol) and the pairs.

    Args and raises: as :func:`evaluate_dirs`.
    """
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    specs = resolve_metrics(list(metrics) if metrics else None, have_gt=gt_dir is not None)
    pairs = match_pairs(sr_dir, gt_dir, strip_suffixes)
    result = EvalResult(
        sr_dir=str(sr_dir),
        gt_dir=None if gt_dir is None else str(gt_dir),
        metrics=specs,
        protocol={
            "y_channel": "Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255, RGB in [0,1] (BT.601)",
            "psnr": "10*log10(1/(MSE_Y + 1e-8)), Y unrounded",
            "ssim": "Y*255 rounded, Gaussian 11x11 sigma 1.5, valid window, no downsampling",
            "crop_border": crop_border,
            "pairing": "file stem" + (f" after stripping {list(strip_suffixes)}" if strip_suffixes else ""),
            "n_images": len(pairs),
            "pyiqa": _pyiqa_version(),
            "device": device,
        },
    )
    return result, pairs


def load_models(result: EvalResult, device: str = "cpu") -> tuple[dict[str, Any], dict[str, str]]:
    """The pyiqa models of the per-image learned metrics of ``result``, and metric -> reason for those that
    cannot load (pyiqa missing, weights unavailable). FID's network is left to :func:`finish_eval`."""
    from seesr.metrics import learned

    models: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    for spec in result.metrics:
        if spec.pyiqa_name is None or spec.kind == "dist":
            continue
        try:
            models[spec.name] = learned.load_learned_metric(spec, device)
        except learned.MetricUnavailableError as err:
            # reported by the caller (the CLI prints result.failures); debug here to avoid printing twice
            logger.debug("%s", err)
            unavailable[spec.name] = str(err)
    return models, unavailable


def score_pairs(
    result: EvalResult,
    pairs: Sequence[tuple[str, Path, Path | None]],
    indices: Sequence[int] | None = None,
    device: str = "cpu",
    progress: bool = True,
    loaded: tuple[dict[str, Any], dict[str, str]] | None = None,
) -> ShareScores:
    """The per-image metrics of ``result.metrics`` on ``pairs[i]`` for ``i`` in ``indices`` (default: all).

    ``loaded`` is :func:`load_models`' result (default: load them here). A metric that cannot load, or fails on
    an image, is recorded in ``failures`` and not run further; the other metrics go on. FID (folder-level) is
    left to :func:`finish_eval`.
    """
    from seesr.metrics import fidelity, learned

    crop_border = int(result.protocol["crop_border"])
    models, unavailable = load_models(result, device) if loaded is None else loaded
    share = ShareScores(failures={name: (-1, msg) for name, msg in unavailable.items()})
    specs = [
        s
        for s in result.metrics
        if s.kind != "dist" and s.name not in share.failures and (s.pyiqa_name is None or s.name in models)
    ]
    todo = range(len(pairs)) if indices is None else indices
    try:
        from tqdm import tqdm

        iterator: Any = tqdm(todo, desc="eval", unit="img", disable=not progress or len(todo) < 2)
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        iterator = todo
    for index in iterator:
        stem, sr_path, gt_path = pairs[index]
        sr = load_rgb(sr_path)
        gt = load_rgb(gt_path) if gt_path is not None else None
        row: dict[str, float] = {}
        for spec in specs:
            if spec.name in share.failures:
                continue
            try:
                if spec.name in ("psnr", "ssim"):
                    # resolve_metrics only offers the full-reference metrics when a reference folder is given
                    assert gt is not None
                    full_ref = fidelity.psnr_y if spec.name == "psnr" else fidelity.ssim_y
                    value = float(full_ref(sr, gt, crop_border)[0])
                else:
                    value = learned.score_batch(
                        models[spec.name],
                        sr.to(device),
                        gt.to(device) if spec.needs_gt and gt is not None else None,
                    )[0]
            except Exception as err:  # one metric failing on one image must not stop the others
                msg = f"{spec.label}: failed on {sr_path.name}: {type(err).__name__}: {err}".splitlines()[0]
                logger.debug("%s", msg)
                share.failures[spec.name] = (index, msg)
                continue
            row[spec.name] = value
        share.per_image[stem] = row
    return share


def finish_eval(
    result: EvalResult,
    pairs: Sequence[tuple[str, Path, Path | None]],
    shares: Sequence[ShareScores],
    device: str = "cpu",
) -> EvalResult:
    """Merge the shares of all the pairs into ``result``: per-image rows in pair order, the means, and FID.

    The outcome does not depend on how the pairs were split: rows and sums follow the pair order, and a
    metric's failure is the one on its first failing pair (as in one pass over all of them).
    """
    from seesr.metrics import learned

    rows: dict[str, dict[str, float]] = {}
    failed: dict[str, tuple[int, str]] = {}
    for share in shares:
        rows.update(share.per_image)
        for name, (index, msg) in share.failures.items():
            if name not in failed or index < failed[name][0]:
                failed[name] = (index, msg)
    missing = [stem for stem, _, _ in pairs if stem not in rows]
    if missing:
        raise ValueError(f"no scores for {len(missing)} image(s), e.g. {missing[0]}: a share was lost")
    fid = None
    if any(s.kind == "dist" for s in result.metrics):  # FID needs every image: computed here, once
        try:
            extractor = learned.load_fid_extractor(device)
        except learned.MetricUnavailableError as err:
            logger.debug("%s", err)
            failed["fid"] = (-1, str(err))
        else:
            try:
                fid = learned.fid_files(
                    [p for _, p, _ in pairs], [g for _, _, g in pairs if g is not None], extractor
                )
            except Exception as err:
                msg = f"FID: {type(err).__name__}: {err}".splitlines()[0]
                logger.debug("%s", msg)
                failed["fid"] = (len(pairs), msg)
    order = {s.name: k for k, s in enumerate(result.metrics)}
    for name, (_, msg) in sorted(failed.items(), key=lambda kv: (kv[1][0], order[kv[0]])):
        result.failures[name] = msg
    result.per_image = {
        stem: {k: v for k, v in rows[stem].items() if k not in result.failures} for stem, _, _ in pairs
    }
    for spec in result.metrics:
        if spec.kind != "dist" and spec.name not in result.failures:
            total = 0.0  # summed in pair order, as one pass over all the images
            for stem, _, _ in pairs:
                total += result.per_image[stem][spec.name]
            result.aggregate[spec.name] = total / max(1, len(pairs))
    if fid is not None:
        result.aggregate["fid"] = fid
    # keep the aggregate in Table 2 order
    result.aggregate = {
        s.name: result.aggregate[s.name] for s in result.metrics if s.name in result.aggregate
    }
    return result


def evaluate_dirs(
    sr_dir: str | Path,
    gt_dir: str | Path | None = None,
    metrics: Sequence[str] | None = None,
    crop_border: int = 0,
    device: str = "cpu",
    strip_suffixes: Sequence[str] = (),
) -> EvalResult:
    """Score every image of ``sr_dir`` (against ``gt_dir`` when given).

    Args:
        sr_dir: folder of restored images.
        gt_dir: folder of references with the same stems and sizes; None for no-reference metrics only.
        metrics: metric names (see ``seesr.metrics.registry.METRICS``); None = all the inputs allow.
        crop_border: pixels removed per side for PSNR/SSIM (0 = none, the default protocol).
        device: torch device for the learned metrics.
        strip_suffixes: suffixes removed from file stems before pairing (e.g. ``["_out", "_HR"]``).

    Returns:
        An :class:`EvalResult`; metrics that could not be loaded or computed are in ``failures``.

    Raises:
        ValueError: unknown metric, full-reference metric without references, missing partner, size mismatch.
        FileNotFoundError: a folder does not exist.
    """
    result, pairs = start_eval(sr_dir, gt_dir, metrics, crop_border, device, strip_suffixes)
    share = score_pairs(result, pairs, device=device)
    return finish_eval(result, pairs, [share], device=device)
