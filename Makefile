PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean chromium

$(BIN)/arlm: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/arlm

install: $(BIN)/arlm

demo: install
	$(BIN)/arlm demo

test: install chromium
	$(BIN)/python -m pytest -n 2 tests

# Debian's chromium for the playground's browser test (Playwright drives it; no browser download)
chromium:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

bench: install
	$(BIN)/python bench/ngram.py

clean:
	rm -rf $(VENV) build *.egg-info
