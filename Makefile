# A newcomer's commands: `make demo` and `make test`. Each sets itself up in .venv.
# Open edX's packages need Python 3.12: take it when the machine has it.
PYTHON ?= $(shell for p in python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3; do \
		$$p -c "" 2>/dev/null && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
# make demo needs the package alone (its collector included); make test adds the test extra.
BASE_STAMP := $(VENV)/.base
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
# And every extra's dependencies at edx-platform's pins (tests/test_extras.py installs each extra
# under them). Our own wheel, built on the way, is removed: ERB's requirement on event-tracking
# must find the original there, and the tests build ours from the checkout.
EDX_CONSTRAINTS := tests/edx-platform-constraints.txt
EXTRAS := django,segment,celery,eventbus,mongodb,openedx,test

# Open edX's event-tracking 4.1.5 as published (its sdist, with its own test suite), extracted:
# tests/test_original_suite.py runs that suite on the original's code and on this package.
ORIGINAL_SDIST := .envs/original-sdist
ORIGINAL_SDIST_STAMP := $(ORIGINAL_SDIST)/.extracted

# An LMS without event-routing-backends: this package (editable) with Django 5.2, Celery,
# edx-django-utils, edx-celeryutils and edx-platform's Segment client, analytics-python
# 1.4.post1, which installs both `analytics` 1.4 and `segment.analytics` 2.2.2. The drop-in tests
# and benchmark run on it; its pins (backoff 1.10) conflict with segment-analytics-python 2.x.
ANALYTICS14 := .envs/analytics14
ANALYTICS14_STAMP := $(ANALYTICS14)/.installed

# Tutor (from PyPI) with this repository's Tutor plugin (editable), in an env of its own: Tutor's pins
# are its own business. The plugin's tests run its `tutor` command in a TUTOR_ROOT sandbox.
TUTOR := .envs/tutor
TUTOR_STAMP := $(TUTOR)/.installed

# The documentation site's tools (pyproject's docs extra), beside the test extra in .venv.
DOCS_STAMP := $(VENV)/.docs-installed

.PHONY: demo test bench lint docs clean redis-server

# A .venv that already has the test extra for this pyproject.toml (built before .base existed)
# holds the package: it is not installed again.
$(BASE_STAMP): pyproject.toml
	@if [ ! -f $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ]; then set -x; \
		$(PYTHON) -m venv $(VENV) && \
		$(BIN)/python -m pip install --quiet --upgrade pip && \
		$(BIN)/python -m pip install --quiet -e .; \
	fi
	touch $(BASE_STAMP)

$(STAMP): $(BASE_STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

$(ORIGINAL_STAMP): Makefile
	$(PYTHON) -m venv $(ORIGINAL)
	$(ORIGINAL)/bin/python -m pip install --quiet --upgrade pip
	$(ORIGINAL)/bin/python -m pip install --quiet \
		"analytics-python==1.4.post1" \
		"celery[redis]" \
		"event-tracking==4.1.5"
	touch $(ORIGINAL_STAMP)

$(WHEELHOUSE_STAMP): Makefile pyproject.toml $(EDX_CONSTRAINTS) $(STAMP)
	$(BIN)/python -m pip wheel --quiet --wheel-dir $(WHEELHOUSE) $(SITE_PACKAGES)
	$(BIN)/python -m pip wheel --quiet --wheel-dir $(WHEELHOUSE) --constraint $(EDX_CONSTRAINTS) ".[$(EXTRAS)]"
	rm -f $(WHEELHOUSE)/event_tracking-5.*.whl
	touch $(WHEELHOUSE_STAMP)

$(ORIGINAL_SDIST_STAMP): $(STAMP)
	rm -rf $(ORIGINAL_SDIST)
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: --dest $(ORIGINAL_SDIST) \
		"event-tracking==4.1.5"
	tar -xzf $(ORIGINAL_SDIST)/event_tracking-4.1.5.tar.gz -C $(ORIGINAL_SDIST)
	touch $(ORIGINAL_SDIST_STAMP)

# The tests' broker transport is Redis: the redis client, and packaging, which kombu's Redis
# transport imports (kombu declares it only in its [redis] extra, whose pins are the site's choice).
$(ANALYTICS14_STAMP): Makefile pyproject.toml
	$(PYTHON) -m venv --clear $(ANALYTICS14)
	$(ANALYTICS14)/bin/python -m pip install --quiet --upgrade pip
	$(ANALYTICS14)/bin/python -m pip install --quiet -e ".[django,celery]" redis packaging \
		"analytics-python==1.4.post1" "Django>=5.2,<6.0" edx-django-utils edx-celeryutils
	touch $(ANALYTICS14_STAMP)

$(TUTOR_STAMP): Makefile tutor-contrib-eventtracking/pyproject.toml
	$(PYTHON) -m venv $(TUTOR)
	$(TUTOR)/bin/python -m pip install --quiet --upgrade pip
	$(TUTOR)/bin/python -m pip install --quiet -e ./tutor-contrib-eventtracking
	touch $(TUTOR_STAMP)

# The tests' real broker and event bus: Debian's redis-server (the tests start their own, on a
# free loopback port). Installed only when missing; apt-get needs root, as on CI.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; }

demo: $(BASE_STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP) $(ORIGINAL_STAMP) $(ORIGINAL_SDIST_STAMP) $(WHEELHOUSE_STAMP) $(ANALYTICS14_STAMP) $(TUTOR_STAMP) redis-server
	$(BIN)/python -m pytest

bench: $(STAMP) $(ORIGINAL_STAMP) $(ANALYTICS14_STAMP) redis-server
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/bench_openedx.py
	$(BIN)/python benchmarks/bench_spool.py
	$(BIN)/python benchmarks/bench_replay.py
	$(BIN)/python benchmarks/bench_async.py
	$(BIN)/python benchmarks/bench_client.py

# The Sphinx site in docs/_build/html; any warning fails the build, as on CI.
docs: $(DOCS_STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check eventtracking tests examples benchmarks tutor-contrib-eventtracking
	$(BIN)/mypy eventtracking

clean:
	rm -rf $(VENV) .envs build *.egg-info .pytest_cache docs/_build
