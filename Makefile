# samkit: `make demo`, `make test`, `make test-fast` and `make lint` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0

.PHONY: demo test test-fast lint bench venv services clean

# torch first (the CPU wheel), so that nothing below pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[dev,server]'  # every extra, the test and lint tools (pyproject.toml)
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/samkit demo

# Services the tests need, from Debian's packages: PostgreSQL (tests/postgres.py starts a private
# cluster with its initdb / pg_ctl). Installed here where missing, so a fresh machine needs no extra step.
services:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql; }

# Everything (CI).
test: $(VENV)/.installed services
	$(PY) -m pytest -q

# Everyday lane: the tests not marked slow, on two workers.
test-fast: $(VENV)/.installed services
	$(PY) -m pytest -q -m "not slow" -n 2

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check samkit tests bench scripts
	$(VENV)/bin/mypy samkit

bench: $(VENV)/.installed
	$(PY) bench/predictor.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache .mypy_cache .ruff_cache
