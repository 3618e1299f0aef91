# Two set-up commands: `make up` runs Spot, `make test` tests it. Both build .venv first.
PYTHON ?= python3
BIN := .venv/bin

.PHONY: up test lint lint-infra bench loadtest

$(BIN)/spot: pyproject.toml requirements.lock
	$(PYTHON) -m venv .venv
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev,mysql]'
	touch $@

up: $(BIN)/spot
	$(BIN)/spot up --seed

test: $(BIN)/spot
	$(BIN)/pytest

lint: $(BIN)/spot
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

lint-infra:
	infra/check.sh

bench: $(BIN)/spot
	$(BIN)/spot bench engine
	$(BIN)/spot bench batcher
	$(BIN)/spot bench pipeline

# SECONDS, RATE: e.g. make loadtest SECONDS=300 RATE=5000 (thresholds: python -m loadtest.run -h)
SECONDS ?= 60
RATE ?= 5000
loadtest: $(BIN)/spot
	$(BIN)/python -m loadtest.run --seconds $(SECONDS) --rate $(RATE)
