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

# An Open edX site's packages as wheels, for the tests that install offline (--no-index): ERB
# (which brings Open edX's event-tracking 4.1.5) on Django 5.2 as Open edX runs it, and what
# building and installing this package needs, with a current pip.
WHEELHOUSE := .envs/wheelhouse
WHEELHOUSE_STAMP := $(WHEELHOUSE)/.downloaded
SITE_PACKAGES := "edx-event-routing-backends==10.1.0" "event-tracking==4.1.5" "Django>=5.2,<6.0" \
	pip "setuptools>=77" wheel orjson urllib3 tqdm

# An LMS without event-routing-backends: this package (editable) with Django 5.2, Celery,
# edx-django-utils, edx-celeryutils and edx-platform's Segment client, analytics-python
# 1.4.post1, which installs both `analytics` 1.4 and `segment.analytics` 2.2.2. The drop-in tests
# and benchmark run on it; its pins (backoff 1.10) conflict with segment-analytics-python 2.x.
ANALYTICS14 := .envs/analytics14
ANALYTICS14_STAMP := $(ANALYTICS14)/.installed

.PHONY: demo test bench lint clean redis-server

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

$(WHEELHOUSE_STAMP): Makefile $(STAMP)
	$(BIN)/python -m pip wheel --quiet --wheel-dir $(WHEELHOUSE) $(SITE_PACKAGES)
	touch $(WHEELHOUSE_STAMP)

$(ANALYTICS14_STAMP): Makefile pyproject.toml
	$(PYTHON) -m venv $(ANALYTICS14)
	$(ANALYTICS14)/bin/python -m pip install --quiet --upgrade pip
	$(ANALYTICS14)/bin/python -m pip install --quiet -e ".[django,celery]" \
		"analytics-python==1.4.post1" "Django>=5.2,<6.0" edx-django-utils edx-celeryutils
	touch $(ANALYTICS14_STAMP)

# The tests' real broker and event bus: Debian's redis-server (the tests start their own, on a
# free loopback port). Installed only when missing; apt-get needs root, as on CI.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; }

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP) $(ORIGINAL_STAMP) $(WHEELHOUSE_STAMP) $(ANALYTICS14_STAMP) redis-server
	$(BIN)/python -m pytest

bench: $(STAMP) $(ORIGINAL_STAMP) $(ANALYTICS14_STAMP) redis-server
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/bench_openedx.py
	$(BIN)/python benchmarks/bench_spool.py
	$(BIN)/python benchmarks/bench_replay.py
	$(BIN)/python benchmarks/bench_async.py
	$(BIN)/python benchmarks/bench_client.py

lint: $(STAMP)
	$(BIN)/ruff check eventtracking tests examples benchmarks
	$(BIN)/mypy eventtracking

clean:
	rm -rf $(VENV) .envs build *.egg-info .pytest_cache
