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


def _pil_image_opens(tree: ast.AST) -> list[int]:
    """Lines that open an image file with Pillow: ``Image.open(...)``, ``PIL.Image.open(...)``, or ``open``
    imported from ``PIL.Image``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "open":
            owner = node.func.value
            if (isinstance(owner, ast.Name) and owner.id == "Image") or (
                isinstance(owner, ast.Attribute) and owner.attr == "Image"
            ):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "PIL.Image":
            lines += [node.lineno for a in node.names if a.name == "open"]
    return lines


def test_images_are_opened_only_by_io():
    """seesr.io is the only reader (16-bit data, EXIF orientation, caps before decoding): no module outside
    seesr/io/ opens an image file with Pillow."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if _layer(path) == "io":
            continue
        found += [f"{path.relative_to(SRC)}:{n}" for n in _pil_image_opens(ast.parse(path.read_text()))]
    assert not found, "Image.open outside seesr/io/ (read through seesr.io instead): " + ", ".join(found)
    assert _pil_image_opens(
        ast.parse("from PIL import Image\nImage.open('x')\nimport PIL\nPIL.Image.open('y')")
    )


def test_one_image_extension_list():
    """One list of image file extensions (seesr.io.IMAGE_EXTENSIONS); other modules import it. (Output formats
    name their own default extension, e.g. ".webp" in seesr/io/writing.py, so only input-only spellings count.)"""
    owners: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in (".tiff", ".jpeg", ".bmp"):
                owners.setdefault(str(node.value), set()).add(str(path.relative_to(SRC)))
    assert owners == {ext: {"io/listing.py"} for ext in (".tiff", ".jpeg", ".bmp")}
