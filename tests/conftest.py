"""Shared test fixtures: the parity fixtures (../shared/fixtures) and tiny weights built in code.

Two kinds of tests need model files:

* **parity** tests compare against the official code's outputs stored in the parity fixtures (tiny official-format
  random weights + reference outputs; ``fixtures_dir``). Every test whose fixture closure includes
  ``fixtures_dir`` is marked ``parity`` automatically; when the fixtures are absent or incomplete these tests are
  skipped (one reason line each) and the run's header says so once. ``SEESR_REQUIRE_FIXTURES=1`` turns missing
  fixtures into a usage error instead (CI's main run sets it, so parity tests cannot be skipped there silently).
* tests that only need *some* tiny weights take ``tiny_weights_dir``: the parity fixtures when present, else the
  same layout written by :func:`tests.tiny_models.write_tiny_weights` (built in code, once per session), so they
  also run on a bare clone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# No test may reach the network: the first-run download of `seesr upscale`/`seesr ui` must see an offline hub
# (tests that exercise downloads replace the hub with tests/fake_hub.py). Set before huggingface_hub is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Runs record their throughput for the planner (~/.cache/seesr/throughput.json): keep the tests' records out of
# the user's cache, in a folder of this session.
os.environ.setdefault("SEESR_CACHE", tempfile.mkdtemp(prefix="seesr-test-cache-"))

REPO_ROOT = Path(__file__).resolve().parents[1]

WHERE = "../shared/fixtures beside the checkout in our CI layout; elsewhere set SEESR_FIXTURES to a copy"
WHERE_SHORT = "parity fixtures: ../shared/fixtures in our CI layout, or set SEESR_FIXTURES"

REQUIRED = (
    "README.md",
    "tokenizer/vocab.json",
    "sd2-tiny/text_encoder/model.safetensors",
    "sd2-tiny/vae/diffusion_pytorch_model.safetensors",
    "seesr-tiny/unet/diffusion_pytorch_model.safetensors",
    "seesr-tiny/controlnet/diffusion_pytorch_model.safetensors",
    "sd2turbo-tiny/unet",
    "ram-tiny/ram_tiny.pth",
    "ram-tiny/DAPE_tiny.pth",
    "ram-tiny/DAPE_tiny_tagenc.pth",
    "ram-tiny/arch.json",
    "ram-tiny/ram_tag_list.txt",
    "ram-tiny/ram_tag_list_threshold.txt",
    "reference/lr",
    "reference/train",
    "reference/denoiser.safetensors",
    "reference/dape.safetensors",
    "reference/color_fix.safetensors",
    "reference/pipeline_A.safetensors",
    "reference/pipeline_B.safetensors",
    "reference/pipeline_turbo.safetensors",
    "reference/tiling.json",
    "reference/train_step_seesr.safetensors",
    "reference/train_step_dape.safetensors",
    "degradation/gt",
    "degradation/stats.json",
)
"""What the parity tests read; any of it missing makes the fixtures count as absent."""


def _fixtures_dir() -> Path:
    env = os.environ.get("SEESR_FIXTURES")
    if env:
        return Path(env).expanduser()
    return REPO_ROOT.parent / "shared" / "fixtures"


def fixtures_problem(root: Path) -> str | None:
    """``None`` when ``root`` holds the complete parity fixtures, else one line saying what is wrong."""
    if not root.is_dir():
        return f"{root} does not exist"
    missing = [p for p in REQUIRED if not (root / p).exists()]
    if len(missing) == len(REQUIRED):
        return f"{root} holds no parity fixtures"
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return f"{root} is incomplete: missing {', '.join(missing[:3])}{more}"
    return None


FIXTURES = _fixtures_dir()
FIXTURES_PROBLEM = fixtures_problem(FIXTURES)
HAVE_FIXTURES = FIXTURES_PROBLEM is None


def _status_line() -> str:
    if HAVE_FIXTURES:
        return f"seesr parity fixtures: {FIXTURES}"
    return (
        f"seesr parity fixtures: NOT FOUND ({FIXTURES_PROBLEM}); parity tests are skipped and tiny weights are "
        f"built in code. The fixtures are {WHERE}."
    )


def pytest_configure(config: pytest.Config) -> None:
    if not HAVE_FIXTURES and os.environ.get("SEESR_REQUIRE_FIXTURES") == "1":
        raise pytest.UsageError(
            f"SEESR_REQUIRE_FIXTURES=1 but the parity fixtures are missing: {FIXTURES_PROBLEM}"
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [_status_line()]


def pytest_sessionstart(session: pytest.Session) -> None:
    # -q (the project's addopts) hides the report header; say it once anyway when the fixtures are missing.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not HAVE_FIXTURES and reporter is not None and session.config.get_verbosity() < 0:
        reporter.write_line(_status_line(), yellow=True)


def _what_it_checks(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "obj", None), "__doc__", None) or getattr(item.module, "__doc__", None) or ""
    text = " ".join(doc.strip().split("\n\n")[0].split()) or item.name
    return text if len(text) <= 140 else text[:139] + "…"


def _skip_reason(item: pytest.Item) -> str:
    return f"parity: {_what_it_checks(item)} — skipped: {FIXTURES_PROBLEM} ({WHERE_SHORT})"


@pytest.hookimpl(tryfirst=True)  # before `-m` selection, so `-m parity` / `-m "not parity"` work
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "fixtures_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.parity)
        if not HAVE_FIXTURES and item.get_closest_marker("parity") is not None:
            item.add_marker(pytest.mark.skip(reason=_skip_reason(item)))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Root of the parity fixtures (tests using it are marked ``parity`` and skipped when they are absent)."""
    if not HAVE_FIXTURES:  # only reached through request.getfixturevalue; marked tests never get here
        pytest.skip(f"needs the parity fixtures: {FIXTURES_PROBLEM} ({WHERE_SHORT})")
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in the fixtures' layout with tiny weights and test inputs (``sd2-tiny/``, ``seesr-tiny/``,
    ``ram-tiny/``, ``reference/lr/``, ``degradation/gt/``): the parity fixtures when present, else written in
    code by :func:`tests.tiny_models.write_tiny_weights`. For tests that check behaviour, not reference values."""
    if HAVE_FIXTURES:
        return FIXTURES
    from tests.tiny_models import write_tiny_weights

    return write_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))


def tolerance(ref, rel: float) -> float:
    """DESIGN.md §8 tolerance: rel * max(1, max|ref|)."""
    import torch

    return rel * max(1.0, float(torch.as_tensor(ref).abs().max()))
