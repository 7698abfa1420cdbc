# Builds the two environments with uv and runs the project's jobs. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
# uv from PATH, else a private copy installed with pip into .tools/.
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
AIRFLOW_VENV := .venv-airflow
AIRFLOW_LOCK := docker/airflow/requirements.txt
RAKUTEN := $(VENV)/bin/rakuten

.PHONY: help env airflow-env airflow-init test lint format run airflow serve repro bench mlflow lock \
	airflow-lock gpu-wheels clean monitor

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# --compile-bytecode: the environments ship their .pyc files, so no step compiles MLflow's,
# TensorFlow's or Airflow's sources at start-up, even where PYTHONDONTWRITEBYTECODE is set (as on
# CI machines and in containers) or the environment is read-only. It costs about 45 s once, at
# install, and saves 3 to 5 s on every `rakuten` step and Airflow task (docs/benchmarks.md).
$(VENV)/.built: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode
	touch $@

$(AIRFLOW_VENV)/.built: $(AIRFLOW_LOCK) | $(UV)
	$(UV) venv --allow-existing --python 3.11 $(AIRFLOW_VENV)
	$(UV) pip install --compile-bytecode --python $(AIRFLOW_VENV)/bin/python -r $(AIRFLOW_LOCK)
	touch $@

env: $(VENV)/.built ## Build the project environment (.venv) from uv.lock

airflow-env: $(AIRFLOW_VENV)/.built ## Build the Airflow environment (.venv-airflow), pinned

lint: env ## Lint, format check and type check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: env ## Format the code and fix what ruff can
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: env airflow-env lint ## Build what is needed, then lint and run the whole test suite
	$(VENV)/bin/pytest -n auto --dist loadfile --durations=25

