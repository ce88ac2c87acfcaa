# Entry points for a fresh machine (see README "The two commands"); none needs the venv activated:
#   make pipeline           set up .venv and run the whole pipeline (dvc repro) on the embedded data
#   make test               set up .venv and run the test suite
#   make exp S="gan.lr_g=0.0001 gan.epochs=20"   one DVC experiment with these params changed
#   make ui                 the MLflow UI on http://127.0.0.1:5000
#   make team-server DB=postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow   a team tracking server (README "Working as a team")
#   make params-doc         regenerate README's params reference from src/ganaug/config.py
#   make lock               rewrite requirements.lock from the installed .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# Lines of the lock that only Linux installs (torch's CUDA libraries and triton); pip skips them elsewhere.
LINUX_ONLY := ^(nvidia-|cuda-|triton==)

.PHONY: setup pipeline test exp ui team-server params-doc lock clean-outputs

setup: $(VENV)/.installed

# Exact versions from requirements.lock (pip's progress bars on: the download is several GB and
# takes minutes), then ganaug itself, editable, without resolving anything else.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar on "$$(grep -E '^pip==' requirements.lock)"
	$(BIN)/python -m pip install --progress-bar on -r requirements.lock
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

pipeline: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest -ra

exp: setup
	@test -n "$(S)" || { echo 'make exp: give the params to change, e.g. make exp S="gan.lr_g=0.0001"' >&2; exit 2; }
	$(BIN)/dvc exp run $(addprefix -S ,$(S))

ui: setup
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" --port 5000

# A team tracking server: runs and registry in PostgreSQL (DB), artifacts kept in ARTIFACTS and sent
# through the server (clients need no access to that folder or bucket), bound to 127.0.0.1 only.
ARTIFACTS ?= $(CURDIR)/mlartifacts-team
PORT      ?= 5000
team-server: setup
	@test -n "$(DB)" || { echo 'make team-server: give the backend store, e.g. DB=postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow' >&2; exit 2; }
	$(BIN)/mlflow server --backend-store-uri "$(DB)" --artifacts-destination "$(ARTIFACTS)" --host 127.0.0.1 --port $(PORT)

params-doc: setup
	$(BIN)/python -m ganaug.params_doc --write README.md

# After changing pyproject.toml's dependencies: `.venv/bin/pip install -e ".[dev]"`, then `make lock`.
lock:
	@{ echo "# Exact versions of every dependency of ganaug[dev], resolved on Linux x86_64 with CPython 3.11."; \
	  echo "# make setup installs from this file; pyproject.toml keeps the version ranges for library users."; \
	  echo "# Regenerate with: make lock (from the installed .venv)."; \
	  $(BIN)/python -m pip freeze --all --exclude-editable \
	    | sed -E '/$(LINUX_ONLY)/s/$$/ ; platform_system == "Linux"/'; } > requirements.lock

clean-outputs:
	rm -rf data/prepared data/synthetic models metrics plots .ganaug
