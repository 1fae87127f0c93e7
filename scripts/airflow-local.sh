#!/usr/bin/env bash
# Airflow on this machine, for trying the DAGs: `make airflow` (or scripts/airflow-local.sh).
#
# LocalExecutor with a SQLite metadata database in .airflow/, this repository's dags/, the UI
# and REST API on http://localhost:8080 (user admin; the password is printed below and kept in
# .airflow/simple_auth_manager_passwords.json.generated). The DAGs read the simulated events
# (made here on first use) and write data/, reports/, models/ and data/warehouse.duckdb, the
# same places as `python -m pipelines`. LocalExecutor ignores queues: training runs here like
# every other task (`train_on_gpu`, for a detector that wants a GPU, still one at a time
# through the `gpu` pool). Ctrl-C stops everything.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bin=${VENV_BIN:-$repo/.venv/bin}
export PATH="$bin:$PATH"

export AIRFLOW_HOME=${AIRFLOW_HOME:-$repo/.airflow}
export AIRFLOW__CORE__DAGS_FOLDER=$repo/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-2}   # 2 cores: two tasks at a time
export AIRFLOW__API__PORT=${AIRFLOW_PORT:-8080}
export AIRFLOW__API__HOST=${AIRFLOW_HOST:-127.0.0.1}                  # this machine only
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}

# The pipeline's configuration, as absolute paths: task processes need not share our cwd.
export PIPELINES_PARAMS=${PIPELINES_PARAMS:-$repo/params.yaml}
export PIPELINES_STORAGE_DATA=${PIPELINES_STORAGE_DATA:-$repo/data}
export PIPELINES_STORAGE_REPORTS=${PIPELINES_STORAGE_REPORTS:-$repo/reports}
export PIPELINES_STORAGE_MODELS=${PIPELINES_STORAGE_MODELS:-$repo/models}
export PIPELINES_INGEST_SOURCE=${PIPELINES_INGEST_SOURCE:-$repo/data/raw/events.parquet}
export PIPELINES_LABELS=${PIPELINES_LABELS:-$repo/data/raw/labels.parquet}
export WAREHOUSE_URL=${WAREHOUSE_URL:-duckdb:///$repo/data/warehouse.duckdb}

if [ ! -e "$PIPELINES_INGEST_SOURCE" ] && [ "$PIPELINES_INGEST_SOURCE" = "$repo/data/raw/events.parquet" ]; then
    echo "airflow-local: simulating the events the DAGs will read (data/raw/)"
    python -m pipelines simulate --events-out data/raw/events.parquet --labels-out data/raw/labels.parquet
fi

mkdir -p "$AIRFLOW_HOME"
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { tail -20 "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
airflow pools set gpu 1 "GPU training slots" >/dev/null
echo "airflow-local: UI on http://localhost:${AIRFLOW__API__PORT}; log in as admin with the password below" \
     "(also in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)"
exec airflow standalone
