"""Every example in README.rst and in the documentation (docs/*.rst) is run, and its output
checked against what the page says.

The conventions (follow them when you add to README.rst or to a page of docs/):

* ``.. code-block:: python`` -- a Python example. It runs as a script in a subprocess (the
  project's Python, a scratch copy of the checkout as the working directory, with
  ``SEGMENT_WRITE_KEY`` set to a dummy key) and must exit with status 0. Make it complete: its
  imports, the names it uses (``SEGMENT_WRITE_KEY = os.environ["SEGMENT_WRITE_KEY"]``), and
  assertions for what it claims. A block that assigns ``EVENT_TRACKING_BACKENDS`` (settings) is
  also built through :func:`eventtracking.loader.load`, so every ENGINE and option in it must
  load; what it builds is closed again without sending anything.
* ``.. code-block:: text`` right after a python block -- what that block prints (see matching).
* ``.. code-block:: console`` -- shell commands: each ``$ `` line is a command, run by bash in
  the scratch copy (the lines of one block in one shell, so ``cd`` and ``.`` carry over), with
  the checkout's ``.venv/bin`` first on ``PATH`` as after ``. .venv/bin/activate``. The lines
  after a command, up to the next ``$``, are what it prints (stdout and stderr). Its exit status
  must be 0, unless its output shows a line ``exit status N: ...`` (the replay summary's), then N.
* Matching output: each non-blank line shown must appear in the real output, in that order
  (other lines may come between); runs of spaces count as one; ``...`` in a line stands for
  any text (times, paths, ports).
* Benchmark figures: a ``::`` block introduced by a paragraph that names a script of
  ``make bench`` (``benchmarks/NAME.py``) is that script's output. The script is run here with
  small sizes (:data:`SMALL_BENCH`) and the block must have the shape of what it prints: the same
  lines in the same order once numbers (or ``…``, a figure still to fill in), dicts and verdicts
  are left out. So a figure in the README is always a line the command prints.
* ``::`` literal blocks are not run: diagrams, figures, and synopses of commands with
  placeholders (``eventtracking deadletters list --spool DIR``). So that no example hides there,
  a literal block may hold no ``$`` prompt, no Python statement, and no command line
  (``eventtracking``, ``python``, ``pip``, ``make``...) without a placeholder (an UPPERCASE word
  or ``<words in angle brackets>``), except
  the commands that are the test suite itself or take minutes (:data:`NOT_RUN`).
* ``.. not run: REASON`` -- a comment on the line (blank lines aside) just above the paragraph
  that introduces a ``::`` block (or above a bare ``::``) lets that block hold code that cannot
  run here, for the REASON given (it needs a part this checkout does not have). Its Python must
  still compile. Use it sparingly: an example that can run belongs in a python block.

The scratch copy holds the checkout's files as a fresh clone would (``git ls-files``, plus files
not yet committed), with ``.venv`` and ``.envs`` linked to the checkout's (``make demo`` then
finds its environment built). pip runs offline there: ``PIP_NO_INDEX`` and ``PIP_FIND_LINKS``
point at the wheels ``make test`` downloaded into ``.envs/wheelhouse``.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.rst"
PAGES = [README, *sorted((REPO / "docs").glob("*.rst"))]  # every page whose examples are run
WHEELS = REPO / ".envs" / "wheelhouse"  # made by make test (the Makefile's WHEELHOUSE)
TIMEOUT = 300  # seconds for one block (an install builds a wheel)
NOT_RUN = {"make test", "make bench", "make lint"}  # the test suite itself; minutes of benchmarks
COMMAND_WORDS = ("eventtracking", "python", "python3", "pip", "make", "git", ".venv/", "curl", "gunicorn")
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]{1,}\b|<[^<>]+>")  # DIR, KEY, URL, FILE, <git host>...
NOT_RUN_MARK = re.compile(r"^\.\. not run:\s*(.*?)\s*$")
PYTHON_STATEMENT = re.compile(r"^(import |from \S+ import |[A-Za-z_][\w.]* = |>>> |def |class )")
WRITE_KEY_VARIABLES = ("SEGMENT_WRITE_KEY", "EVENTTRACKING_WRITE_KEY", "EVENTTRACKING_COLLECTOR_WRITE_KEY")


@dataclass
class Block:
    kind: str  # "python", "console", "text", or "literal" (a :: block)
    line: int  # where its content starts in its page (1-based)
    text: str
    page: str = "README.rst"  # the page's path in the checkout
    not_run: Optional[str] = None  # a literal block's ``.. not run:`` reason

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.kind} block)"


def paragraph_start(lines: List[str], index: int) -> int:
    """The first line of the paragraph that holds ``lines[index]``."""
    while index > 0 and lines[index - 1].strip():
        index -= 1
    return index


def not_run_reason(lines: List[str], literal_line: int) -> Optional[str]:
    """The reason of a ``.. not run:`` comment just above the paragraph ending on ``literal_line``."""
    above = paragraph_start(lines, literal_line) - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    mark = NOT_RUN_MARK.match(lines[above].strip()) if above >= 0 else None
    return mark.group(1) if mark else None


def parse_blocks(source: str, page: str = "README.rst") -> List[Block]:
    """A page's code blocks, in order."""
    lines = source.splitlines()
    blocks: List[Block] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = re.match(r"^(\s*)\.\. code-block::\s*(\w+)\s*$", line)
        literal = line.rstrip().endswith("::") and not line.lstrip().startswith("..")
        if not (directive or literal):
            index += 1
            continue
        indent = len(line) - len(line.lstrip())
        kind = directive.group(2) if directive else "literal"
        reason = None if directive else not_run_reason(lines, index)
        index += 1
        while index < len(lines) and re.match(r"^\s+:\w[\w-]*:", lines[index]):  # directive options
            index += 1
        content: List[str] = []
        start = index + 1
        while index < len(lines):
            current = lines[index]
            if current.strip() and len(current) - len(current.lstrip()) <= indent:
                break
            content.append(current)
            index += 1
        text = textwrap.dedent("\n".join(content)).strip("\n")
        if text:
            line = start + next(i for i, c in enumerate(content) if c.strip()) - 1
            blocks.append(Block(kind, line, text, page, reason))
    return blocks


