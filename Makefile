# callcharge: `make help` lists the targets.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo check test test-fast test-unit test-component test-clocks test-integration lint format bench bench-scale bench-steps soak stack-up stack-down clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server is missing: install it (e.g. apt-get install redis-server)"; exit 1; fi; }
	@command -v faketime >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null; \
	  else echo "faketime is missing: install it (e.g. apt-get install faketime)"; exit 1; fi; }
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "promtool is missing: install it (e.g. apt-get install prometheus)"; exit 1; fi; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[embedded,test]'
	@touch $(STAMP)

# The hot path compiled with mypyc where a C compiler exists (pure Python otherwise; it says
# which): the charging core (processors/) and, in the same mypyc group, the generated Avro
# module (pipeline/adapters/avro/fast.py), into build directories named by the sources'
# digest (processors/native.py). Rebuilt when a source changes.
FAST    := build/.core.built
$(FAST): $(STAMP) pipeline/adapters/avro/fast.py pipeline/adapters/avro/prims.py $(wildcard processors/*.py)
	@rm -f processors/*.so processors/.native.sha256 pipeline/adapters/avro_fast*.so  # the in-place layout of earlier versions
	$(BIN)/python -m pipeline.dev.build
	@mkdir -p build && touch $@

setup: $(STAMP) $(FAST) ## create .venv, install callcharge with test extras, compile the hot path (Avro and the charging core: mypyc, or pure Python without a C compiler); redis-server and promtool if missing (root)

demo: $(STAMP) $(FAST) ## run the whole pipeline on the embedded stack and print a summary
	$(BIN)/callcharge demo

test: $(STAMP) $(FAST) ## lint (ruff, mypy), unit and integration tests (integration starts its own embedded stack)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy processors pipeline
	$(MAKE) --no-print-directory test-clocks
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

check: $(STAMP) $(FAST) ## the fast loop, under 3 minutes: lint (ruff, mypy), the unit and component tests (no servers)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy processors pipeline
	$(BIN)/python -m pytest -q -n 2 tests/unit tests/component

test-unit: $(STAMP) $(FAST) ## unit tests only (no servers)
	$(BIN)/python -m pytest -q tests/unit

test-component: $(STAMP) $(FAST) ## component tests only: the workers in process on in-memory clients (pipeline/dev/testing.py)
	$(BIN)/python -m pytest -q tests/component

# The wall clocks the unit tier also runs at (UTC), by Debian's faketime (libfaketime under
# the interpreter: every clock read, ours and the libraries', starts there and runs on):
# early in a month; the first hour of 1 January at UTC+14 (Pacific/Kiritimati) and at
# UTC-12; the EU daylight-saving change. A test that reads "now" must pass at each.
# The test that re-runs the whole tier on the Python source runs once, at today's clock, and
# so do the newcomer's commands against servers that are not there (no date in them; they
# wait out the broker's 10 s).
CLOCKS  := 2026-12-02T10:00:00 2026-12-31T10:30:00 2027-01-01T12:30:00 2027-03-28T01:30:00
test-clocks: $(STAMP) $(FAST) ## the unit tests at pinned clocks (a month's first days, New Year at UTC+14 and UTC-12, a DST change), two at a time
	@mkdir -p .callcharge/clocks; printf '%s\n' $(CLOCKS) | xargs -P 2 -I{} sh -c '\
	  log=.callcharge/clocks/{}.log; \
	  if faketime -f "@$$(echo {} | tr T " ")" $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit \
	      -o addopts="--strict-markers" tests/component --basetemp=.callcharge/clocks/tmp-{} \
	      --deselect tests/unit/test_compiled_core.py::test_the_unit_suite_passes_on_the_python_source \
	      --ignore tests/unit/test_newcomer.py >$$log 2>&1; \
	  then echo "unit tests at {} UTC: $$(tail -n 1 $$log)"; \
	  else cat $$log; echo "unit tests at {} UTC: FAILED"; exit 255; fi'

test-fast: $(STAMP) $(FAST) ## unit and integration tests without the slow scenarios (marked slow: crash loops, 100k runs, fresh venvs), two processes
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

test-integration: $(STAMP) $(FAST) ## integration tests only (real broker and Redis)
	$(BIN)/python -m pytest -q tests/integration

lint: $(STAMP) ## ruff (lint + format check) and mypy strict on processors/ and pipeline/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy processors pipeline

format: $(STAMP) ## apply ruff formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) $(FAST) ## passthrough vs charging worker (1 and N processes, CPU per CDR), latency at 1 000 CDR/s and half load; bench/results.json
	$(BIN)/callcharge bench

bench-scale: $(STAMP) $(FAST) ## how cost grows: 200 tenants vs 10 000 tenants with 1 000 000 users (largest 300 000); Redis memory and bytes per call, directory memory, rebuild and report times, idle control; bench/scale.json
	$(BIN)/python -m pipeline.dev.scale

bench-steps: $(STAMP) $(FAST) ## steps 3-5 alone (read, fold, apply), in process on the embedded Redis: CPU per CDR at 200 vs 10 000 tenants, no broker in the loop
	$(BIN)/python -m pipeline.dev.steps

soak: $(STAMP) $(FAST) ## 200 000 CDRs, 2 workers, 20 SIGKILLs, a Redis restart, control kills, 1 % hostile input; writes bench/soak.json
	$(BIN)/callcharge soak

stack-up: $(STAMP) $(FAST) ## start the embedded broker and Redis (ports 19092, 16379)
	$(BIN)/callcharge stack up
	$(BIN)/callcharge topics create

stack-down: $(STAMP) ## stop exactly the processes stack-up started
	$(BIN)/callcharge stack down

clean: ## remove the venv and local state
	rm -rf $(VENV) processors/_build pipeline/adapters/avro/_build build .callcharge .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
