# CaseBridge — every target creates .venv and installs what it needs on first use.
# Kafka comes from Maven Central via the project's own launcher (or Docker, or $KAFKA_BOOTSTRAP_SERVERS).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=
CHROMIUM    ?= /usr/bin/chromium
APT_GET     ?= apt-get

.DEFAULT_GOAL := help
.PHONY: help install chromium demo test test-unit test-integration test-faults lint bench broker-start broker-stop clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "CaseBridge needs Python 3.11+ (set PYTHON=python3.11)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv and install CaseBridge with its test and dev tools

demo: $(STAMP) ## start the local broker and run the demonstration (see README)
	$(VENV)/bin/casebridge demo

chromium: ## Debian's chromium for the monitor page test: installed when missing (root with apt), else the command to run
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v "$(APT_GET)" >/dev/null 2>&1; then \
	    echo "== installing Debian's chromium for the monitor page test"; \
	    $(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq chromium >/dev/null; \
	  else \
	    echo "make test needs Chromium ($(CHROMIUM)) for the monitor page test; install it first:" >&2; \
	    echo "    sudo apt-get install -y chromium" >&2; exit 2; \
	  fi; \
	fi

test: $(STAMP) chromium ## the whole suite: unit tests, then integration tests on real Kafka brokers (and Chromium)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## the unit tests: the core and every adapter without a broker (tests/unit, ~1 min)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP) chromium ## integration tests on real Kafka brokers
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-faults: $(STAMP) ## fault-injection tests on a 3-node KRaft cluster
	$(PY) -m pytest -m faults -s tests/faults $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy --strict
	$(VENV)/bin/ruff check services tests bench
	$(VENV)/bin/mypy

bench: $(STAMP) ## benchmarks; results in bench/results/
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

broker-start: $(STAMP) ## start the local Kafka broker on 127.0.0.1:9092
	$(VENV)/bin/casebridge broker start

broker-stop: $(STAMP) ## stop the local Kafka broker
	$(VENV)/bin/casebridge broker stop

clean: ## remove .venv, local state and caches (the Kafka jar cache in ~/.cache stays)
	-$(VENV)/bin/casebridge broker stop 2>/dev/null
	rm -rf $(VENV) .casebridge .pytest_cache .mypy_cache .ruff_cache .hypothesis