def page_name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


BLOCKS = [
    block for path in PAGES for block in parse_blocks(path.read_text(encoding="utf-8"), page_name(path))
]


def block_id(block: Block) -> str:
    return f"{block.page}:line{block.line}"


# -- the scratch copy ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A copy of the checkout as a fresh clone has it (plus uncommitted files), .venv linked."""
    root = tmp_path_factory.mktemp("readme") / "checkout"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True, timeout=60,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)  # keeps mtimes: make sees .venv up to date
    for environment in (".venv", ".envs"):
        (root / environment).symlink_to(REPO / environment, target_is_directory=True)
    return root


def environment() -> dict:
    env = {name: value for name, value in os.environ.items() if name not in WRITE_KEY_VARIABLES}
    env["PATH"] = os.pathsep.join([str(REPO / ".venv" / "bin"), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(REPO / ".venv")
    env["PIP_NO_INDEX"] = "1"  # tests use no network: the wheels make test downloaded
    env["PIP_FIND_LINKS"] = str(WHEELS)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["COLUMNS"] = "100"
    env.pop("PYTHONPATH", None)
    return env


# -- matching ------------------------------------------------------------------------------------


def normalise(line: str) -> str:
    return " ".join(line.split())


def matches(expected: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in normalise(expected).split("..."))
    return re.fullmatch(pattern, normalise(actual)) is not None


def missing_lines(expected: str, output: str) -> List[str]:
    """The expected lines not found, in order, in ``output`` (empty when all are there)."""
    actual = [line for line in output.splitlines() if line.strip()]
    position = 0
    missing = []
    for line in (line for line in expected.splitlines() if line.strip()):
        found = next((i for i in range(position, len(actual)) if matches(line, actual[i])), None)
        if found is None:
            missing.append(line)
        else:
            position = found + 1
    return missing


def expected_status(expected: str) -> int:
    status = re.search(r"^\s*exit status (\d+):", expected, re.MULTILINE)
    return int(status.group(1)) if status else 0


# -- python blocks -------------------------------------------------------------------------------

SETTINGS_CHECK = '''

# Added by tests/test_readme.py: the settings load through the loader, and are closed again.
from eventtracking import loader as _loader

def _close(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            _close(value)
    elif hasattr(tree, "backends"):
        _close(tree.backends)
    if hasattr(tree, "close"):
        tree.close(0)

_close(_loader.load(EVENT_TRACKING_BACKENDS))
'''


def expected_output_of(block: Block) -> Optional[str]:
    following = BLOCKS.index(block) + 1
    if following < len(BLOCKS) and BLOCKS[following].kind == "text" and BLOCKS[following].page == block.page:
        return BLOCKS[following].text
    return None


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "python"], ids=block_id)
def test_python_block_runs(block: Block, scratch: Path, tmp_path: Path):
    code = block.text
    if re.search(r"^EVENT_TRACKING_BACKENDS\s*=", code, re.MULTILINE):
        code += SETTINGS_CHECK
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = environment()
    env["SEGMENT_WRITE_KEY"] = "readme-example-key"
    result = subprocess.run(
        [sys.executable, str(script)], cwd=scratch, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, f"{block} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, f"{block} printed a traceback:\n{result.stderr}"
    expected = expected_output_of(block)
    if expected is not None:
        missing = missing_lines(expected, result.stdout)
        assert not missing, f"{block}: not printed: {missing}\n--- printed:\n{result.stdout}"


# -- console blocks ------------------------------------------------------------------------------


def commands_of(block: Block) -> List[Tuple[str, str]]:
    """``(command, expected output)`` for each ``$`` line of a console block."""
    commands: List[Tuple[str, List[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
        elif line.strip():
            raise AssertionError(f"{block}: output before the first $ command: {line!r}")
    return [(command, "\n".join(output)) for command, output in commands]


def run_console(block: Block, cwd: Path) -> List[Tuple[str, int, str]]:
    """Run the block's commands in one bash; ``(command, status, output)`` for each."""
    script = ["set +e"]
    for index, (command, _) in enumerate(commands_of(block)):
        script.append(f"printf '\\n@@command {index}@@\\n'")
        script.append(command)
        script.append(f"printf '\\n@@status {index} %s@@\\n' \"$?\"")
    result = subprocess.run(
        ["bash", "-c", "\n".join(script) + "\n"],
        cwd=cwd,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
    )
    outcomes = []
    for index, (command, _) in enumerate(commands_of(block)):
        match = re.search(rf"@@command {index}@@\n(.*?)\n@@status {index} (\d+)@@", result.stdout, re.S)
        assert match, f"{block}: `{command}` did not finish:\n{result.stdout}"
        outcomes.append((command, int(match.group(2)), match.group(1)))
    return outcomes


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "console"], ids=block_id)
def test_console_block_runs_and_prints_what_the_readme_says(block: Block, scratch: Path):
    for (command, expected), (_, status, output) in zip(commands_of(block), run_console(block, scratch)):
        assert status == expected_status(expected), f"{block}: `{command}` exited {status}:\n{output}"
        missing = missing_lines(expected, output)
        assert not missing, f"{block}: `{command}` did not print {missing}\n--- it printed:\n{output}"
        assert "Traceback" not in output, f"{block}: `{command}` printed a traceback:\n{output}"


# -- literal blocks ------------------------------------------------------------------------------


def hidden_examples(block: Block) -> List[str]:
    """What in a literal block should be a python or console block instead (see the docstring)."""
    found = []
    for line in block.text.splitlines():
        stripped = line.strip()
        command = stripped.split("#")[0].strip()
        if stripped.startswith("$ "):
            found.append(f"a $ prompt: make it a console block: {stripped}")
        elif PYTHON_STATEMENT.match(stripped):
            found.append(f"Python: make it a python block: {stripped}")
        elif command.split(" ")[0].startswith(COMMAND_WORDS) and command not in NOT_RUN:
            if not PLACEHOLDER.search(command):
                found.append(f"`{command}` can be run as it is: put it in a console block, with its output")
    return found


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "literal"], ids=block_id)
def test_literal_blocks_hide_no_runnable_example(block: Block):
    if block.not_run is None:
        assert hidden_examples(block) == [], str(block)
        return
    assert block.not_run, f"{block}: `.. not run:` says why the block cannot run here"
    if any(PYTHON_STATEMENT.match(line.strip()) for line in block.text.splitlines()):
        compile(block.text, str(block), "exec")  # a SyntaxError fails the test


