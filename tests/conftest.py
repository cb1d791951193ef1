"""Shared test fixtures: paths to ../shared/fixtures (tiny official-format weights + reference outputs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _fixtures_dir() -> Path:
    env = os.environ.get("SEESR_FIXTURES")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "fixtures"


FIXTURES = _fixtures_dir()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Root of the shared parity fixtures; a missing folder fails loudly rather than skipping tests."""
    if not (FIXTURES / "README.md").is_file():
        pytest.fail(
            f"parity fixtures not found at {FIXTURES}; set SEESR_FIXTURES to the shared/fixtures folder"
        )
    return FIXTURES


def tolerance(ref, rel: float) -> float:
    """DESIGN.md §8 tolerance: rel * max(1, max|ref|)."""
    import torch

    return rel * max(1.0, float(torch.as_tensor(ref).abs().max()))
