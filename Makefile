PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

$(BIN)/arlm: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	MAX_ORDER=10 $(BIN)/pip install -q -e '.[dev]'  # MAX_ORDER: the highest n-gram order kenlm is built for (its default is 6)
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
