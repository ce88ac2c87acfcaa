# Two entry points for a fresh machine (see README):
#   make pipeline   set up .venv and run the whole pipeline (dvc repro) on the embedded data, on CPU
#   make test       set up .venv and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup pipeline test ui clean-outputs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

pipeline: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

test: setup
	$(BIN)/python -m pytest -ra

ui: setup
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" --port 5000

clean-outputs:
	rm -rf data/prepared data/synthetic models metrics plots .ganaug
