#!/usr/bin/env bash
# make run: everything a developer needs on http://127.0.0.1:8000. Ctrl-C stops what this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
sh scripts/bootstrap.sh base
mkdir -p .data
export DEBUG="${DEBUG:-true}"
pids=()
pg_started=""
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$pg_started" ]; then .venv/bin/python -m chfw_portal.devdb stop .data/pg || true; fi
  echo "Stopped."
}
trap cleanup EXIT INT TERM

if [ -z "${DATABASE_URL:-}" ]; then
  echo "Starting embedded PostgreSQL (data in .data/pg)"
  DATABASE_URL=$(.venv/bin/python -m chfw_portal.devdb start .data/pg)
  pg_started=1
  export DATABASE_URL
fi

if [ -z "${REDIS_URL:-}" ] && command -v redis-server >/dev/null 2>&1; then
  if ! redis-cli -p 6379 ping >/dev/null 2>&1; then
    echo "Starting Redis on 127.0.0.1:6379"
    redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --loglevel warning &
    pids+=($!)
    for _ in $(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  export REDIS_URL=redis://127.0.0.1:6379/0
  export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/1}"
fi

.venv/bin/python manage.py migrate --no-input
.venv/bin/python manage.py seed_demo

if [ -n "${CELERY_BROKER_URL:-}" ]; then
  echo "Starting a Celery worker and beat (logs in .data/celery.log)"
  .venv/bin/celery -A chfw_portal worker --beat --loglevel=INFO --concurrency=2 \
    --schedule=.data/celerybeat-schedule >.data/celery.log 2>&1 &
  pids+=($!)
else
  echo "redis-server is not installed: background tasks run in the web process."
fi

echo "CHFW Portal on http://127.0.0.1:8000 (Ctrl-C to stop)"
.venv/bin/python manage.py runserver 127.0.0.1:8000 &
pids+=($!)
wait "${pids[-1]}"