def test_a_not_run_comment_marks_the_literal_block_below_it():
    page = "Text.\n\n.. not run: needs a branch\n\nThe client::\n\n    import analytics\n\n"
    page += "After::\n\n    x = 1\n"
    first, second = parse_blocks(page)
    assert (first.not_run, second.not_run) == ("needs a branch", None)
    assert parse_blocks(".. not run: later\n\n::\n\n    import os\n")[0].not_run == "later"


def test_the_literal_block_rule_tells_examples_from_synopses():
    def literal(text: str) -> Block:
        return Block("literal", 1, text)

    assert hidden_examples(literal("eventtracking replay examples/sample_tracking.log --local"))
    assert hidden_examples(literal("$ make demo")) and hidden_examples(literal("import os"))
    assert hidden_examples(literal("python -m pip install ."))
    assert not hidden_examples(literal("eventtracking deadletters list --spool DIR"))
    assert not hidden_examples(literal('pip install "event-tracking @ git+https://<git host>/<p>.git"'))
    assert not hidden_examples(literal("make test    # the whole suite"))
    assert not hidden_examples(literal("Tracker.emit ─▶ processors ─▶ RoutingBackend"))


# -- benchmark figures ---------------------------------------------------------------------------

SMALL_BENCH = {  # arguments that keep each benchmark to seconds, with every line of its report
    "bench.py": ["--events", "300", "--rounds", "1", "--burst", "3000", "--buffer-mb", "1"],
    "bench_spool.py": ["--events", "300", "--rounds", "1"],
    "bench_replay.py": ["--lines", "2000", "--rounds", "2"],
    "bench_openedx.py": ["--events", "200", "--rounds", "1"],
    "bench_async.py": ["--events", "200", "--down-events", "20", "--original-down-events", "2"],
    "bench_client.py": ["--events", "300", "--rounds", "1"],
}


