from __future__ import annotations

from django.urls import reverse


def test_healthz_reports_database_and_eager_tasks(client, db):
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "eager", "status": "ok"}


def test_healthz_answers_503_when_the_broker_is_down(client, db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    from chfw_portal.celery import app

    app.conf.broker_url = settings.CELERY_BROKER_URL
    try:
        response = client.get(reverse("healthz"))
    finally:
        app.conf.broker_url = None
    assert response.status_code == 503
    assert response.json()["broker"] == "down" and response.json()["database"] == "ok"


def test_healthz_reports_a_live_broker(client, db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/15"
    from chfw_portal.celery import app

    app.conf.broker_url = settings.CELERY_BROKER_URL
    try:
        response = client.get(reverse("healthz"))
    finally:
        app.conf.broker_url = None
    assert response.status_code == 200 and response.json()["broker"] == "ok"


def test_with_the_database_down_the_lock_wait_middleware_lets_the_view_answer(rf, monkeypatch):
    """The middleware's lock_timeout needs the database; when it is down the view still runs (so /healthz
    can say the database is down) instead of the middleware failing first."""
    from django.db import OperationalError
    from django.http import HttpResponse

    from chfw_portal import middleware

    class Down:
        def cursor(self):
            raise OperationalError("connection refused")

    monkeypatch.setattr(middleware, "connection", Down())
    answered = middleware.LockWaitMiddleware(lambda request: HttpResponse("view ran", status=503))(
        rf.get("/healthz")
    )
    assert (answered.status_code, answered.content) == (503, b"view ran")
