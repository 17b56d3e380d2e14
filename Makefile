# facelive: `make demo` and `make test` are the two set-up commands; both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.facelive-installed
MODELS_OK := $(VENV)/.facelive-models

.PHONY: setup models demo test bench clean

setup: $(INSTALLED) $(MODELS_OK)

# TensorFlow's CUDA build only where a GPU driver is present; elsewhere the CPU build (half the size).
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	extra=cpu; if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then extra=gpu; fi; \
	$(PY) -m pip install -q -e ".[$$extra,test]"
	touch $@

$(MODELS_OK): $(INSTALLED) models/zoo.toml
	$(PY) launch/model_files.py fetch
	touch $@

models: $(INSTALLED)
	$(PY) launch/model_files.py fetch

demo: setup
	$(PY) launch/demo.py

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) launch/bench.py --out BENCHMARKS.md

clean:
	rm -rf $(VENV) out .pytest_cache
