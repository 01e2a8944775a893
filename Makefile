# Two set-up commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-avx2 test-one-thread test-all test-browser lint bench compare-heads clean

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

# The suite as an AVX2-only CPU runs it (.ci/run's second pass): torch's own kernels, oneDNN's convolutions, MKL's
# matrix products, OpenCV and NumPy all take their AVX2 code paths (`ATEN_CPU_CAPABILITY=default` would mean
# torch's scalar kernels, not an AVX2 machine's).
AVX2_ENV := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
	OPENCV_CPU_DISABLE=AVX512-SKX,AVX512-CLX NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"
test-avx2: $(STAMP)
	$(AVX2_ENV) $(PY) -c "import torch; c = torch.backends.cpu.get_cpu_capability(); assert c == 'AVX2', c"
	$(AVX2_ENV) $(PY) -m pytest -m "not slow" -q

# One thread (.ci/run's third pass): another reduction order for every parallel kernel.
test-one-thread: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

# The web demo in a real browser: needs Chromium from the OS packages (apt-get install -y chromium); skipped,
# with the reason printed, without it.
test-browser: $(STAMP)
	$(PY) -m pytest tests/test_browser.py -v -rs

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(STAMP)
	$(PY) -m benchmarks

# MaskFormer against the per-pixel classification baseline at 8, 32 and 128 classes (docs/paper.md, "MaskFormer against
# per-pixel classification"): about 30 minutes on 2 CPU cores; MINUTES=... changes the budget.
MINUTES ?= 30
compare-heads: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) scripts/compare_heads.py --minutes $(MINUTES) --output_json outputs/compare_heads.json

clean:
	rm -rf $(VENV) build *.egg-info outputs
