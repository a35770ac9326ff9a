# Two commands for a fresh machine:
#   make demo   set up the environment and run the main job end to end
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint espeak-ng

setup: $(VENV)/.installed espeak-ng

# espeak-ng speaks the built-in speech_commands dataset (data/audio.py): installed with apt-get
# when missing and apt-get is there; otherwise a note, and preparing speech_commands says the fix.
espeak-ng:
	@command -v espeak-ng >/dev/null || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) || \
	  echo "note: espeak-ng is missing and apt-get could not install it;" \
	    "install espeak-ng to prepare speech_commands"; }

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# The main job: DVC set up (git repository, `dvc init`, a local remote, raw data versioned), then
# the Prefect pipeline (prepare -> validate -> train cnn/digits, rnn/sunspots,
# transformer/bbc_news -> evaluate -> report), then the runs side by side.
DEMO_MODELS := --model cnn --model rnn --model transformer

demo: setup
	git rev-parse --git-dir >/dev/null 2>&1 || git init -q
	$(BIN)/kerasops data setup
	$(BIN)/kerasops run-pipeline $(DEMO_MODELS)
	$(BIN)/kerasops compare

# Two processes share the tests, a file each at a time (its module fixtures built once); the
# tests marked serial, which time processes against each other, then run alone.
test: setup
	$(BIN)/python -m pytest -q --durations=25 -n 2 --dist loadfile -m "not serial"
	$(BIN)/python -m pytest -q --durations=10 -m serial

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
