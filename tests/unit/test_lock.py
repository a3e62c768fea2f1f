"""requirements.lock covers pyproject.toml: a dependency added or tightened without ``make lock`` fails here.

The lock is universal (``uv pip compile --universal``): one file for every platform and Python
version, its entries guarded by environment markers. For each supported environment, every
dependency that pyproject.toml declares (base and the dev extra) must be pinned by exactly one
applicable lock entry, at a version its specifier allows.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"
LOCK = REPO / "requirements.lock"
MAKE_LOCK = "uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 -o requirements.lock"

#: (python_full_version, sys_platform, platform_system, platform_machine): where the project must install.
ENVIRONMENTS = [
    (py, *plat)
    for py in ("3.11.9", "3.12.8", "3.13.1", "3.14.0")
    for plat in (("linux", "Linux", "x86_64"), ("linux", "Linux", "aarch64"),
                 ("darwin", "Darwin", "arm64"), ("win32", "Windows", "AMD64"))
]


def declared(pyproject_text: str) -> list[Requirement]:
    """The base dependencies and the dev extra of a pyproject.toml."""
    project = tomllib.loads(pyproject_text)["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def locked(lock_text: str) -> list[Requirement]:
    """The pinned entries of a requirements lock (``name==version ; marker``), comments skipped."""
    return [Requirement(line) for line in lock_text.splitlines() if line and not line[0].isspace()
            and not line.startswith("#")]


def environment(py: str, sys_platform: str, system: str, machine: str) -> dict[str, str]:
    env = dict(default_environment())
    env.update(python_full_version=py, python_version=".".join(py.split(".")[:2]), sys_platform=sys_platform,
               platform_system=system, platform_machine=machine, os_name="nt" if system == "Windows" else "posix",
               implementation_name="cpython", platform_python_implementation="CPython")
    return env


def uncovered(pyproject_text: str, lock_text: str) -> list[str]:
    """What the lock fails to cover, one line per problem and environment (empty: all covered)."""
    pins = locked(lock_text)
    problems = []
    for env_args in ENVIRONMENTS:
        env = environment(*env_args)
        for req in declared(pyproject_text):
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = canonicalize_name(req.name)
            here = [p for p in pins if canonicalize_name(p.name) == name
                    and (p.marker is None or p.marker.evaluate(env))]
            where = f"{env['python_full_version']} {env['sys_platform']} {env['platform_machine']}"
            if len(here) != 1:
                problems.append(f"{req} has {len(here)} lock entries for {where}")
                continue
            (version,) = [s.version for s in here[0].specifier if s.operator == "=="]
            if not req.specifier.contains(version, prereleases=True):
                problems.append(f"{req} is locked at {version} for {where}")
    return problems


def test_lock_covers_every_declared_dependency():
    problems = uncovered(PYPROJECT.read_text(), LOCK.read_text())
    assert not problems, ("requirements.lock is out of date with pyproject.toml: run `make lock`, then "
                          "`make test`, and commit both files.\n" + "\n".join(sorted(set(problems))[:20]))


def test_lock_pins_every_entry_and_is_made_by_make_lock():
    text = LOCK.read_text()
    pins = locked(text)
    assert len(pins) > 50, "the lock pins the transitive dependencies too"
    for pin in pins:
        assert [s.operator for s in pin.specifier] == ["=="], f"not an exact pin: {pin}"
    assert MAKE_LOCK in text.splitlines()[1], "regenerate the lock with `make lock`"
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"pip compile (--quiet )?pyproject\.toml --extra dev --universal --python-version 3\.11\b",
                     makefile)
    assert re.search(r"(?m)^\$\(STAMP\): pyproject\.toml \$\(LOCK\)$", makefile)
    assert re.search(r"(?m)^LOCK\s*:= requirements\.lock$", makefile)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda t: t.replace('"pyyaml>=6.0",', '"pyyaml>=6.0",\n    "humanize>=4.9",'), "humanize>=4.9 has 0"),
        (lambda t: t.replace('"numpy>=2.0"', '"numpy>=9.0"'), "numpy>=9.0 is locked at"),
    ],
    ids=["new dependency", "tightened bound"],
)
def test_a_forgotten_make_lock_is_caught(change, complaint):
    text = PYPROJECT.read_text()
    edited = change(text)
    assert edited != text
    assert any(complaint in p for p in uncovered(edited, LOCK.read_text()))
