# Two set-up commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all test-browser lint bench clean

$(STAMP): pyproject.toml tests/requirements-reference.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,eval,export,app,bench]"
	$(PY) -m pip install --quiet --no-deps --require-hashes -r tests/requirements-reference.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

# The web demo in a real browser: needs Chromium from the OS packages (apt-get install -y chromium); skipped,
# with the reason printed, without it.
test-browser: $(STAMP)
	$(PY) -m pytest tests/test_browser.py -v -rs

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) scripts/run_benchmarks.py

clean:
	rm -rf $(VENV) build *.egg-info outputs
