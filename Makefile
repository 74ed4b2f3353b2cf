# meterbridge: the everyday targets. `make dev` and `make test` work on a fresh machine.
.PHONY: bootstrap browser lock dev demo test test-fast lint format typecheck sam bench openapi pr clean

export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1
PORT ?= 8000
ARGS ?=
VENV := .venv/bin

bootstrap:
	@bash scripts/bootstrap.sh

browser:
	@bash scripts/install-browser.sh

dev: bootstrap  ## run the local stack on http://127.0.0.1:8000 (make dev PORT=8010 ARGS="--admin-auth iam")
	$(VENV)/meterbridge dev --port $(PORT) $(ARGS)

demo: bootstrap  ## the local stack with a demo tenant and synthetic usage
	$(VENV)/meterbridge dev --demo

test: bootstrap browser  ## run the whole test suite
	$(VENV)/pytest

test-fast: bootstrap  ## unit tests only
	$(VENV)/pytest tests/unit

lint: bootstrap
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

format: bootstrap
	$(VENV)/ruff format .
	$(VENV)/ruff check --fix .

typecheck: bootstrap
	$(VENV)/mypy shared/meterbridge services/streaming/meterbridge_streaming dev/meterbridge_dev
	@for f in functions/*/app.py services/streaming/app.py; do $(VENV)/mypy --follow-imports=silent "$$f" || exit 1; done

sam: bootstrap  ## validate, lint and build the SAM bundle (no Docker needed)
	@bash scripts/install-sam.sh
	$(VENV)/cfn-lint template.yaml
	.tools/sam/bin/sam validate --lint
	PATH="$(dir $(shell $(VENV)/python -c 'import sys; print(sys._base_executable)')):$$PATH" \
		.tools/sam/bin/sam build --cached --parallel

bench: bootstrap  ## run every benchmark and write docs/performance.md
	$(VENV)/python -m bench

openapi: bootstrap  ## rewrite docs/openapi.json from the usage API as served
	$(VENV)/python -m meterbridge_dev.export_openapi

lock:  ## re-resolve requirements.lock after changing pyproject.toml's pins
	@bash scripts/bootstrap.sh --lock

pr: lint typecheck test sam

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
