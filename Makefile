PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

# -qq: pip prints errors only (not the warnings about index locations that a
# machine's pip configuration may add); pyproject.toml's package-dir keeps
# setuptools' editable-install notice away. Re-run only when pyproject.toml changes.
PIP := $(BIN)/pip install -qq --disable-pip-version-check

$(BIN)/arlm: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	MAX_ORDER=10 $(PIP) -e '.[dev]'  # MAX_ORDER: the highest n-gram order kenlm is built for (its default is 6)
	touch $(BIN)/arlm

install: $(BIN)/arlm

demo: install
	$(BIN)/arlm demo

test: install
	$(BIN)/python -m pytest -n 2 tests

bench: install
	$(BIN)/python bench/ngram.py

clean:
	rm -rf $(VENV) build *.egg-info
