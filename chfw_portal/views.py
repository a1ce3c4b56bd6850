from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from rollouts.auth import home_url_for


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect_to_login("/")
    return redirect(home_url_for(request.user))


def database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        return False


def broker_status() -> str:
    """'ok', 'down', or 'eager' when no broker is configured (tasks run in-process)."""
    if not settings.CELERY_BROKER_URL:
        return "eager"
    from chfw_portal.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception:
        return "down"


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    db = "ok" if database_ok() else "down"
    broker = broker_status()
    healthy = db == "ok" and broker != "down"
    return JsonResponse(
        {"database": db, "broker": broker, "status": "ok" if healthy else "down"},
        status=200 if healthy else 503,
    )
