# interest-stream: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/interest-stream
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
UV     := $(VENV)/bin/uv
# uv only writes the lock (`make lock`); installs use pip. Pinned so the lock's format does not drift.
UV_VERSION ?= 0.13.9
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help venv lock test test-unit demo broker broker-stop lint bench clean

help:
	@echo "make demo    - start a local Kafka broker, produce demo events, run the clusterer"
	@echo "make test    - create $(VENV), install with the dev extra, run every test (real broker included)"
	@echo "make bench   - run the benchmarks and print their tables"
	@echo "make broker  - start a local Kafka broker in the background (make broker-stop stops it)"
	@echo "make lint    - ruff"
	@echo "make lock    - re-resolve $(LOCK) from pyproject.toml (UPGRADE=1: newest versions of everything)"

# Installs are locked: every package, transitive ones included, comes at the version pinned in
# $(LOCK) (all platforms, Python 3.11+; regenerate with `make lock`), then the project itself
# without dependency resolution, then `pip check`. pip keeps its download cache in ~/.cache/pip,
# so a reinstall does not download torch again.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

# Resolve pyproject.toml (base + dev extra) for every platform into $(LOCK). Pins still allowed by
# pyproject.toml are kept; UPGRADE=1 moves everything to the newest allowed versions
# (UPGRADE_PACKAGE=torch: only that one). Then `make test` installs the new lock and tests it.
LOCK_ARGS := $(if $(UPGRADE),--upgrade) $(if $(UPGRADE_PACKAGE),--upgrade-package $(UPGRADE_PACKAGE))
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(PY) -m pip install --quiet 'uv==$(UV_VERSION)'
	$(UV) pip compile --quiet pyproject.toml --extra dev --universal --python-version 3.11 $(LOCK_ARGS) -o $(LOCK)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest -m "not integration"

demo: $(STAMP)
	$(CLI) demo

broker: $(STAMP)
	$(CLI) broker start

broker-stop: $(STAMP)
	$(CLI) broker stop

lint: $(STAMP)
	$(VENV)/bin/ruff check stream consumers tests bench

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
