"""Requests wait a bounded time for a row lock, then answer "busy" instead of hanging.

Every move takes the rollout's row lock (L10), and long work holds it: an inventory load holds every live
rollout's lock while it applies, a worker applying a big status feed or instruction file holds its rollout's.
A page request that needs the same lock would otherwise wait for all of it, past the web server's timeout
(gunicorn kills the worker at 30 s: the user sees a proxy error and cannot tell whether anything changed).
Here each request waits at most PORTAL_LOCK_WAIT_SECONDS (PostgreSQL `lock_timeout`), and a request that
runs out answers 503 with Retry-After and a page that says nothing was changed and to try again: the
service's durable transaction has rolled back whole. Celery workers never run this: they wait as long as
the lock is held.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, OperationalError, connection
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for lock_timeout (and NOWAIT)


class LockWaitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('lock_timeout', %s, false)",
                    [f"{settings.PORTAL_LOCK_WAIT_SECONDS * 1000}ms"],
                )
        except DatabaseError:  # the database is down: the view answers for that (/healthz says so)
            return self.get_response(request)
        try:
            return self.get_response(request)
        finally:
            if connection.connection is not None and not connection.in_atomic_block:
                # The connection may serve other code next (a test); if it broke meanwhile, it is discarded.
                with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
                    cursor.execute("RESET lock_timeout")

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError):
            return None
        if getattr(exception.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            return None
        response = render(request, "busy.html", {"wait": settings.PORTAL_LOCK_WAIT_SECONDS}, status=503)
        response["Retry-After"] = "60"
        return response