def shape(line: str) -> str:
    """A report line without its figures: what stays the same from run to run."""
    line = re.sub(r"\{[^}]*\}", "{}", line)
    line = re.sub(r"[\d…][\d,.…]*", "#", line)
    line = re.sub(r"\s(ok|MISSED|FAIL)\s*$", "", line)
    return " ".join(line.split())


def bench_scripts() -> List[str]:
    """The scripts ``make bench`` runs, in order."""
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "no bench target in the Makefile"
    return re.findall(r"benchmarks/(\w+\.py)", recipe.group(1))


def figures_block(script: str) -> Block:
    """The literal block (of any page) whose introducing paragraph names ``benchmarks/SCRIPT``."""
    found = []
    for block in (b for b in BLOCKS if b.kind == "literal"):
        lines = (REPO / block.page).read_text(encoding="utf-8").splitlines()
        start = block.line - 2  # the "::" line is above the blank line before the content
        while start > 0 and not lines[start].rstrip().endswith("::"):
            start -= 1
        if f"benchmarks/{script}" in " ".join(lines[paragraph_start(lines, start) : start + 1]):
            found.append(block)
    assert len(found) == 1, f"the docs should show the figures of benchmarks/{script} in one :: block"
    return found[0]


@pytest.mark.parametrize("script", bench_scripts())
def test_benchmark_figures_have_the_shape_the_script_prints(script: str):
    block = figures_block(script)
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *SMALL_BENCH[script]],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, env=environment(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    printed = [shape(line) for line in result.stdout.splitlines() if line.strip()]
    shown = [shape(line) for line in block.text.splitlines() if line.strip()]
    assert shown == printed, f"{block} is not what benchmarks/{script} prints:\n{result.stdout}"


def test_the_readme_has_examples_of_each_kind():
    kinds = {block.kind for block in BLOCKS}
    assert {"python", "console", "literal"} <= kinds
    assert not [b for b in BLOCKS if b.kind not in ("python", "console", "text", "literal")], (
        "only python, console and text code blocks are known to tests/test_readme.py"
    )
    texts = [b for b in BLOCKS if b.kind == "text"]
    for block in texts:
        previous = BLOCKS[BLOCKS.index(block) - 1]
        assert previous.kind == "python" and previous.page == block.page, (
            f"{block} follows no python block: whose output is it?"
        )


def test_every_page_of_the_docs_is_read():
    assert {page_name(path) for path in PAGES} >= {"README.rst", "docs/index.rst", "docs/benchmarks.rst"}


def test_the_matching_rules():
    output = "replay summary\n  lines read            30 in 1 input\n  elapsed  0.2 s (150 lines/s)\n"
    shown = "replay summary\nlines read 30 in 1 input\nelapsed ... s (... lines/s)"
    assert missing_lines(shown, output) == []
    assert missing_lines("elapsed ... lines/s)\nreplay summary", output) == ["replay summary"]  # in order
    assert missing_lines("lines read 31 in 1 input", output) == ["lines read 31 in 1 input"]
    assert expected_status("...\nexit status 1: 2 lines unreadable") == 1 and expected_status("ok") == 0


# -- the operations page -------------------------------------------------------------------------


def package_loggers() -> List[str]:
    """The name of every logger the package makes for itself: one per module, named after it."""
    names = []
    for path in sorted((REPO / "eventtracking").rglob("*.py")):
        if re.search(r"\b(getLogger|get_task_logger)\(__name__\)", path.read_text(encoding="utf-8")):
            module = path.relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
            names.append(module.removesuffix(".__init__"))
    return names


def test_the_operations_page_names_every_logger():
    page = (REPO / "docs" / "operations.rst").read_text(encoding="utf-8")
    loggers = package_loggers()
    assert "eventtracking.backends.segment" in loggers and "eventtracking.tasks" in loggers
    assert [name for name in loggers if f"``{name}``" not in page] == []


LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
ANY = "\0"  # in a logged message: one of its arguments (a %s, %d... of its format)
OMITTED = "\1"  # in a quoted line: ``...``, a part left out (any text, the code's included)
VALUE = "\2"  # in a quoted line: an UPPERCASE placeholder (N, DIR, NAME): one of the arguments


def logged_messages() -> List[str]:
    """Every message the package logs with some text of its own: its format, arguments made ANY."""
    messages = []
    for path in sorted((REPO / "eventtracking").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            # DropWarning.dropped(log, message, ...) logs its second argument
            argument = node.args[1:2] if name == "dropped" else node.args[:1] if name in LOG_METHODS else []
            for text in map(string_of, argument):
                message = re.sub(r"%[-#0-9.]*[sdrfi]", ANY, text or "")
                if len(message.replace(ANY, "").strip()) >= 8:  # not "%s %s": that says nothing
                    messages.append(message)
    return messages


def string_of(node: ast.AST) -> Optional[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else ANY for part in node.values)
    return None


def could_be_the_same(quoted: str, logged: str) -> bool:
    """Whether the quoted line (an :func:`as_pattern`) can be a line the ``logged`` message makes.

    An argument of the message (ANY) stands for a value of the quote: any text holding at most
    one placeholder (VALUE) or left-out part (OMITTED), and no ``": "`` (a value is not a clause).
    A left-out part of the quote (OMITTED) stands for any text of the message.
    """

    @functools.cache
    def match(i: int, j: int, holes: int) -> bool:  # holes: VALUE/OMITTED taken by the current ANY
        if i == len(quoted) and j == len(logged):
            return True
        if j < len(logged) and logged[j] == ANY:
            if match(i, j + 1, 0):  # the argument ends here
                return True
            if i < len(quoted) and not quoted.startswith(": ", i):  # it takes one more character
                hole = quoted[i] in (VALUE, OMITTED)
                if holes + hole <= 1 and match(i + 1, j, holes + hole):
                    return True
        if i < len(quoted) and quoted[i] == OMITTED:
            if match(i + 1, j, 0) or (j < len(logged) and match(i, j + 1, 0)):
                return True
        return i < len(quoted) and j < len(logged) and quoted[i] == logged[j] and match(i + 1, j + 1, 0)

    return match(0, 0, 0)


def documented_messages() -> List[str]:
    """The log lines quoted in the terms of the operations page's warnings section."""
    page = (REPO / "docs" / "operations.rst").read_text(encoding="utf-8")
    section = page[page.index("What each warning means") :]
    terms = [line for line in section.splitlines() if line and not line[0].isspace()]
    return [quoted for term in terms for quoted in re.findall(r"``(.+?)``", term)]


def as_pattern(quoted: str) -> str:
    """A quoted log line as a pattern: ``...`` is OMITTED, UPPERCASE placeholders (N, DIR) VALUE."""
    return re.sub(r"\b[A-Z][A-Z_]*\b", VALUE, quoted.replace("...", OMITTED))


def test_each_warning_the_operations_page_explains_is_one_the_code_logs():
    messages = logged_messages()
    quoted = documented_messages()
    assert len(quoted) > 30 and len(messages) > 50
    unknown = []
    for line in quoted:
        pattern = as_pattern(line)
        words = re.findall(r"[A-Za-z_]{5,}", pattern)
        candidates = [message for message in messages if any(word in message for word in words)]
        if not any(could_be_the_same(pattern, message) for message in candidates):
            unknown.append(line)
    assert unknown == [], "docs/operations.rst quotes log lines the code does not log (reworded?)"


def test_the_log_line_patterns():
    def same(quoted: str, logged: str) -> bool:
        return could_be_the_same(as_pattern(quoted), logged.replace("%s", ANY))

    assert not same("buffer full (N bytes)", "%s: cannot start its thread: %s")  # N is one value
    assert not same("spool DIR: cannot wrote acked: ...", "spool %s: cannot read part %s: %s")
    assert same("dropped N messages: gave_up (DETAIL)", "dropped %s %s: %s%s")
    assert same("spool DIR: cannot write acked: ...", "spool %s: cannot write %s: %s")
    assert not same("spool DIR: cannot read part", "spool: cannot delete %s: %s")
    full = "buffer full (%s bytes): dropped %s events since the last warning"
    assert not same("buffer full (N bytes): dropped N events", full)  # the end of a line is quoted too
    assert same("buffer full (N bytes): dropped N events ...", full)
    assert not same("flush timed out", "flush timed out after %ss")
