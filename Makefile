# One place for the commands a developer and CI run.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv test lint check demo bench catalog docs clean

$(BIN)/loops: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/loops

# Two processes (pytest-xdist), a test file each at a time: the suite's end-to-end tests
# mostly wait on subprocesses, so two files side by side use the two cores.
test: venv  ## the whole test suite (needs Redis on 127.0.0.1:6379 or $$REDIS_URL)
	$(BIN)/pytest -q -n 2 --dist loadfile

lint: venv  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

demo: venv  ## the embedded demo from the README
	$(BIN)/loops demo

bench: venv
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

catalog: venv  ## regenerate docs/EVENT-CATALOG.md
	$(BIN)/python -m events.catalog > docs/EVENT-CATALOG.md

docs: catalog  ## regenerate every generated doc (event catalog, configuration, JSON schemas)
	$(BIN)/python -m app.configdoc > docs/CONFIGURATION.md
	$(BIN)/python -m loops.schemas

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
