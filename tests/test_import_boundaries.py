"""DESIGN.md §4 import boundaries, checked by walking every module's AST (including imports inside functions)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "seesr"

# layer -> seesr sub-packages it must never import
FORBIDDEN = {
    "config": {"models", "pipeline", "data", "training", "metrics", "cli", "ui", "weights"},
    "io": {"models", "pipeline", "data", "training", "metrics", "cli", "ui", "weights"},
    "models": {"pipeline", "data", "training", "metrics", "cli", "ui", "weights", "io"},
    "data": {"models", "pipeline", "training", "cli", "ui"},
    "metrics": {"models", "pipeline", "training", "cli", "ui"},
    "pipeline": {"training", "cli", "ui"},
    "training": {"cli", "ui"},
    "weights": {"pipeline", "training", "cli", "ui", "models", "data", "metrics"},
}


def _layer(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _seesr_imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "seesr" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_import_boundaries():
    violations = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        layer = _layer(path)
        banned = FORBIDDEN.get(layer, set())
        for target in _seesr_imports(ast.parse(path.read_text())) & banned:
            violations.append(f"{path.relative_to(SRC)} imports seesr.{target}")
    assert not violations, "\n".join(violations)


def test_cli_help_does_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from seesr.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "import seesr\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'diffusers' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
