PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-dev demo test bench clean chromium

# -qq: pip prints errors only (not the warnings about index locations that a
# machine's pip configuration may add); pyproject.toml's package-dir keeps
# setuptools' editable-install notice away. Re-run only when pyproject.toml changes.
PIP := $(BIN)/pip install -qq --disable-pip-version-check

$(BIN)/arlm: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $(BIN)/arlm

# the test tools (pytest, transformers, kenlm, lm-eval, openai, playwright) only for `make test`
$(VENV)/.dev: $(BIN)/arlm
	MAX_ORDER=10 $(PIP) -e '.[dev]'  # MAX_ORDER: the highest n-gram order kenlm is built for (its default is 6)
	touch $@

install: $(BIN)/arlm

install-dev: $(VENV)/.dev

demo: install
	$(BIN)/arlm demo

test: install-dev chromium
	$(BIN)/python -m pytest -n 2 tests

# Debian's chromium for the playground's browser test (Playwright drives it; no browser download)
chromium:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

bench: install-dev
	$(BIN)/python bench/ngram.py

clean:
	rm -rf $(VENV) build *.egg-info
