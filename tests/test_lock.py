"""The lock file (requirements/lock.txt) against pyproject.toml's ranges and the installed venv.

`make setup` installs the lock, CI runs `make setup`: these checks keep the lock, the ranges
users install from, and the environment the suite runs in the same program.
"""

from __future__ import annotations

import platform
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
# The platform the lock is generated for (`make lock`): CPython 3.11 on x86-64 Linux.
LOCK_ENV = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?:\s*;.*)?\s*\\?$")


def _locked() -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, hashes), from the lock's pins and their --hash lines."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    current: str | None = None
    for line in LOCK.read_text().splitlines():
        if match := _PIN.match(line):
            current = canonicalize_name(match.group(1))
            pins[current] = (Version(match.group(2)), [])
        elif current and (hashed := re.search(r"--hash=(sha256:[0-9a-f]{64})", line)):
            pins[current][1].append(hashed.group(1))
        elif line and not line.startswith(" "):
            current = None
    return pins


def _ranges() -> list[Requirement]:
    """pyproject's dependencies plus the extras `make setup` installs (all, dev), expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    todo, seen, out = ["all", "dev"], set(), [Requirement(r) for r in project["dependencies"]]
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in extras[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == canonicalize_name(project["name"]):
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


def test_every_range_is_locked_to_a_release_inside_it() -> None:
    pins = _locked()
    assert len(pins) > 50
    for req in _ranges():
        if req.marker is not None and not req.marker.evaluate(LOCK_ENV):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is in pyproject.toml but not in the lock: run `make lock`"
        version = pins[name][0]
        # A local version label (torch 2.13.0+cpu) satisfies == 2.13.0 (PEP 440).
        assert req.specifier.contains(version, prereleases=True), (
            f"the lock pins {name}=={version}, outside pyproject.toml's {req}"
        )


def test_every_pin_carries_a_hash() -> None:
    missing = [name for name, (_, hashes) in _locked().items() if not hashes]
    assert not missing, f"pins without --hash (run `make lock`): {missing}"


@pytest.mark.skipif(
    platform.machine() != "x86_64" or sys.platform != "linux",
    reason="the lock is for x86-64 Linux; make setup resolves the ranges elsewhere",
)
def test_the_suite_runs_on_exactly_the_locked_releases() -> None:
    """CI installs the lock: a package that drifted from it means CI tested another program."""
    drifted: dict[str, tuple[str, str | None]] = {}
    for name, (version, _) in _locked().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            drifted[name] = (str(version), None)
            continue
        if installed != version:
            drifted[name] = (str(version), str(installed))
    assert not drifted, f"locked vs installed: {drifted} (run `make setup`)"


def test_pip_bootstraps_the_uv_the_lock_pins_with_its_hashes() -> None:
    """`make setup` installs uv from requirements/bootstrap.txt before anything else: the same
    release and hashes as the lock's, so the tool that checks hashes is checked too."""
    lines = (ROOT / "requirements" / "bootstrap.txt").read_text().splitlines()
    pins = [_PIN.match(line) for line in lines]
    [pin] = [m for m in pins if m]
    hashes = re.findall(r"--hash=(sha256:[0-9a-f]{64})", "\n".join(lines))
    version, locked_hashes = _locked()["uv"]
    assert (Version(pin.group(2)), hashes) == (version, locked_hashes)
