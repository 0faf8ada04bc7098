# The README gives two commands: `make demo` and `make test`. Everything else is a helper of theirs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: test demo crds lint unit deps testbed node image builds e2e bench-operator bench-capture clean checkov manifests chart-test

# The C extension is built by the editable install: a change to its source needs a new one.
$(VENV)/.installed: pyproject.toml operator/trafficmirror/capture/_fastrecv.c
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

deps: $(VENV)/.installed
	bash hack/install-system-deps.sh

testbed:
	bash hack/build-testbed.sh >/dev/null

# The single-node cluster's binaries (kubelet, controller-manager, scheduler, kube-proxy, pause).
node:
	bash hack/build-node.sh >/dev/null

# The product image, built by podman from a locally built base; saved as a tarball in the cache.
image:
	bash hack/build-image.sh

# The test bed's code is not in the wheel: the test bed, the demo and the benchmarks import it from the tree.
TESTBED_PATH := PYTHONPATH=operator$(if $(PYTHONPATH),:$(PYTHONPATH))

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

# The image (mostly network and dpkg) builds while the Go builds use the CPUs; each is cached.
builds: deps
	@mkdir -p $(BUILD_LOGS)
	bash hack/build-image.sh >$(BUILD_LOGS)/image.log 2>&1 & image=$$!; \
	bash hack/build-testbed.sh >/dev/null && bash hack/build-node.sh >/dev/null; go=$$?; \
	wait $$image || { tail -40 $(BUILD_LOGS)/image.log; exit 1; }; exit $$go

BUILD_LOGS ?= $(or $(TRAFFICMIRROR_CACHE),$(HOME)/.cache/trafficmirror)/logs

test: deps builds checkov lint
	CHECKOV=$(CHECKOV_VENV)/bin/checkov $(VENV)/bin/pytest $(PYTEST_ARGS)

# The end-to-end tests alone: the chart on a real single-node cluster.
e2e: deps builds
	$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

# With KUBECONFIG set, the demo uses that cluster (kind, minikube, k3d, ...) and builds no node.
demo: deps testbed image $(if $(KUBECONFIG),,node)
	$(TESTBED_PATH) $(PY) -m trafficmirror_testbed.demo

bench-operator: deps testbed
	$(TESTBED_PATH) $(PY) bench/operator/run.py

bench-capture: deps
	$(TESTBED_PATH) $(PY) bench/capture/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
