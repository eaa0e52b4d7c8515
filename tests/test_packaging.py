"""Packaging as a newcomer meets it: builds and installs print no warning, the package is typed.

Everything runs offline: pip takes the build and runtime dependencies from the wheels
``make test`` downloaded into ``.envs/wheelhouse``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / ".envs" / "wheelhouse"  # made by make test (the Makefile's WHEELHOUSE)
TIMEOUT = 600


def offline_env() -> dict:
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELS), PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    return env


def pip(python: Path, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "pip", *args], cwd=cwd, env=offline_env(), capture_output=True, text=True,
        timeout=TIMEOUT,
    )


def warnings_in(output: str) -> list:
    """Lines that warn, except pip's own about index locations of this machine's pip config."""
    return [
        line for line in output.splitlines()
        if "warning" in line.lower() and "is ignored: it is neither a file nor a directory" not in line
    ]


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fresh") / "env"
    venv.EnvBuilder(with_pip=True).create(directory)
    return directory / "bin" / "python"


def test_the_wheel_builds_without_a_warning_and_ships_py_typed(tmp_path):
    result = pip(Path(sys.executable), "wheel", "--no-deps", "--wheel-dir", str(tmp_path), ".")
    assert result.returncode == 0, result.stdout + result.stderr
    assert warnings_in(result.stdout + result.stderr) == []  # the SPDX license: no classifier warning
    [wheel] = tmp_path.glob("event_tracking-5.0.0-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "eventtracking/py.typed" in names
    assert {name.split("/")[0] for name in names} == {"eventtracking", "event_tracking-5.0.0.dist-info"}
    metadata = zipfile.ZipFile(wheel).read("event_tracking-5.0.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_the_editable_install_make_does_prints_no_warning(fresh_python):
    result = pip(fresh_python, "install", "--no-deps", "-e", ".")
    assert result.returncode == 0, result.stdout + result.stderr
    assert warnings_in(result.stdout + result.stderr) == [], result.stdout + result.stderr
    imported = subprocess.run(
        [str(fresh_python), "-c", "import eventtracking; print(eventtracking.__file__)"],
        cwd="/", capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert imported.stdout.strip() == str(REPO / "eventtracking" / "__init__.py")  # the checkout itself


def test_mypy_passes_on_the_package():
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Success: no issues found")
