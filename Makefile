# Two entry points, both of which set up the environment first:
#   make demo   -- train a small digits network, prune it, print the table
#   make test   -- run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# OpenBLAS workers sleep between products instead of spinning (see README, Performance)
demo: setup
	OPENBLAS_THREAD_TIMEOUT=$${OPENBLAS_THREAD_TIMEOUT:-4} $(BIN)/nettrim demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,bench]"
	$(BIN)/python benchmarks/prune_digits.py
	$(BIN)/python benchmarks/compare_methods.py
	$(BIN)/python benchmarks/solver_vs_cvxpy.py
	$(BIN)/python benchmarks/rho_rule.py
	$(BIN)/python benchmarks/sample_complexity.py
	$(BIN)/python benchmarks/torch_backend.py
	$(BIN)/python benchmarks/scaling.py

clean:
	rm -rf $(VENV) build *.egg-info
