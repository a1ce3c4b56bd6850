.PHONY: run test bench e2e lint fmt migrate

run:        ## serve http://127.0.0.1:8000 with embedded PostgreSQL, Redis and a Celery worker
	@bash scripts/run.sh

test:       ## ruff, then the whole suite: unit, integration, real worker, browser
	@bash scripts/test.sh

e2e:        ## browser tests only
	@bash scripts/test.sh e2e

bench:      ## benchmarks that print figures (not asserted)
	@bash scripts/bench.sh

lint:
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

fmt:
	@.venv/bin/ruff check --fix . && .venv/bin/ruff format .

migrate:
	@.venv/bin/python manage.py migrate
