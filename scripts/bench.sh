#!/usr/bin/env bash
# make bench: benchmarks that print figures (never asserted) and write them to bench-results/*.json.
# The machine's PostgreSQL (installed and started when needed, as for make test), Redis when installed,
# two bench databases (DATABASE_URL, default chfw_bench, and the same name + "_inv"), created and migrated,
# then each bench module in turn. Every child process has a time limit: the run stops by itself.
#   BENCH_MODULES=intake make bench   # only these modules (names under bench/)
#   BENCH_QUICK=1 make bench          # bench.intake: 50,000-row cases only (no 1M files, no inventory load)
set -euo pipefail
cd "$(dirname "$0")/.."
sh scripts/bootstrap.sh test

if [ -z "${DATABASE_URL:-}" ]; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "Installing with apt: postgresql"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "Starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -n | tail -n 1)" main start || [ $? -eq 2 ]
    for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  fi
fi
export DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/chfw_bench}"
BENCH_INV_DATABASE_URL="${BENCH_INV_DATABASE_URL:-$(.venv/bin/python -m bench.db inv-url "$DATABASE_URL")}"
export BENCH_INV_DATABASE_URL

if [ -z "${REDIS_URL:-}" ] && command -v redis-server >/dev/null 2>&1; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "Starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no
    for _ in $(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  export REDIS_URL=redis://127.0.0.1:6379/0  # upload progress goes to Redis, as in production
fi
export PORTAL_TESTING=true
unset CELERY_BROKER_URL DEBUG

for url in "$DATABASE_URL" "$BENCH_INV_DATABASE_URL"; do
  .venv/bin/python -m bench.db ensure "$url"
  DATABASE_URL="$url" .venv/bin/python manage.py migrate --no-input -v 0
done

mkdir -p bench-results
# Every module of bench/ with a __main__ (intake first), or those named in BENCH_MODULES ("intake exports").
# Each bounds its own steps; the outer limit per module only guards against a hung server.
modules="${BENCH_MODULES:-}"
if [ -z "$modules" ]; then
  modules="intake"
  for file in $(grep -l '__name__ == "__main__"' bench/*.py | sort); do
    name=$(basename "$file" .py)
    case "$name" in intake | db | __init__) ;; *) modules="$modules $name" ;; esac
  done
fi
failed=()
for module in $modules; do
  echo "== bench.$module"
  timeout "${BENCH_MODULE_TIMEOUT:-3600}" .venv/bin/python -m "bench.$module" || failed+=("$module")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench modules that failed: ${failed[*]}" >&2
  exit 1
fi
