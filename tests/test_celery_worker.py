"""A real Celery worker on Redis, in another process (ARCHITECTURE: slow work runs in Celery)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from celery import Celery

from .conftest import celery_worker

ROOT = Path(__file__).resolve().parent.parent
BROKER = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture
def worker(tmp_path):
    with celery_worker(tmp_path, broker=BROKER) as proc:
        yield proc


@pytest.mark.worker
def test_a_task_runs_in_the_worker_process(worker):
    client = Celery(broker=BROKER, backend=BROKER)
    client.conf.task_always_eager = False
    result = client.send_task("rollouts.tasks.ping")
    try:
        answer = result.get(timeout=60, disable_sync_subtasks=False)  # the test is not a task
    except Exception:
        worker.terminate()
        pytest.fail(f"no answer from the worker:\n{worker.communicate(timeout=10)[0]}")
    assert answer["pid"] == worker.pid != os.getpid()  # ran in the worker, not eagerly here
    assert result.state == "SUCCESS"