# Prometheus and the Pushgateway from Debian's packages, on 127.0.0.1 with the repository's scrape
# jobs and alert rules (src/monitoring/local.py points them at local targets). Their data stays in
# .monitor/ between runs. While they run, `make run` and `make airflow` push to this Pushgateway
# unless RAKUTEN_PUSHGATEWAY_URL is set in the environment.
MONITOR_DIR := .monitor
PROMETHEUS_PORT := 9090
PUSHGATEWAY_PORT := 9091
# The Pushgateway of `make monitor` if it answers now, else nothing (the steps then log that
# metrics are off, or push to RAKUTEN_PUSHGATEWAY_URL of .env).
MONITOR_PUSHGATEWAY = $(shell curl -sf -m 1 -o /dev/null http://127.0.0.1:$(PUSHGATEWAY_PORT)/-/ready \
	&& echo http://127.0.0.1:$(PUSHGATEWAY_PORT))

# Airflow on the embedded defaults: SQLite metadata in .airflow/, the DAGs of dags/, the tasks
# running `rakuten` from .venv in this folder (RAKUTEN_HOME). The settings (.env) are the tasks'.
AIRFLOW_HOME ?= $(CURDIR)/.airflow
AIRFLOW := env AIRFLOW_HOME=$(AIRFLOW_HOME) AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__PARALLELISM=4 \
	AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=8080 \
	AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:8080/execution/ RAKUTEN_HOME=$(CURDIR) \
	RAKUTEN_PUSHGATEWAY_URL=$${RAKUTEN_PUSHGATEWAY_URL:-$(MONITOR_PUSHGATEWAY)} \
	PATH=$(CURDIR)/$(AIRFLOW_VENV)/bin:$(CURDIR)/$(VENV)/bin:$$PATH airflow
RUN_CONF ?= {}

airflow-init: env airflow-env
	$(RAKUTEN) db upgrade
	$(AIRFLOW) db migrate > /dev/null
	$(AIRFLOW) pools set gpu 1 "one slot per GPU worker: the neural branches" > /dev/null

# The main job: the training DAG end to end, in process (`airflow dags test`). The terminal shows
# one line per task as it finishes, then the summary of the run; Airflow's own log goes to
# RUN_LOG (one file per run).
RUN_STAMP := $(shell date -u +%Y%m%dT%H%M%S)
RUN_LOG ?= $(AIRFLOW_HOME)/logs/make-run-$(RUN_STAMP).log

run: airflow-init ## Run the training DAG end to end in process (trigger form: RUN_CONF='{...}')
	@$(RAKUTEN) --log-level WARNING run follow --airflow-db sqlite:///$(AIRFLOW_HOME)/airflow.db \
		--log $(RUN_LOG) -- $(AIRFLOW) dags test rakuten_training --conf '$(RUN_CONF)'; \
	status=$$?; $(RAKUTEN) --log-level WARNING run summary; \
	echo; echo "Airflow's log of this run: $(RUN_LOG)"; exit $$status

airflow: airflow-init ## Start Airflow (api-server, scheduler, ...) on 127.0.0.1:8080 with its UI
	@echo "Airflow UI: http://127.0.0.1:8080 (user admin; the password is printed below and"
	@echo "kept in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated). Everything listens"
	@echo "on 127.0.0.1 but the log servers on 8793 and 8794 (docs/operations.md)."
	$(AIRFLOW) standalone

serve: env ## Serve the prediction API for @champion on 127.0.0.1:8000 (docs at /docs)
	$(RAKUTEN) db upgrade
	$(RAKUTEN) serve

repro: env ## Reproduce the pipeline with DVC (dvc.yaml, params.yaml) into data/
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/dvc repro

bench: env airflow-env ## Run the benchmarks, about an hour (see docs/benchmarks.md)
	$(VENV)/bin/python bench/bench_synth.py
	$(VENV)/bin/python bench/bench_make_dataset.py
	$(VENV)/bin/python bench/bench_store.py
	$(VENV)/bin/python bench/bench_image_pipeline.py
	$(VENV)/bin/python bench/bench_text.py
	$(VENV)/bin/python bench/bench_predict_batch.py
	$(VENV)/bin/python bench/bench_dag.py
	$(VENV)/bin/python bench/bench_api.py
	$(VENV)/bin/python bench/bench_drift.py

monitor: env ## Start Prometheus (UI on 127.0.0.1:9090) and the Pushgateway (127.0.0.1:9091)
	@command -v prometheus >/dev/null && command -v prometheus-pushgateway >/dev/null || { \
		echo "install Debian's prometheus and prometheus-pushgateway packages (apt-get install)"; \
		exit 1; }
	@mkdir -p $(MONITOR_DIR)
	$(VENV)/bin/python -m src.monitoring.local --out $(MONITOR_DIR)/prometheus.yml \
		--prometheus-port $(PROMETHEUS_PORT) --pushgateway-port $(PUSHGATEWAY_PORT)
	@echo "Prometheus UI: http://127.0.0.1:$(PROMETHEUS_PORT) (alerts: /alerts, graphs: /graph)"
	@echo "Pushgateway UI: http://127.0.0.1:$(PUSHGATEWAY_PORT) (what each step pushed last)"
	@echo "make run (in another terminal) now pushes its steps' metrics here; Ctrl-C stops both."
	@prometheus-pushgateway --web.listen-address=127.0.0.1:$(PUSHGATEWAY_PORT) \
		--persistence.file=$(MONITOR_DIR)/pushgateway.metrics --log.level=warn & gateway=$$!; \
	trap 'kill $$gateway' EXIT; \
	prometheus --config.file=$(MONITOR_DIR)/prometheus.yml --storage.tsdb.path=$(MONITOR_DIR)/data \
		--web.listen-address=127.0.0.1:$(PROMETHEUS_PORT) --log.level=warn

# bench/bench_gpu.sh runs on a borrowed GPU host without a package index: the wheels it installs
# there (CPython 3.12, manylinux x86_64) are downloaded here and travel with the working tree.
GPU_WHEELS ?= bench/wheels
gpu-wheels: | .tools/bin/uv ## Download the wheels bench/bench_gpu.sh installs offline (bench/wheels/)
	.tools/bin/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
		-d $(GPU_WHEELS) -r bench/gpu-requirements.txt

# The backend is RAKUTEN_MLFLOW_TRACKING_URI (env or .env) when it is a SQLite URI, else the
# embedded default; artifacts go beside the database, as the embedded default puts them.
mlflow: env ## Start a local MLflow server (SQLite backend, local artifacts): UI on 127.0.0.1:5000
	@uri=$$($(VENV)/bin/python -c 'from src.config import get_settings as s; print(s().mlflow_tracking_uri)'); \
	case "$$uri" in sqlite:///*) ;; *) uri=sqlite:///mlruns/mlflow.db ;; esac; \
	root=$$(dirname "$${uri#sqlite:///}"); mkdir -p "$$root"; \
	echo "MLflow UI: http://127.0.0.1:5000 (backend $$uri, artifacts $$root/artifacts)"; \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec $(VENV)/bin/mlflow server \
		--backend-store-uri "$$uri" --artifacts-destination "$$root/artifacts" \
		--host 127.0.0.1 --port 5000 --workers 1

lock: | $(UV) ## Re-lock the project environment after editing pyproject.toml
	$(UV) lock

airflow-lock: | $(UV) ## Re-pin the Airflow environment from docker/airflow/requirements.in
	$(UV) pip compile docker/airflow/requirements.in --python-version 3.11 --universal \
		-o $(AIRFLOW_LOCK)

clean: ## Remove the environments and caches (not data/)
	rm -rf $(VENV) $(AIRFLOW_VENV) .tools .mypy_cache .ruff_cache .pytest_cache reports
