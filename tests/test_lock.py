"""requirements.lock pins every dependency `make setup` installs: each of pyproject.toml's
requirements (dev extras included) at a version inside its range, and, where this environment
has them installed, everything they require in turn."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

LOCK = REPO / "requirements.lock"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)(\s*;\s*(?P<marker>.+))?$")


def locked() -> dict[str, Requirement]:
    """{canonical name: its pinned requirement} for the lock's lines that apply on this platform."""
    pins: dict[str, Requirement] = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        assert PIN.match(line), f"requirements.lock:{number}: expected 'name==version[ ; marker]', got {line!r}"
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"requirements.lock:{number}: {name} pinned twice"
        if requirement.marker is None or requirement.marker.evaluate():
            pins[name] = requirement
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in project.get("optional-dependencies", {}).values() for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras]


def pinned_version(requirement: Requirement) -> str:
    return next(iter(requirement.specifier)).version


def test_the_lock_pins_each_pyproject_requirement_inside_its_range():
    pins = locked()
    assert "ganaug" not in pins, "requirements.lock must not pin ganaug itself (make setup installs it editable)"
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"pyproject.toml requires {requirement}, but requirements.lock has no {name}: run `make lock`"
        version = pinned_version(pins[name])
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside pyproject.toml's {requirement}"
        )


def test_the_lock_holds_everything_the_project_requires_transitively():
    """Walk pyproject's requirements through the installed packages' metadata (extras and markers
    evaluated here): every package reached must be pinned. Packages installed at another version
    than the lock's are reported, not walked (their requirements may differ)."""
    pins = locked()
    environment = default_environment()
    queue = [(r, frozenset(r.extras)) for r in project_requirements()]
    seen: set[tuple[str, frozenset]] = set()
    missing, other_version = [], []
    while queue:
        requirement, extras = queue.pop()
        name = canonicalize_name(requirement.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        if name not in pins:
            missing.append(f"{name} (required as {requirement})")
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: only its own pin can be checked
        if dist.version != pinned_version(pins[name]):
            other_version.append(f"{name} {dist.version} installed, {pinned_version(pins[name])} locked")
            continue
        for text in dist.requires or []:
            child = Requirement(text)
            wanted = child.marker is None or any(
                child.marker.evaluate({**environment, "extra": extra}) for extra in extras | {""}
            )
            if wanted:
                queue.append((child, frozenset(child.extras)))
    assert not missing, f"requirements.lock lacks {sorted(set(missing))}: run `make lock`"
    if other_version:
        pytest.skip(f"this environment is not the locked one ({len(other_version)} differ, e.g. {other_version[0]})")
