# Perimeter: `make run` starts the whole local stack, `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m tools.stack

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check shared services tools tests
	$(BIN)/ruff format --check shared services tools tests
	$(BIN)/mypy shared services tools

clean:
	rm -rf $(VENV) var
