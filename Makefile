# Two set-up commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all test-browser lint bench compare-heads clean

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

# MaskFormer against the per-pixel classification baseline at 8, 32 and 128 classes (README, "MaskFormer against
# per-pixel classification"): about 30 minutes on 2 CPU cores; MINUTES=... changes the budget.
MINUTES ?= 30
compare-heads: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) scripts/compare_heads.py --minutes $(MINUTES) --output_json outputs/compare_heads.json

clean:
	rm -rf $(VENV) build *.egg-info outputs
