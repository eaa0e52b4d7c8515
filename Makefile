# A newcomer's commands: `make demo` and `make test`. Each sets itself up in .venv.
# Open edX's packages need Python 3.12: take it when the machine has it.
PYTHON ?= $(shell for p in python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3; do \
		$$p -c "" 2>/dev/null && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Open edX's own event-tracking 4.x, as an LMS runs it (analytics-python 1.4.post1, Celery on
# Redis): the side-by-side of the benchmarks and of the tests that compare with the original.
ORIGINAL := .envs/original
ORIGINAL_STAMP := $(ORIGINAL)/.installed

# What README's install lines need, as wheels: tests/test_readme.py runs them offline from here.
WHEELS := .envs/wheels
WHEELS_STAMP := $(WHEELS)/.downloaded

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

$(ORIGINAL_STAMP): Makefile
	$(PYTHON) -m venv $(ORIGINAL)
	$(ORIGINAL)/bin/python -m pip install --quiet --upgrade pip
	$(ORIGINAL)/bin/python -m pip install --quiet \
		"analytics-python==1.4.post1" \
		"celery[redis]" \
		"event-tracking==4.1.5"
	touch $(ORIGINAL_STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

$(WHEELS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip wheel --quiet --wheel-dir $(WHEELS) ".[django]" "setuptools>=77" wheel
	rm -f $(WHEELS)/event_tracking-*.whl  # the project itself is built from the checkout
	touch $(WHEELS_STAMP)

test: $(STAMP) $(ORIGINAL_STAMP) $(WHEELS_STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP) $(ORIGINAL_STAMP)
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/bench_spool.py
	$(BIN)/python benchmarks/bench_replay.py

lint: $(STAMP)
	$(BIN)/ruff check eventtracking tests examples benchmarks
	$(BIN)/mypy eventtracking

clean:
	rm -rf $(VENV) .envs build *.egg-info .pytest_cache
