# facelive: `make demo` and `make test` are the two set-up commands; both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODELS_OK := $(VENV)/.facelive-models

# Everything installed comes from one committed lock with hashes (locks/, made by `make lock`):
# the one for this Python and accelerator (TensorFlow's and ONNX Runtime's CUDA builds only where a
# GPU driver answers; elsewhere the CPU builds, half the size).
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ACCEL := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
LOCK := locks/py$(PYVER)-$(ACCEL).txt
LOCK_PYTHONS := 3.11 3.12
LOCK_ACCELS := cpu gpu
INSTALLED := $(VENV)/.facelive-installed

.PHONY: setup models demo test bench metrics browser clean lock

setup: $(INSTALLED) $(MODELS_OK)

# A venv made from another lock (or none) is made anew, so what is installed is the lock and
# nothing else (tests/test_lock.py checks it). --no-deps: the lock is the whole tree; facelive
# itself goes in editable with the locked setuptools, so no build step fetches an unhashed package.
$(INSTALLED): $(LOCK) pyproject.toml
	@[ -n "$(PYVER)" ] || { echo "cannot run $(PYTHON): facelive needs Python $(LOCK_PYTHONS) (make PYTHON=...)" >&2; exit 1; }
	@[ -f "$(LOCK)" ] || { echo "no lock for Python $(PYVER) ($(PYTHON)) on $(ACCEL): facelive is locked for" \
	  "Python $(LOCK_PYTHONS); run with one of them, e.g. make $(or $(MAKECMDGOALS),setup) PYTHON=python3.11" >&2; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	echo $(LOCK) > $@

# a missing lock is reported by the recipe above, with the Pythons that have one
$(LOCK):

# Models are checked by what they compute (models/checks.py), so this runs after every install.
$(MODELS_OK): $(INSTALLED) models/zoo.toml
	$(PY) launch/model_files.py fetch
	touch $@

models: $(INSTALLED)
	$(PY) launch/model_files.py fetch

# Maintainers: re-resolve pyproject.toml's ranges into every lock. The test extras are in each (one
# venv serves the demo and the tests). uv resolves for a Python and platform other than its own;
# it comes from its own hashed lock.
UV_VENV := out/uv
lock:
	[ -x $(UV_VENV)/bin/uv ] || { $(PYTHON) -m venv $(UV_VENV) && \
	  $(UV_VENV)/bin/pip install -q --require-hashes --no-deps -r locks/tools.txt; }
	for py in $(LOCK_PYTHONS); do for accel in $(LOCK_ACCELS); do \
	  $(UV_VENV)/bin/uv pip compile -q --generate-hashes --python-version $$py \
	    --python-platform x86_64-manylinux_2_28 --extra $$accel --extra test \
	    -c locks/constraints.txt pyproject.toml locks/build.in -o locks/py$$py-$$accel.txt || exit 1; \
	done; done
	$(UV_VENV)/bin/uv pip compile -q --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 locks/tools.in -o locks/tools.txt

demo: setup
	$(PY) launch/demo.py

test: browser setup
	$(PY) -m pytest

# $(call debian,PACKAGE): install Debian's PACKAGE (its command is /usr/bin/PACKAGE) when it is
# missing and we may (root, or sudo without a password); otherwise stop, saying how.
define debian
	@[ -x /usr/bin/$(1) ] || { \
	  if [ "$$(id -u)" = 0 ]; then as=; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as="sudo -n"; \
	  else echo "this needs Debian's $(1) at /usr/bin/$(1); install it with:  sudo apt-get install -y $(1)" >&2; exit 1; fi; \
	  echo "installing Debian's $(1)" >&2; \
	  $$as apt-get update -qq && \
	  $$as env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1) >/dev/null; }
endef

# The browser test drives /usr/bin/chromium.
browser:
	$(call debian,chromium)

bench: setup
	$(PY) launch/bench.py --out BENCHMARKS.md

# Prometheus on 127.0.0.1, scraping the targets Ray lists in its service-discovery file, with
# facelive's rules and console (metrics/). Runs in the foreground; Ctrl-C stops it.
METRICS_PORT ?= 9090
METRICS_DIR ?= out/prometheus
RAY_SD_FILE ?= $(or $(RAY_TMPDIR),/tmp)/ray/prom_metrics_service_discovery.json
SCRAPE_INTERVAL ?= 5s

metrics:
	$(call debian,prometheus)
	mkdir -p $(METRICS_DIR)
	sed -e 's|@SD_FILE@|$(RAY_SD_FILE)|' -e 's|@RULES@|$(CURDIR)/metrics/rules.yml|' \
	    -e 's|@INTERVAL@|$(SCRAPE_INTERVAL)|' metrics/prometheus.yml > $(METRICS_DIR)/prometheus.yml
	@echo "Prometheus: http://127.0.0.1:$(METRICS_PORT)/consoles/facelive.html (scraping $(RAY_SD_FILE)); for the" \
	      "dashboard's Metrics view start Ray with RAY_PROMETHEUS_HOST=http://127.0.0.1:$(METRICS_PORT)" >&2
	exec prometheus --config.file=$(METRICS_DIR)/prometheus.yml --web.listen-address=127.0.0.1:$(METRICS_PORT) \
	    --storage.tsdb.path=$(METRICS_DIR)/data --web.console.templates=$(CURDIR)/metrics/consoles \
	    --web.console.libraries=$(CURDIR)/metrics/consoles

clean:
	rm -rf $(VENV) out .pytest_cache
