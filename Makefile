# Syncwarden: `make run` starts the service on the embedded default; `make test` checks everything.
# Both create and refresh the virtualenv themselves, so a fresh clone needs only Python 3.11+ and make.

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { echo $$p; break; }; \
	done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp

.PHONY: run test lint typecheck pytest migrate install clean card-previews lock bench

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Syncwarden needs Python 3.11 or newer on PATH (python3.11, python3.12, ...)." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstalled whenever the project's metadata or the lock changes. requirements.lock pins every
# Python package (the ones CI tested); `make lock` remakes it after pyproject.toml changes.
LOCK := requirements.lock
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	@touch $@

lock: $(STAMP)
	$(BIN)/pip-compile --quiet --upgrade --strip-extras --no-emit-index-url --no-emit-find-links \
		--extra dev --extra manifest --output-file $(LOCK) pyproject.toml

# Node packages the tests use (Microsoft's Adaptive Cards renderer), pinned by package-lock.json.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "The tests need Node.js 20+ with npm on PATH." >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/syncwarden migrate
	@echo ""
	@echo "Syncwarden will listen on http://127.0.0.1:3978. To talk to it like Teams does, open"
	@echo "Microsoft's Agents Playground in another terminal (the sandbox's people are preset):"
	@echo "  cd docs/playground && TEAMSAPPTESTER_BROWSER=none npx --yes @microsoft/m365agentsplayground \\"
	@echo "      -e http://127.0.0.1:3978/api/messages -c msteams --dt -p 56150"
	@echo "then browse to http://localhost:56150 and say: add me to calendar sync"
	@echo ""
	SYNCWARDEN_MODE=sandbox $(BIN)/syncwarden serve --sandbox

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(NODE_STAMP)
	$(BIN)/pytest

# Every card rendered to card-previews/*.png by Microsoft's renderer in headless Chromium.
card-previews: $(STAMP) $(NODE_STAMP)
	@command -v chromium >/dev/null 2>&1 || { \
		echo "Installing Debian's chromium for the previews..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	$(BIN)/python -m tests.support.card_previews

migrate: $(STAMP)
	$(BIN)/syncwarden migrate

# The benchmarks (bench/README.md): numbers printed beside a reference measured in the same run,
# nothing asserted.
# The PostgreSQL server the benchmarks create their databases on (and drop them after).
BENCH_POSTGRES ?= postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

bench: $(STAMP)
	$(BIN)/python -m bench.click_bench --postgres $(BENCH_POSTGRES)
	$(BIN)/python -m bench.scan_bench
	$(BIN)/python -m bench.reconcile_bench
	$(BIN)/python -m bench.sync_bench --database-url $(BENCH_POSTGRES)

clean:
	rm -rf $(VENV) node_modules var .mypy_cache .ruff_cache .pytest_cache .hypothesis
