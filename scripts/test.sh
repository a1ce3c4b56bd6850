#!/usr/bin/env bash
# make test: the machine's PostgreSQL and Redis (installed and started when needed), Debian's Chromium,
# then ruff and the whole pytest suite (unit, integration, browser).
set -euo pipefail
cd "$(dirname "$0")/.."
sh scripts/bootstrap.sh test

need=()
if [ -z "${DATABASE_URL:-}" ] && ! command -v pg_ctlcluster >/dev/null 2>&1; then need+=(postgresql); fi
if [ -z "${REDIS_URL:-}" ] && ! command -v redis-server >/dev/null 2>&1; then need+=(redis-server); fi
if [ -z "${CHROMIUM_BIN:-}" ] && ! command -v chromium >/dev/null 2>&1; then need+=(chromium); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "Installing with apt: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

if [ -z "${DATABASE_URL:-}" ]; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "Starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -n | tail -n 1)" main start || [ $? -eq 2 ]
    for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  fi
  export DATABASE_URL=postgresql://postgres@127.0.0.1:5432/chfw_portal
fi
if [ -z "${REDIS_URL:-}" ]; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "Starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no
    for _ in $(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  export REDIS_URL=redis://127.0.0.1:6379/0
fi
export PORTAL_TESTING=true
unset CELERY_BROKER_URL DEBUG  # tests run tasks eagerly, except the ones that start a real worker

.venv/bin/ruff check .
.venv/bin/ruff format --check .
# CI starts from a clean test database: a reused one may hold rows an interrupted run committed.
fresh=()
if [ -n "${CI:-}" ]; then fresh=(--create-db); fi
.venv/bin/python -m pytest --durations=25 "${fresh[@]}" "$@"
