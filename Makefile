# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# CI=true also runs the slow suites.
ifeq ($(CI),true)
PYTEST_MARKS := -m "slow or not slow"
endif

.PHONY: demo test lint typecheck unit protos bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/privproc demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check services tests bench tools
	$(BIN)/ruff format --check services tests bench tools

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest $(PYTEST_MARKS)

protos: $(STAMP)
	$(BIN)/python tools/gen_protos.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .privproc .pytest_cache .mypy_cache .ruff_cache
