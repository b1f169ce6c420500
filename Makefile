# irs: `make run` sets everything up and starts the app; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= demo
DB ?= irs-db-$(PROFILE)
PORT ?= 8501

.PHONY: setup browser run index-sample test lint bench-spatial train-clip screenshot clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

# Debian's Chromium, for the one real-browser test
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

sample:
	$(MAKE) setup
	$(PY) -m irs sample sample --count 48 --seed 1

# index the sample folder (the demo profile runs offline in seconds), then serve the app on 127.0.0.1
index-sample: setup
	test -d sample || $(PY) -m irs sample sample --count 48 --seed 1
	IRS_PROFILE=$(PROFILE) $(PY) -m irs --db $(DB) index sample --quiet

run: index-sample
	IRS_PROFILE=$(PROFILE) IRS_DB=$(DB) $(PY) -m streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

lint: setup
	$(PY) -m ruff check .

test: setup browser lint
	IRS_REQUIRE_BROWSER=1 $(PY) -m pytest -q

bench-spatial: setup
	$(PY) bench/spatial.py

train-clip: setup
	$(PY) bench/train_synthetic_clip.py

screenshot: setup browser
	IRS_SCREENSHOT_DIR=docs $(PY) -m pytest -q tests/test_browser.py

clean:
	rm -rf irs-db-* sample bench/out .pytest_cache
