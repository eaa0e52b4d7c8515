"""``make demo`` installs only what the demo runs; ``make test``'s environment adds the test extra.

In a fresh copy of the checkout (no ``.venv``), with pip offline (the wheels of
.envs/wheelhouse): ``make demo`` builds a ``.venv`` holding this package and its three
dependencies, none of the test extra (Django, Celery, pytest...), and prints what README shows.
Then ``make .venv/.installed`` (what ``make test`` builds first) adds the test extra to the same
``.venv``, and ``make demo`` afterwards still runs, installing nothing again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_openedx_install import WHEELHOUSE, pip_env

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(1200)


def make(tree: Path, target: str) -> str:
    env = pip_env()
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELHOUSE), MAKEFLAGS="")
    result = subprocess.run(
        ["make", "--no-print-directory", target], cwd=tree, env=env, capture_output=True, text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"make {target}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def distributions(tree: Path) -> set[str]:
    [site] = (tree / ".venv" / "lib").glob("python3*/site-packages")
    return {path.name.split("-")[0].lower() for path in site.glob("*.dist-info")}


def test_make_demo_installs_the_package_alone_and_make_test_adds_the_rest(tmp_path):
    assert (WHEELHOUSE / ".downloaded").exists(), "make test fills .envs/wheelhouse first"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
        capture_output=True, text=True, check=True,
    ).stdout
    tree = tmp_path / "clone"
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    assert not (tree / ".venv").exists()

    out = make(tree, "demo")
    # README's `make demo` output
    assert "the collector received 4 track messages:" in out
    assert "SegmentBackend: accepted 4, delivered 4, skipped {'no_user_id': 1}, dropped {}" in out
    installed = distributions(tree)
    assert {"event_tracking", "orjson", "urllib3", "tqdm"} <= installed
    assert not installed & {"django", "celery", "kombu", "pytest", "mypy", "gunicorn", "pymongo"}, installed
    assert not (tree / ".venv" / ".installed").exists()
    size = sum(path.stat().st_size for path in (tree / ".venv").rglob("*") if path.is_file())
    print(f"make demo's .venv: {size / 2**20:.0f} MiB, {len(installed)} distributions")

    make(tree, ".venv/.installed")  # make test's first prerequisite: the test extra on top
    assert {"django", "celery", "pytest", "mypy"} <= distributions(tree)

    out = make(tree, "demo")  # after make test's environment: runs, reinstalls nothing
    assert out.splitlines()[0] == ".venv/bin/python examples/demo.py"  # the demo alone ran
    assert "the collector received 4 track messages:" in out
    assert os.path.exists(tree / ".venv" / ".base")
