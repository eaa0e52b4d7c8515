"""Each extra installs beside an LMS: under edx-platform's pins, offline, with ``pip check`` clean.

An LMS pins Django, Celery, kombu, redis, openedx-events, edx-toggles and PyMongo
(tests/edx-platform-constraints.txt, from edx-platform's requirements/edx/base.txt). An extra
that required more than the site's pins allow (``celery[redis]`` pulled ``kombu[redis]``, whose
redis bound excludes the LMS's redis 7.1) would make pip backtrack and fail inside the site.
Here every extra is installed into a fresh virtualenv from a wheel of this checkout, under those
constraints, from .envs/wheelhouse only (``make test`` fills it, with the pinned versions).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_openedx_install import WHEELHOUSE, pip, run

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = Path(__file__).resolve().parent / "edx-platform-constraints.txt"
EXTRAS = ["django", "segment", "celery", "eventbus", "mongodb", "openedx", "test"]

pytestmark = pytest.mark.timeout(900)


def pins() -> dict[str, str]:
    """The constraints file's pins: normalised distribution name -> version."""
    pinned = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pinned[name.lower().replace("_", "-")] = version
    return pinned


def installed(venv: Path) -> dict[str, str]:
    listing = pip(venv, "list", "--format=freeze")
    pairs = (line.split("==") for line in listing.splitlines() if "==" in line)
    return {name.lower().replace("_", "-"): version for name, version in pairs}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of this checkout, built offline."""
    assert (WHEELHOUSE / ".downloaded").exists(), "make test fills .envs/wheelhouse first"
    directory = tmp_path_factory.mktemp("wheel")
    run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--find-links", WHEELHOUSE,
        "-w", directory, ROOT,
    )
    [built] = directory.glob("event_tracking-*.whl")
    return built


def test_the_constraints_are_edx_platforms_pins_of_the_shared_packages():
    assert set(pins()) >= {"django", "celery", "kombu", "redis", "openedx-events", "edx-toggles", "pymongo"}


@pytest.mark.parametrize("extra", EXTRAS)
def test_each_extra_installs_under_edx_platforms_pins(extra, wheel, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    pip(venv, "install", "--no-index", "--find-links", WHEELHOUSE, "--constraint", CONSTRAINTS,
        f"{wheel}[{extra}]")
    assert "No broken requirements found" in pip(venv, "check")
    versions = installed(venv)
    assert versions["event-tracking"] == "5.0.0"
    # Whatever of the pinned packages the extra brings is at the LMS's version.
    brought = {name: versions[name] for name in pins() if name in versions}
    assert brought == {name: pins()[name] for name in brought}
    if extra in ("celery", "openedx"):
        assert brought["celery"] == "5.6.2" and brought["kombu"] == "5.6.2"
        assert "redis" not in versions  # the transport is the site's choice, not the extra's
    if extra == "test":
        assert brought["redis"] == "7.1.0"  # the tests' own redis client, at the LMS's pin
