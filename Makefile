# batchgw — the two commands a fresh clone needs: `make dev` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export SAM_CLI_TELEMETRY := 0

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Python 3.12 is the Lambda runtime and the project's Python: $BATCHGW_PYTHON, python3.12 on PATH,
# or any 3.12 that pyenv knows. Every candidate is run, because a pyenv shim exists even where it fails.
define find_python
for c in "$$BATCHGW_PYTHON" python3.12 \
  $$(command -v pyenv >/dev/null && for v in $$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.|$$)'); do \
       echo "$$(pyenv root)/versions/$$v/bin/python3.12"; done); do \
  [ -n "$$c" ] && "$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1 \
    && { command -v "$$c"; exit 0; }; \
done; exit 1
endef

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@py="$$( $(find_python) )" || { echo "error: Python 3.12 not found. Install it (e.g. 'pyenv install 3.12') or set BATCHGW_PYTHON=/path/to/python3.12." >&2; exit 1; }; \
	echo "using $$py"; \
	[ -x $(BIN)/python ] && $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' || { rm -rf $(VENV) && "$$py" -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

.PHONY: install
install: $(STAMP) ## create .venv (Python 3.12) with the project and its dev tools

.PHONY: dev
dev: $(STAMP) ## run the local stack (API on http://127.0.0.1:4000/v1)
	$(BIN)/batchgw dev $(DEV_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff, mypy (strict), cfn-lint and sam validate --lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml
	$(BIN)/sam validate --lint --template-file template.yaml --region us-east-1

.PHONY: test
test: lint ## everything CI checks: lint, then the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: build
build: $(STAMP) ## sam build (in-process builders, Python 3.12 from .venv; no Docker)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/sam build --template-file template.yaml

ENV ?= default
.PHONY: deploy
deploy: build ## sam deploy with samconfig.toml's ENV environment (make deploy ENV=prod)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/sam deploy --config-env $(ENV)

.PHONY: bench
bench: $(STAMP) ## the benchmark suite; writes bench/results.md
	$(BIN)/python -m bench

.PHONY: lock
lock: ## refresh constraints.txt from a clean resolve of pyproject.toml
	rm -rf /tmp/batchgw-lock && "$$( $(find_python) )" -m venv /tmp/batchgw-lock
	/tmp/batchgw-lock/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	/tmp/batchgw-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

.PHONY: clean
clean: ## remove the venv and build output
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
