# Two commands for a newcomer: `make demo` and `make test`.  Each creates .venv
# on a fresh machine and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OUT ?= out/demo

.PHONY: demo test bench venv clean

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	touch $@

# Everything the demo and the whole suite need: the library, real data, plots, tests.
$(VENV)/.installed: $(VENV)/.base pyproject.toml
	$(PIP) install --quiet -e ".[dev,data,plot]"
	touch $@

venv: $(VENV)/.installed

# The main job on the built-in real instance, then `analyze` on a sample file
# drawn from it (the path a user takes with their own samples).
demo: $(VENV)/.installed
	$(VENV)/bin/klfrontier demo --out $(OUT)
	$(VENV)/bin/klfrontier samples out/samples.jsonl
	$(VENV)/bin/klfrontier analyze out/samples.jsonl --out out/analyze

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_single.py
	@if [ -f benchmarks/bench_sequences.py ]; then $(PY) benchmarks/bench_sequences.py; fi
	$(PY) benchmarks/bench_analyze.py

# `klfrontier analyze` on 1M and 10M sample rows against a pyarrow read-and-average
# floor (sample files cached in $TMPDIR/klfrontier-bench; ARGS=--quick for 1M only).
.PHONY: bench-analyze
bench-analyze: $(VENV)/.installed
	$(PY) benchmarks/bench_analyze.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist out
