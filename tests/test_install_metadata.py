"""pyproject.toml promises only what the dependencies can keep (issue 11 item 4).

Reads the INSTALLED dependencies' own ``Requires-Dist`` / ``Requires-Python`` (importlib.metadata) and checks
that every lower bound we declare is at least as strict as theirs, and that the installed versions — the ones
the tests exercise — satisfy what we declare.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
#: extras of our dependencies that we always use (diffusers/transformers are only ever run with torch)
USED_EXTRAS = {"diffusers": {"torch"}, "transformers": {"torch"}}


def lower_bound(spec: SpecifierSet) -> Version | None:
    """The smallest version ``spec`` allows through a ``>=``, ``>``, ``==`` or ``~=`` clause."""
    bounds = [Version(s.version.rstrip(".*")) for s in spec if s.operator in (">=", ">", "==", "~=", "===")]
    return max(bounds) if bounds else None


def declared(pyproject: dict) -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    for group in pyproject["project"].get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in group]
    return {canonicalize_name(r.name): r for r in reqs}


def _installed(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def violations(pyproject_text: str) -> list[str]:
    """Every declared bound looser than an installed dependency's own requirement (empty = truthful)."""
    project = tomllib.loads(pyproject_text)
    ours = declared(project)
    our_python = lower_bound(SpecifierSet(project["project"]["requires-python"]))
    problems = []
    for name, req in sorted(ours.items()):
        dist = _installed(name)
        if dist is None:
            continue
        version = Version(dist.version)
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{name}: installed (tested) {version} is outside the declared {req.specifier}")
        their_python = lower_bound(SpecifierSet(dist.metadata.get("Requires-Python") or ""))
        if their_python and (our_python is None or our_python < their_python):
            problems.append(f"python: {name} {version} requires >={their_python}, we declare >={our_python}")
        extras = {""} | USED_EXTRAS.get(name, set())
        for text in dist.requires or ():
            dep = Requirement(text)
            target = canonicalize_name(dep.name)
            if target not in ours:
                continue
            if dep.marker is not None and not any(dep.marker.evaluate({"extra": e}) for e in extras):
                continue
            theirs, mine = lower_bound(dep.specifier), lower_bound(ours[target].specifier)
            if theirs is not None and (mine is None or mine < theirs):
                problems.append(
                    f"{target}: {name} {version} requires {dep.specifier}, we declare {ours[target].specifier}"
                )
    return problems


def test_declared_bounds_are_not_looser_than_dependencies_require():
    problems = violations(PYPROJECT.read_text(encoding="utf-8"))
    assert not problems, "pyproject.toml promises too much:\n" + "\n".join(problems)


def test_tool_targets_follow_the_python_bound():
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    floor = lower_bound(SpecifierSet(project["project"]["requires-python"]))
    assert floor is not None
    assert project["tool"]["ruff"]["target-version"] == f"py{floor.major}{floor.minor}"
    assert project["tool"]["mypy"]["python_version"] == f"{floor.major}.{floor.minor}"


def test_violations_catches_a_loose_bound():
    text = PYPROJECT.read_text(encoding="utf-8")
    loose = text.replace('requires-python = ">=3.11"', 'requires-python = ">=3.8"')
    assert loose != text and any(p.startswith("python:") for p in violations(loose))
