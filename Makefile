# interest-stream: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/interest-stream
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help venv test test-unit demo broker broker-stop lint bench clean

help:
	@echo "make demo    - start a local Kafka broker, produce demo events, run the clusterer"
	@echo "make test    - create $(VENV), install with the dev extra, run every test (real broker included)"
	@echo "make bench   - run the benchmarks and print their tables"
	@echo "make broker  - start a local Kafka broker in the background (make broker-stop stops it)"
	@echo "make lint    - ruff"

# pip keeps its download cache in ~/.cache/pip, so a reinstall does not download torch again.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

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
