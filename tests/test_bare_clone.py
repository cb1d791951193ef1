"""The test suite on a clone without the parity fixtures (issue 16): parity tests skip with one reason line, the
missing folder is reported once in the header, and the tiny weights built in code load and run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, fixtures_problem


def test_fixtures_problem_says_what_is_wrong(tmp_path):
    assert fixtures_problem(tmp_path / "nope") == f"{tmp_path / 'nope'} does not exist"
    assert fixtures_problem(tmp_path) == f"{tmp_path} holds no parity fixtures"
    (tmp_path / "README.md").write_text("x")
    (tmp_path / "ram-tiny").mkdir()
    (tmp_path / "ram-tiny" / "arch.json").write_text("{}")
    problem = fixtures_problem(tmp_path)
    assert problem is not None and problem.startswith(
        f"{tmp_path} is incomplete: missing tokenizer/vocab.json"
    )


def _pytest(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SEESR_")}  # CI sets SEESR_REQUIRE_*
    full_env = {**inherited, **env, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=300)


def test_without_fixtures_parity_tests_skip_and_the_header_says_so_once(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _pytest(tmp_path, "tests/test_color_fix.py", "-rs", SEESR_FIXTURES=str(empty))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert out.count("seesr parity fixtures: NOT FOUND") == 1, out
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("parity: " in s and "SEESR_FIXTURES" in s for s in skips), skips
    assert "error" not in out.splitlines()[-1] and " passed" in out.splitlines()[-1]


def test_require_fixtures_turns_a_missing_folder_into_a_usage_error(tmp_path):
    r = _pytest(
        tmp_path, "tests/test_color_fix.py", SEESR_FIXTURES=str(tmp_path / "nope"), SEESR_REQUIRE_FIXTURES="1"
    )
    assert r.returncode == pytest.ExitCode.USAGE_ERROR
    assert "SEESR_REQUIRE_FIXTURES=1 but the parity fixtures are missing" in r.stderr


def test_tiny_weights_built_in_code_load_as_an_official_pipeline(tmp_path):
    from tests.tiny_models import NEVER, TAG_THRESHOLDS, TAGS, write_tiny_weights
    from tests.tiny_pipeline import build_tiny_pipeline, load_lr

    root = write_tiny_weights(tmp_path / "w")
    pipe = build_tiny_pipeline(root)
    assert pipe.unet.num_rca_modules == 11 and pipe.controlnet.num_rca_modules == 5
    assert pipe.tokenizer.pad_token_id == 0 and pipe.tokenizer.model_max_length == 77
    ids = pipe.tokenizer("cup, photo", padding="max_length", max_length=77).input_ids
    assert ids[0] == pipe.tokenizer.bos_token_id and ids[2] == pipe.tokenizer.convert_tokens_to_ids(",</w>")
    tags = pipe.extract_tags(load_lr(root, "coffee_48x64"))
    never = {t for t, thr in zip(TAGS, TAG_THRESHOLDS, strict=True) if thr == NEVER}
    assert tags[:2] == TAGS[:2] and not never & set(tags)
