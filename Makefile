# Two entry points on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision are pinned here (not in pyproject, which keeps compatible ranges) to the
# builds this project is tested with; override with `make TORCH_PIN= ...` to let pip choose.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
# The shared presets and test photos: NST_SHARED_DIR if set (as the tests read it), else ../shared.
SHARED ?= $(or $(NST_SHARED_DIR),../shared)

.PHONY: run test lint bench install worker

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/nst-bot

worker: install
	$(BIN)/nst-worker

# The deployment files are checked statically: hadolint for the Dockerfile, the
# Compose specification's JSON schema (vendored by check-jsonschema) for the Compose file.
DEPLOY_CHECKS = $(BIN)/hadolint Dockerfile && \
	$(BIN)/check-jsonschema -q --builtin-schema vendor.compose-spec docker-compose.yml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(DEPLOY_CHECKS)

test: install
	$(BIN)/ruff check .
	$(DEPLOY_CHECKS)
	NST_SHARED_DIR=$(SHARED) $(BIN)/python -m pytest -q

bench: install
	NST_SHARED_DIR=$(SHARED) $(BIN)/python benchmarks/bench_core.py --json benchmarks/last_core.json
