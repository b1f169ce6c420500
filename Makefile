# irs: `make run` sets everything up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint sample bench-spatial clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

sample: setup
	$(PY) -m irs sample sample --count 24 --seed 0

run: sample
	IRS_PROFILE=$${IRS_PROFILE:-test} $(PY) -m irs --db irs-db index sample
	IRS_PROFILE=$${IRS_PROFILE:-test} $(PY) -m irs --db irs-db search "a red circle on the left" -k 5

lint: setup
	$(PY) -m ruff check .

test: setup lint
	$(PY) -m pytest -q

clean:
	rm -rf irs-db sample .pytest_cache
