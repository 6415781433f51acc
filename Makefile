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
MODEL_URI ?= models:/flight-delay/Production
PYTEST_ARGS ?=

.PHONY: install run pipeline serve ui test test-fast lint clean

install: $(VENV)/.installed  ## virtual environment from the pinned requirements
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

pipeline: install  ## etl -> train -> register on the raw data, through `mlflow run . -e main`
	mlflow run . -e main --env-manager local --experiment-name $(MLFLOW_EXPERIMENT_NAME) \
		-P data_uri=$(DATA_URI) -P sha256=$(DATA_SHA256)

serve: install  ## serve the Production model with `mlflow models serve`, printing a curl
	python -m steps.serve --model-uri $(MODEL_URI) --host $(HOST) --port $(PORT)

run: pipeline serve  ## the whole thing: pipeline, then the server (Ctrl-C stops it)

ui: install  ## MLflow UI on the embedded store
	mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host $(HOST) --port 5000

test: install  ## every test CI runs
	python -m pytest $(PYTEST_ARGS)

test-fast: install  ## the inner loop: no real processes, no real data
	python -m pytest -m "not slow and not real_data and not stress and not integration" $(PYTEST_ARGS)

lint: install
	ruff check . && ruff format --check .

clean:  ## drop the embedded store and the generated data (keeps the venv)
	rm -rf mlflow.db mlruns mlartifacts reports datasets/{raw,interim,processed,test}/[!.]*
