# facelive: `make demo` and `make test` are the two set-up commands; both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.facelive-installed
MODELS_OK := $(VENV)/.facelive-models

.PHONY: setup models demo test bench metrics browser clean

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

test: setup browser
	$(PY) -m pytest

# The browser test drives Debian's chromium at /usr/bin/chromium. Installed here when it is missing
# and we may (root, or sudo without a password); otherwise stop before any test runs, saying how.
browser:
	@[ -x /usr/bin/chromium ] || { \
	  if [ "$$(id -u)" = 0 ]; then as=; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as="sudo -n"; \
	  else echo "make test needs Debian's chromium; install it with:  sudo apt-get install -y chromium" >&2; exit 1; fi; \
	  echo "installing Debian's chromium for the browser test" >&2; \
	  $$as apt-get update -qq && \
	  $$as env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

bench: setup
	$(PY) launch/bench.py --out BENCHMARKS.md

clean:
	rm -rf $(VENV) out .pytest_cache
