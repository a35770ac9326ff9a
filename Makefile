# Two commands for a fresh machine:
#   make demo   set up the environment and run the main job end to end
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/kerasops train cnn --dataset digits
	$(BIN)/kerasops train rnn --dataset sunspots
	$(BIN)/kerasops train transformer --dataset bbc_news
	$(BIN)/kerasops compare

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
