"""Reports of an evaluation: terminal table, CSV, JSON, Markdown laid out like the paper's Table 2 / Table 6.

Table 2 of the paper has one row per (dataset, metric) with the metric's direction arrow and one column per
method; :func:`table2_markdown` writes that layout for one or more results (e.g. several methods loaded
back from their JSON files). Numbers use the paper's precision (PSNR, FID, MUSIQ 2 decimals, the rest 4).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seesr.metrics.registry import METRICS, TABLE2_ORDER

if TYPE_CHECKING:  # pragma: no cover
    from seesr.metrics.evaluate import EvalResult
    from seesr.metrics.tagging import TaggingResult

logger = logging.getLogger(__name__)


def _fmt(name: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{METRICS[name].decimals}f}"


def terminal_table(result: EvalResult) -> str:
    """A plain-text table of the aggregate scores and the failures, for printing."""
    width = max([len(s.label) + 2 for s in result.metrics] + [8])
    lines = [f"{'metric':<{width}}  value", "-" * (width + 12)]
    for spec in result.metrics:
        label = f"{spec.label} {spec.arrow}"
        if spec.name in result.aggregate:
            lines.append(f"{label:<{width}}  {_fmt(spec.name, result.aggregate[spec.name])}")
        else:
            lines.append(f"{label:<{width}}  unavailable")
    lines.append(
        f"({result.protocol.get('n_images', len(result.per_image))} images; crop_border="
        f"{result.protocol.get('crop_border', 0)})"
    )
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it: a killed run leaves no half report."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(result: EvalResult, path: str | Path) -> Path:
    """One row per image plus a final ``mean`` row (FID only there); columns in Table 2 order."""
    path = Path(path)
    names = [s.name for s in result.metrics if s.name in result.aggregate]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", *names])
    for stem, row in result.per_image.items():
        w.writerow([stem, *("" if n not in row else repr(row[n]) for n in names)])
    w.writerow(["mean", *(repr(result.aggregate[n]) for n in names)])
    _write_atomic(path, buf.getvalue())
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_json(result: EvalResult, path: str | Path, dataset: str = "", method: str = "") -> Path:
    """The full result (aggregate, per image, failures, protocol) as JSON; NaN becomes null."""
    path = Path(path)
    data = {"dataset": dataset, "method": method, **result.as_dict()}
    _write_atomic(path, json.dumps(_jsonable(data), indent=2, ensure_ascii=False) + "\n")
    return path


def table2_markdown(entries: Sequence[Mapping[str, Any]]) -> str:
    """Markdown in the layout of the paper's Table 2: rows (dataset, metric ↑/↓), one column per method.

    Args:
        entries: dicts with ``dataset``, ``method`` and ``aggregate`` (metric name -> value), e.g. loaded from
            :func:`write_json` files.

    Returns:
        The Markdown table (a '-' where a method lacks a metric on a dataset).
    """
    methods = list(dict.fromkeys(str(e.get("method") or "result") for e in entries))
    datasets = list(dict.fromkeys(str(e.get("dataset") or "-") for e in entries))
    lookup: dict[tuple[str, str], Mapping[str, Any]] = {
        (str(e.get("dataset") or "-"), str(e.get("method") or "result")): e.get("aggregate", {})
        for e in entries
    }
    lines = ["| Datasets | Metrics | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for ds in datasets:
        present = [n for n in TABLE2_ORDER if any(n in lookup.get((ds, m), {}) for m in methods)]
        for i, name in enumerate(present):
            spec = METRICS[name]
            cells = [_fmt(name, lookup.get((ds, m), {}).get(name)) for m in methods]
            lines.append(
                f"| {ds if i == 0 else ''} | {spec.label} {spec.arrow} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def write_markdown(result: EvalResult, path: str | Path, dataset: str = "", method: str = "") -> Path:
    """A Markdown report: the Table 2 rows, the protocol, and any unavailable metrics."""
    path = Path(path)
    entry = {
        "dataset": dataset or Path(result.gt_dir or result.sr_dir).name,
        "method": method or "result",
        "aggregate": result.aggregate,
    }
    parts = [f"# Evaluation of `{result.sr_dir}`", "", table2_markdown([entry]), "## Protocol", ""]
    parts += [f"- {k}: {v}" for k, v in result.protocol.items()]
    if result.failures:
        parts += ["", "## Not computed", ""] + [f"- {v}" for v in result.failures.values()]
    _write_atomic(path, "\n".join(parts) + "\n")
    return path


def tagging_markdown(rows: Mapping[str, TaggingResult]) -> str:
    """Markdown in the layout of the paper's Table 6: one row per tagger, OP/OR as fractions, AP in percent."""
    lines = ["| | OP ↑ | OR ↑ | AP ↑ |", "|---|---|---|---|"]
    for name, r in rows.items():
        ap = "-" if math.isnan(r.map) else f"{100 * r.map:.1f}"
        lines.append(f"| {name} | {r.op:.4f} | {r.or_:.4f} | {ap} |")
    return "\n".join(lines) + "\n"


def write_plot(result: EvalResult, path: str | Path) -> Path | None:
    """Histogram of the per-image values of each metric; None (with a log line) if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; no plot written")
        return None
    names = [s.name for s in result.metrics if s.name in result.aggregate and s.kind != "dist"]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 2.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = [row[name] for row in result.per_image.values() if name in row]
        ax.hist(values, bins=min(20, max(1, len(values))))
        ax.axvline(result.aggregate[name], color="k", linestyle="--")
        ax.set_title(f"{METRICS[name].label} {METRICS[name].arrow}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
