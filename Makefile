# samkit: `make demo`, `make test`, `make test-fast` and `make lint` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
VENDOR := samkit/server/web/vendor

.PHONY: demo test test-fast lint bench venv services clean

# torch first (the CPU wheel), so that nothing below pulls a CUDA build.
$(VENV)/.installed: pyproject.toml $(VENDOR)/.installed
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[dev,server]'  # every extra, the test and lint tools (pyproject.toml)
	touch $@

# The in-browser mask decoder's runtime: onnxruntime-web (pinned in web/package-lock.json) from the npm
# registry, its WASM build copied into the package (samkit/server/web/vendor/, gitignored): users need no
# Node.js at run time. Node.js and npm from Debian where missing.
ORT_DIST     := web/node_modules/onnxruntime-web/dist
VENDOR_FILES := ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm
$(VENDOR)/.installed: web/package.json web/package-lock.json
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
	cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)
	cp $(addprefix $(ORT_DIST)/,$(VENDOR_FILES)) $(VENDOR)/
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/samkit demo

# Services the tests need, from Debian's packages: PostgreSQL (tests/postgres.py starts a private
# cluster with its initdb / pg_ctl) and chromium (the browser tests drive /usr/bin/chromium with Playwright;
# never a browser download). Installed here where missing, so a fresh machine needs no extra step.
services:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql; }
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium; }

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
	rm -rf $(VENV) web/node_modules $(VENDOR) demo_out .pytest_cache .mypy_cache .ruff_cache
