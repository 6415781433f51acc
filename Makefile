# SkyProphet: `make run` (pipeline + server on the embedded store), `make test` (everything CI runs).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export MLFLOW_TRACKING_URI ?= sqlite:///$(abspath mlflow.db)
export MLFLOW_EXPERIMENT_NAME ?= skyprophet
DATA_URI ?= $(abspath ../shared/datasets/scl-2017/data.csv)
DATA_SHA256 ?= 66d7334fbc9c2c070842e9a99d465f552f94a2b1d5c4047be825e5954e12e829
HOST ?= 127.0.0.1
PORT ?= 5001
# The registered model (skyprophet/config.py MODEL_NAME; a test checks they agree).
MODEL_NAME ?= flight-delay
MODEL_URI ?= models:/$(MODEL_NAME)@production
PYTEST_ARGS ?=
# mlflow models serve workers: one per core on the 2-core machines.
WORKERS ?= 2

.PHONY: install run pipeline serve ui test test-fast lint clean

install: $(VENV)/.installed  ## virtual environment from the pinned requirements
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

pipeline: install  ## etl -> train -> register (staging) -> promote (acceptance checks -> production), through `mlflow run . -e main`
	mlflow run . -e main --env-manager local --experiment-name $(MLFLOW_EXPERIMENT_NAME) \
		-P data_uri=$(DATA_URI) -P sha256=$(DATA_SHA256)

serve: install  ## serve the Production model with `mlflow models serve` behind the ingress (request limits), printing a curl
	python -m steps.serve --model-uri $(MODEL_URI) --host $(HOST) --port $(PORT) --workers $(WORKERS)

run: pipeline serve  ## the whole thing: pipeline, then the server (Ctrl-C stops it)

ui: install  ## MLflow UI on the embedded store
	mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host $(HOST) --port 5000

test: install  ## every test CI runs (the short stress test included); coverage in reports/coverage/index.html
	python -m pytest --cov=pyfunc --cov=steps --cov=skyprophet --cov=sidecar --cov-report=term --cov-report=html:reports/coverage $(PYTEST_ARGS)

test-fast: install  ## the inner loop: no real processes, no real data
	python -m pytest -m "not slow and not real_data and not stress and not integration" $(PYTEST_ARGS)

lint: install
	ruff check . && ruff format --check .

.PHONY: audit
audit: install  ## pip-audit of the installed pins; fails on a known vulnerability not in .ci/audit-ignore.txt (with its reason)
	python .ci/audit.py

clean:  ## drop the embedded store and the generated data (keeps the venv)
	rm -rf mlflow.db mlruns mlartifacts reports datasets/{raw,interim,processed,test}/[!.]*

.PHONY: image sidecar
MODEL_IMAGE ?= skyprophet-model
SIDECAR_IMAGE ?= skyprophet-sidecar
SIDECAR_PORT ?= 8081

image: install  ## model image from the registry (mlflow models build-docker, then the ingress in front: Dockerfile target model) + sidecar image; needs Docker
	mlflow models build-docker -m $(MODEL_URI) -n $(MODEL_IMAGE)
	docker build --target model --build-arg MODEL_BASE_IMAGE=$(MODEL_IMAGE) -t $(MODEL_IMAGE) .
	docker build --target sidecar -t $(SIDECAR_IMAGE) .

