# One command each: `make demo` runs the demo, `make test` runs the whole suite.
# Both create the virtual environment and install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: install demo test lint typecheck unit integration services bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "zeroserve needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/zeroserve demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

services:
	bash scripts/services.sh

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP) services
	$(BIN)/pytest tests/integration

test: $(STAMP) services lint typecheck
	$(BIN)/pytest tests --durations=25

bench: $(STAMP)
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) .zeroserve .mypy_cache .ruff_cache .pytest_cache
