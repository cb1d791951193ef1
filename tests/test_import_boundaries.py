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


# `models` knows nothing about files (DESIGN.md §4): no weight-file reading or writing in it.
# models/unet.py still assembles a UNet from two diffusers folders (SeeSRUNet.from_base_and_rca); listed here until
# that moves beside the other loaders in pipeline/.
FILE_IO_ALLOWED_IN_MODELS = {"models/unet.py"}


def _weight_file_io(tree: ast.AST) -> list[str]:
    """``torch.load``/``torch.save`` calls and ``safetensors`` imports in a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("load", "save"):
            if isinstance(node.value, ast.Name) and node.value.id == "torch":
                found.append(f"torch.{node.attr} (line {node.lineno})")
        elif isinstance(node, ast.Import):
            found += [
                f"import {a.name} (line {node.lineno})"
                for a in node.names
                if a.name.startswith("safetensors")
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("safetensors"):
            found.append(f"from {node.module} import ... (line {node.lineno})")
    return found


def test_models_read_and_write_no_weight_files():
    violations = []
    for path in sorted((SRC / "models").rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in FILE_IO_ALLOWED_IN_MODELS:
            continue
        violations += [f"{rel}: {what}" for what in _weight_file_io(ast.parse(path.read_text()))]
    assert not violations, "\n".join(violations)


def test_weight_file_detector_sees_the_usual_spellings():
    src = "import torch\nfrom safetensors.torch import load_file\nimport safetensors\nx = torch.load(p)\ntorch.save(x, p)\n"
    assert len(_weight_file_io(ast.parse(src))) == 4


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


def _modules_where(predicate) -> list[str]:
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        if any(predicate(node) for node in ast.walk(ast.parse(path.read_text()))):
            hits.append(path.relative_to(SRC).as_posix())
    return hits


def test_yaml_seed_mixer_and_imagenet_statistics_live_in_one_module_each():
    """One YAML reader, one seed mixer, one ImageNet normalisation (issue 12): found by what they contain."""

    def calls_yaml_load(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("safe_load", "load", "full_load", "unsafe_load")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "yaml"
        )

    def golden_gamma(node: ast.AST) -> bool:  # the SplitMix64 constant every such mixer starts from
        return isinstance(node, ast.Constant) and node.value == 0x9E3779B97F4A7C15

    def imagenet_mean(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value == 0.485

    assert _modules_where(calls_yaml_load) == ["config.py"]
    assert _modules_where(golden_gamma) == ["data/datasets.py"]
    assert _modules_where(imagenet_mean) == ["models/dape/model.py"]


def test_run_layer_helpers_are_defined_once():
    """One sidecar writer, one versions(), one device/dtype resolver (issue 12): found by name in the AST."""
    wanted = {
        "versions",
        "_versions",
        "resolve_device",
        "resolve_dtype",
        "_device_dtype",
        "_dtype",
        "write_sidecar",
        "_atomic_write_text",
        "_utf8_writer",
    }
    where: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in wanted:
                where.setdefault(node.name, []).append(path.relative_to(SRC).as_posix())
    assert where == {
        "versions": ["run/sidecar.py"],
        "resolve_device": ["pipeline/devices.py"],
        "resolve_dtype": ["pipeline/devices.py"],
    }