sidecar: install  ## /ping + /health on SIDECAR_PORT for the model server of `make serve` (or MODEL_SERVER_URL)
	MODEL_SERVER_URL=$${MODEL_SERVER_URL:-http://$(HOST):$(PORT)} MODEL_URI=$(MODEL_URI) \
		SIDECAR_HOST=$(HOST) SIDECAR_PORT=$(SIDECAR_PORT) python -m sidecar.app

.PHONY: evaluate
EVALUATE_ARGS ?=

evaluate: install  ## model vs challenge and seed baselines on the day and forward splits of etl's output (run `make pipeline` first)
	python -m steps.evaluate $(EVALUATE_ARGS)

.PHONY: monitor
MONITOR_ARGS ?=

monitor: install  ## drift of new flights (DATA=path, file:// or gs://) vs Production's training data; Error 3 = drift
	@test -n "$(DATA)" || { echo "usage: make monitor DATA=<path, file:// or gs:// URI of new flights>" >&2; exit 2; }
	python -m steps.monitor --data $(DATA) $(MONITOR_ARGS)

.PHONY: score
ENGINE ?= pandas
SCORE_ARGS ?=

score: install  ## delay odds for a whole schedule: DATA=<CSV/Parquet file or folder; path, file:// or gs://> OUTPUT=<.parquet or gs://> [ENGINE=spark]
	@test -n "$(DATA)" -a -n "$(OUTPUT)" || { echo "usage: make score DATA=<schedule file or folder> OUTPUT=<Parquet path or gs:// URI> [ENGINE=pandas|spark] [SCORE_ARGS='--overwrite true']" >&2; exit 2; }
	python -m steps.score --data $(DATA) --output $(OUTPUT) --engine $(ENGINE) $(SCORE_ARGS)

.PHONY: whatif
WHATIF_ARGS ?=

whatif: install  ## a few flights with a changed departure/day/airline beside the originals: DATA=<schedule> FLIGHTS=92@2017-12-29 WHATIF_ARGS='--departure 19:00'
	@test -n "$(DATA)" -a -n "$(FLIGHTS)" || { echo "usage: make whatif DATA=<schedule CSV/Parquet> FLIGHTS='<number>@<YYYY-MM-DD>[,…]' WHATIF_ARGS='--departure HH:MM | --date YYYY-MM-DD | --airline CODE'" >&2; exit 2; }
	python -m steps.whatif --data $(DATA) --flights "$(FLIGHTS)" --model-uri $(MODEL_URI) $(WHATIF_ARGS)

.PHONY: tracking-server
TRACKING_PORT ?= 5000
TRACKING_ARGS ?=
# AUTH=basic (or MLFLOW_AUTH=basic): MLflow's basic-auth app; needs MLFLOW_AUTH_ADMIN_PASSWORD (docs/operations.md: Authentication).
AUTH ?=
export MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION

tracking-server: install  ## mlflow server: MLFLOW_BACKEND_STORE_URI=postgresql://… + MLFLOW_ARTIFACTS_DESTINATION=gs://…, else mlflow.db + mlartifacts/; AUTH=basic for logins
	python -m skyprophet.ops.tracking_server --host $(HOST) --port $(TRACKING_PORT) $(if $(AUTH),--auth $(AUTH)) $(TRACKING_ARGS)

.PHONY: auth-roles
auth-roles: install  ## as the admin of an AUTH=basic server: pipeline / promoter / reader users and grants from SKYPROPHET_*_USERNAME/_PASSWORD
	python -m skyprophet.ops.auth --create-roles

.PHONY: bench bench-score stress-test
USERS ?= 100
SPAWN_RATE ?= 10
DURATION ?= 60s
P95_MS ?= 500
BENCH_ARGS ?=
# The per-form table is printed for each of these worker counts.
BENCH_WORKERS ?= 1 2

bench: install  ## benchmark table vs the design's targets (docs/benchmarks.md): times etl/train/register on DATA_URI, then loads the served model with real rows of DATA_URI in each request form, for BENCH_WORKERS (wrk, else locust)
	@command -v wrk >/dev/null || echo "bench: wrk missing (apt-get install -y wrk); using locust" >&2
	python -m bench.run --data-uri $(DATA_URI) --sha256 $(DATA_SHA256) --workers $(BENCH_WORKERS) $(BENCH_ARGS)

bench-score: install  ## batch scoring of 5,000,000 flights resampled from DATA_URI (BENCH_ARGS=--quick: 1,000,000), Parquet in/out, per engine: flights/s, peak RSS/PSS, stages
	python -m bench.score --data-uri $(DATA_URI) $(BENCH_ARGS)

stress-test: install  ## locust on MODEL_URI's server (+ sidecar; trains one first if there is none): USERS, SPAWN_RATE, DURATION, P95_MS; report in reports/stress/
	python -m bench.stress --model-uri $(MODEL_URI) --users $(USERS) --spawn-rate $(SPAWN_RATE) \
		--duration $(DURATION) --p95-ms $(P95_MS) --workers $(WORKERS) --data-uri $(DATA_URI)

.PHONY: promote rollback acceptance
VERSION ?=
PROMOTE ?= auto
PROMOTE_ARGS ?=

promote: install  ## acceptance checks on the staging version (VERSION=N: that one) served locally; all pass -> production
	python -m steps.promote --promote $(PROMOTE) $(if $(VERSION),--version $(VERSION)) $(PROMOTE_ARGS)

rollback: install  ## production back to the version the current one replaced (history in the promotion.* tags)
	python -m steps.promote --rollback

acceptance: install  ## the acceptance checks against a running server: make acceptance URL=http://… [MODEL_URI=models:/flight-delay/N]
	@test -n "$(URL)" || { echo "usage: make acceptance URL=<model server base URL> [MODEL_URI=…]" >&2; exit 2; }
	python -m skyprophet.ops.acceptance --url $(URL) --model-uri $(MODEL_URI)

.PHONY: retrain recalibrate replay
# The data of record to retrain on (the scheduled workflow passes the latest). It has no digest known in
# advance: `none` skips etl's checksum check, recorded on the run; give RETRAIN_SHA256 to check one.
RETRAIN_DATA_URI ?= $(DATA_URI)
RETRAIN_SHA256 ?= none
RECALIBRATE_ARGS ?=
REPLAY_ARGS ?=

retrain: install  ## the pipeline on the latest data of record (RETRAIN_DATA_URI): gate and acceptance decide as always (what .github/workflows/retrain.yml runs)
	mlflow run . -e main --env-manager local --experiment-name $(MLFLOW_EXPERIMENT_NAME) \
		-P data_uri=$(RETRAIN_DATA_URI) -P sha256=$(RETRAIN_SHA256)

recalibrate: install  ## delay-rate correction from flown flights (DATA=path, file:// or gs:// with Fecha-O): new version through staging and acceptance
	@test -n "$(DATA)" || { echo "usage: make recalibrate DATA=<flown flights with Fecha-O>" >&2; exit 2; }
	python -m steps.recalibrate --data $(DATA) $(RECALIBRATE_ARGS)

replay: install  ## the season replay of DATA_URI's last 6 months (model flight-delay-replay): table in reports/replay/replay.md
	mlflow run . -e replay --env-manager local --experiment-name $(MLFLOW_EXPERIMENT_NAME) \
		-P data_uri=$(DATA_URI) -P sha256=$(DATA_SHA256) $(REPLAY_ARGS)
