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
