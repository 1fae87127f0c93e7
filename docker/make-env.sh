#!/bin/sh
# Writes docker/.env, the secrets docker/compose.yaml needs, with fresh random values.
# Usage (from anywhere): sh docker/make-env.sh [--force]
# An existing .env is kept unless --force is given: the PostgreSQL passwords are set only when
# its volume is first created, so new ones would no longer match an existing database.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
env_file="$here/.env"

if [ -e "$env_file" ] && [ "${1:-}" != "--force" ]; then
    echo "$env_file exists; keeping it (pass --force to overwrite)" >&2
    exit 0
fi

# hex: safe inside URLs (postgresql://user:PASSWORD@host) and in .env files without quoting
hex() {
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -hex "$1"
    else
        python3 -c "import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))" "$1"
    fi
}

# a Fernet key is 32 random bytes, URL-safe base64
fernet() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"
    else
        openssl rand -base64 32 | tr '+/' '-_'
    fi
}

umask 077
tmp="$env_file.tmp.$$"
cat > "$tmp" <<ENV
# Secrets for docker/compose.yaml, written by docker/make-env.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ).
# Never commit this file.
COMPOSE_PROJECT_NAME=fraud-pipelines
POSTGRES_PASSWORD=$(hex 24)
AIRFLOW_DB_PASSWORD=$(hex 24)
WAREHOUSE_DB_PASSWORD=$(hex 24)
MINIO_ROOT_USER=pipelines
MINIO_ROOT_PASSWORD=$(hex 24)
AIRFLOW_ADMIN_PASSWORD=$(hex 12)
AIRFLOW_FERNET_KEY=$(fernet)
AIRFLOW_API_SECRET_KEY=$(hex 32)
AIRFLOW_JWT_SECRET=$(hex 32)

# Optional settings (defaults shown)
# PIPELINES_IMAGE=fraud-pipelines
# PIPELINES_BUCKET=fraud-pipelines
# POSTGRES_PORT=5432
# MINIO_PORT=9000
# MINIO_CONSOLE_PORT=9001
# AIRFLOW_PORT=8080
# FLOWER_PORT=5555
# CPU_WORKER_CONCURRENCY=2
# MINIO_IMAGE=quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z
ENV
mv "$tmp" "$env_file"
echo "wrote $env_file (the Airflow UI login is admin / AIRFLOW_ADMIN_PASSWORD)"
