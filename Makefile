# The README gives two commands: `make demo` and `make test`. Everything else is a helper of theirs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: test demo crds lint unit deps testbed bench-operator bench-capture clean checkov manifests chart-test

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

deps: $(VENV)/.installed
	bash hack/install-system-deps.sh

testbed:
	bash hack/build-testbed.sh >/dev/null

crds: $(VENV)/.installed testbed
	$(PY) -m trafficmirror.api.crd crds
	$(PY) -m trafficmirror.api.reference README.md
	bash hack/render-manifests.sh

CHECKOV_VENV ?= $(or $(TRAFFICMIRROR_CACHE),$(HOME)/.cache/trafficmirror)/checkov-venv

# checkov lives in its own venv: it pins boto3, packaging and networkx to versions the project cannot use.
checkov:
	test -x $(CHECKOV_VENV)/bin/checkov || { python3 -m venv $(CHECKOV_VENV) && $(CHECKOV_VENV)/bin/pip install -q checkov==3.3.30; }

manifests: testbed
	bash hack/render-manifests.sh

chart-test: $(VENV)/.installed testbed checkov
	$(VENV)/bin/pytest tests/chart $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: deps testbed checkov lint
	CHECKOV=$(CHECKOV_VENV)/bin/checkov $(VENV)/bin/pytest $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

demo: deps testbed
	$(PY) -m trafficmirror_testbed.demo

bench-operator: deps testbed
	$(PY) bench/operator/run.py

bench-capture: deps
	$(PY) bench/capture/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
