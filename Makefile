# Two entry points, both of which set up the environment first:
#   make demo   -- install the package alone, train a small digits network, prune it, print the table
#   make test   -- install the package with its test tools, run the test suite
# pip's output (setuptools' notices included) goes to .venv/install.log and is shown only
# when an install fails.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOG    := $(VENV)/install.log
INSTALL = $(BIN)/python -m pip install --quiet -c constraints.txt

.PHONY: setup setup-dev demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip > $(LOG) 2>&1 || { cat $(LOG); exit 1; }

# the library and its command (what `make demo` needs)
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(INSTALL) -e . >> $(LOG) 2>&1 || { cat $(LOG); exit 1; }
	touch $@

# plus the test suite's tools (pytest, hypothesis, dask, the notebook runner, matplotlib, mnist1d)
$(VENV)/.installed-dev: $(VENV)/.installed
	$(INSTALL) -e ".[dev]" >> $(LOG) 2>&1 || { cat $(LOG); exit 1; }
	touch $@

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

# OpenBLAS workers sleep between products instead of spinning (see README, Performance)
demo: setup
	OPENBLAS_THREAD_TIMEOUT=$${OPENBLAS_THREAD_TIMEOUT:-4} $(BIN)/nettrim demo

test: setup-dev
	$(BIN)/python -m pytest -q

bench: setup-dev
	$(INSTALL) -e ".[dev,bench]" >> $(LOG) 2>&1 || { cat $(LOG); exit 1; }
	$(BIN)/python benchmarks/prune_digits.py
	$(BIN)/python benchmarks/compare_methods.py
	$(BIN)/python benchmarks/solver_vs_cvxpy.py
	$(BIN)/python benchmarks/rho_rule.py
	$(BIN)/python benchmarks/sample_complexity.py
	$(BIN)/python benchmarks/torch_backend.py
	$(BIN)/python benchmarks/scaling.py

clean:
	rm -rf $(VENV) build *.egg-info
