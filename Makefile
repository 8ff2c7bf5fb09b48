# doctune — the two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export DS_ACCELERATOR ?= cpu
export HF_HUB_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false
# DeepSpeed compiles its CPU ops (shared-memory comm, CPU Adam) on first use; one folder per
# virtual environment (a build names the venv's paths) for every process (the stack's Ray
# workers, tests, benches), so they are built once, at install.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/$(VENV)/torch_extensions
# The venv's commands first, as the stack's Ray processes have them (LocalStack puts them first):
# the ops' builds must all run the venv's ninja (deepspeed's dependency, 1.13). A system ninja (1.11)
# writes an older build log, which the venv's ninja throws away and then rebuilds the op from
# scratch: the first Ray Train worker of a test session recompiled shm comm (~90 CPU-s) that way.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install browser run test test-full test-unit bench down clean crds chart-check

install: $(STAMP)

# Reinstall whenever pyproject.toml changes. torch is pinned to the local CPU wheel
# (torch==2.13.0); installing it first keeps the installer (uv, or pip) from choosing a CUDA build.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# uv, under pip's configuration (pip when uv fails): the same packages in a fraction of pip's time
	$(PY) platform/tools/install_packages.py "torch==2.13.0"
	@# OCR of scanned documents (doctune.documents) runs Debian's Tesseract with its Chinese pack
	command -v tesseract >/dev/null && tesseract --list-langs 2>/dev/null | grep -q chi_sim || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q tesseract-ocr tesseract-ocr-chi-sim; } || \
	  echo "warning: install tesseract-ocr and tesseract-ocr-chi-sim for OCR with Tesseract (RapidOCR works without)"
	$(PY) platform/tools/install_packages.py "torch==2.13.0" -e ".[test]"
	$(PY) platform/tools/install_helm.py --dest $(VENV)/bin
	@# the two slow one-time steps run side by side: converting Gemma's GGUF weights (one
	@# process, ~100 s alone, 165-208 s beside the other) and compiling DeepSpeed's CPU ops (ninja); either failing fails it
	$(VENV)/bin/doctune models prepare & prepare=$$!; \
	  $(PY) -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder, CPUAdamBuilder; \
	    ShareMemCommBuilder().load(); CPUAdamBuilder().load()"; ops=$$?; \
	  wait $$prepare && [ $$ops -eq 0 ]
	touch $@

# The browser tests (tests/integration/test_console_browser.py) drive Debian's chromium through
# playwright, with a CJK font for the Chinese pages; nothing downloads a browser build. apt-get
# runs only when one is missing (with sudo unless root), so this is instant once installed.
CHROMIUM := /usr/bin/chromium
CJK_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@if [ ! -x $(CHROMIUM) ] || [ ! -f $(CJK_FONT) ]; then \
	  command -v apt-get >/dev/null || { echo "need $(CHROMIUM) and a CJK font: install chromium and fonts-noto-cjk"; exit 1; }; \
	  echo "installing Debian's chromium and fonts-noto-cjk for the browser tests"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-noto-cjk; \
	fi

# Start the embedded stack and run the demo job; the stack stays up afterwards.
run: install
	$(VENV)/bin/doctune demo

down: install
	$(VENV)/bin/doctune down

# The layer contracts (lint-imports, see [tool.importlinter] in pyproject.toml), then unit +
# integration tests (real Ray, real S3 server, SQLite and PostgreSQL when
# DOCTUNE_TEST_DATABASE_URL is set), as two sessions, one after the other (tests/run_suite.sh). pytest exits 5
# when it collects no tests: that is a failure here, not a pass.
test: install browser
	$(VENV)/bin/lint-imports
	PY=$(PY) tests/run_suite.sh -m "not full" $(PYTEST_ARGS)

# Everything `make test` runs plus the tests marked `full` (the tuning matrix of every method under
# every ZeRO stage, a second sweep algorithm, a third Gemma job) and 30 fuzzed requests per API operation
# instead of 10: before a release, not on every push.
test-full: install browser
	$(VENV)/bin/lint-imports
	DOCTUNE_FUZZ_EXAMPLES=30 PY=$(PY) tests/run_suite.sh $(PYTEST_ARGS)

# (browser: its Chinese PDF tests draw with the CJK font that target installs, beside chromium)
test-unit: install browser
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -p no:cacheprovider -ra --numprocesses=auto --maxprocesses=4 tests/unit tests/chart

# The CRDs (operators/crds/, copied into charts/doctune/crds/), generated from the pydantic specs;
# tests/chart/test_crds.py fails when the committed files differ from what this writes.
crds: install
	$(PY) operators/gen_crds.py

# Only the chart and CRD checks (they also run in `make test`'s unit session): helm lint, helm template
# with charts/doctune/ci/*.yaml, kubernetes-validate, the CRD schemas, the parsed objects.
chart-check: install
	$(PY) -m pytest -p no:cacheprovider -q tests/chart

# Benchmarks (not part of `make test`): writes docs/benchmarks.md.
bench: install
	$(PY) -m tests.bench.run_bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
