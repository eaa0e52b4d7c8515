"""Installing this package on an Open edX site replaces Open edX's event-tracking, cleanly.

A fresh virtualenv gets what a site has: event-routing-backends (ERB), which brings Open edX's
event-tracking 4.1.5. Then this package is installed the ways docs/openedx.rst
says (a wheel built from this checkout; a git URL; the clone's path), and each time:

- the only event-tracking distribution is ours (5.0.0), and every file of the ``eventtracking``
  package is one of ours, with our content: none of the original's files is left behind or shared
  (checked against both distributions' RECORD files);
- ``pip check`` is clean with ERB installed;
- installing ERB again (plainly, with ``--upgrade``, with the eager upgrade strategy) keeps ours.

Nothing comes from the network: the wheels are in .envs/wheelhouse, which ``make test`` fills
beforehand (``pip wheel``); pip runs with ``--no-index`` and without the machine's pip config.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / ".envs" / "wheelhouse"
OURS = "5.0.0"
ORIGINAL = "4.1.5"
ERB = "edx-event-routing-backends"

pytestmark = pytest.mark.timeout(900)


def pip_env() -> dict[str, str]:
    """The environment without any pip configuration (no index, find-links or constraints)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.pop("PYTHONPATH", None)
    return env


def run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in command], env=pip_env(), cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def pip(venv: Path, *args: str | Path) -> str:
    return run(venv / "bin" / "python", "-m", "pip", *args)


def pip_offline(venv: Path, *args: str | Path) -> str:
    return pip(venv, "install", "--no-index", "--find-links", WHEELHOUSE, *args)


def site_packages(venv: Path) -> Path:
    [path] = (venv / "lib").glob("python3*/site-packages")
    return path


def record(dist_info: Path) -> dict[str, str]:
    """RECORD's paths (relative to site-packages) and their hashes ('' when none is recorded)."""
    with open(dist_info / "RECORD", newline="") as file:
        return {row[0]: row[1] for row in csv.reader(file) if row}


def file_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def installed_version(venv: Path) -> str:
    [dist_info] = site_packages(venv).glob("event_tracking-*.dist-info")  # exactly one distribution
    return dist_info.name[len("event_tracking-") : -len(".dist-info")]


def put_back_the_original(venv: Path) -> dict[str, str]:
    """The site as it is before us: ERB with Open edX's event-tracking. Returns the original's RECORD."""
    pip_offline(venv, "--no-deps", f"event-tracking=={ORIGINAL}")
    assert installed_version(venv) == ORIGINAL
    return record(site_packages(venv) / f"event_tracking-{ORIGINAL}.dist-info")


def assert_only_ours(venv: Path, original: dict[str, str]) -> None:
    packages = site_packages(venv)
    assert installed_version(venv) == OURS
    ours = record(packages / f"event_tracking-{OURS}.dist-info")
    package_files = {p for p in ours if p.startswith("eventtracking/")}
    assert "eventtracking/segment/encoding.py" in package_files  # a module only we have

    tree = (packages / "eventtracking").rglob("*")
    on_disk = {p.relative_to(packages).as_posix() for p in tree if p.is_file()}
    not_ours = set()
    for path in on_disk - package_files:
        # A bytecode file compiled after the install is ours only if its source is one of ours.
        parent, name = path.rsplit("/", 1)
        source = f"{parent.removesuffix('/__pycache__')}/{name.split('.', 1)[0]}.py"
        if not (parent.endswith("/__pycache__") and source in package_files):
            not_ours.add(path)
    assert not not_ours, f"files of the eventtracking package that are not ours: {sorted(not_ours)}"
    assert package_files <= on_disk, f"files of ours missing: {sorted(package_files - on_disk)}"
    for path in package_files:
        if ours[path]:  # the content is ours too: none is a file shared with the original
            assert file_hash(packages / path) == ours[path], path

    # The original's files at the same paths have other content, so the hash check above tells
    # them apart; the original's files we do not have are gone.
    assert original["eventtracking/tracker.py"] != ours["eventtracking/tracker.py"]
    theirs_only = {p for p in original if p.startswith("eventtracking/") and p not in package_files}
    left = sorted(p for p in theirs_only if (packages / p).exists())
    assert not left, f"the original's files left behind: {left}"

    code = "import eventtracking; print(eventtracking.__file__)"
    imported = run(venv / "bin" / "python", "-c", code, cwd=venv)  # not from the checkout in the cwd
    assert Path(imported.strip()) == packages / "eventtracking" / "__init__.py"
    assert "No broken requirements found" in pip(venv, "check")


def assert_erb_installs_keep_ours(venv: Path, original: dict[str, str]) -> None:
    for options in ([], ["--upgrade"], ["--upgrade", "--upgrade-strategy", "eager"]):
        pip_offline(venv, *options, ERB)
        assert installed_version(venv) == OURS, f"pip install {' '.join(options)} {ERB} put the original back"
    assert_only_ours(venv, original)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A fresh virtualenv on this interpreter with ERB installed (so Open edX's event-tracking)."""
    assert (WHEELHOUSE / ".downloaded").exists(), "make test fills .envs/wheelhouse first"
    venv = tmp_path_factory.mktemp("site") / "venv"
    run(sys.executable, "-m", "venv", venv)
    pip_offline(venv, "--upgrade", "pip")  # the bundled one may be old; a site's is current
    pip_offline(venv, ERB)
    assert installed_version(venv) == ORIGINAL  # ERB really brought the original
    return venv


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """This checkout's files (tracked and new, not ignored) as a clean source tree: no build/ or
    egg-info left over from earlier builds can leak into the wheel."""
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=ROOT)
    tree = tmp_path_factory.mktemp("clone") / "eventtracking"
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():  # a file deleted but not yet committed is still listed
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    return tree


def test_a_wheel_of_this_checkout_replaces_the_original(site, checkout, tmp_path):
    original = put_back_the_original(site)
    # README: python -m pip wheel --no-deps -w dist . ; then pip install dist/event_tracking-*.whl
    pip(site, "wheel", "--no-deps", "--no-index", "--find-links", WHEELHOUSE, "-w", tmp_path, checkout)
    [wheel] = tmp_path.glob("event_tracking-*.whl")
    assert wheel.name == f"event_tracking-{OURS}-py3-none-any.whl"
    pip_offline(site, wheel)
    assert_only_ours(site, original)
    assert_erb_installs_keep_ours(site, original)


def test_a_git_url_replaces_the_original(site, checkout):
    original = put_back_the_original(site)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    run(*git, "init", "--quiet", cwd=checkout)
    run(*git, "add", "--all", cwd=checkout)
    run(*git, "commit", "--quiet", "-m", "snapshot", cwd=checkout)
    # README: pip install "event-tracking @ git+https://…" (file:// here: no network in tests)
    pip_offline(site, f"event-tracking @ git+{checkout.as_uri()}")
    assert_only_ours(site, original)
    assert_erb_installs_keep_ours(site, original)


def test_a_clone_path_replaces_the_original(site, checkout):
    original = put_back_the_original(site)
    pip_offline(site, checkout)  # README: pip install /path/to/a/clone
    assert_only_ours(site, original)
