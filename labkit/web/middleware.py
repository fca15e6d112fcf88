"""The per-request time budget: a slow request is cut off with a clear 504, never left hanging.

Two halves. Each request gets a deadline (``request.deadline``); every statement it runs is
bounded by the time left (``statement_timeout``, tightened by ``budget_connection``), so
PostgreSQL cancels a query that would overrun. The middleware turns that cancellation, or a
``BudgetExceeded`` raised by a view that checks its deadline, into a JSON 504.

Introduced in notebooks/02_web_tier.ipynb.
"""

from __future__ import annotations

import time
from typing import Callable

import psycopg
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse


class BudgetExceeded(Exception):
    """The request used up its time budget."""


class TimeBudgetMiddleware:
    """Gives each request a deadline and answers 504 JSON when it is overrun."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.time_budget_s = float(settings.LABKIT_TIME_BUDGET_S)
        request.deadline = time.monotonic() + request.time_budget_s
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, (BudgetExceeded, psycopg.errors.QueryCanceled)):
            budget_s = getattr(request, "time_budget_s", settings.LABKIT_TIME_BUDGET_S)
            return JsonResponse({"error": f"request cut off: it exceeded its time budget of "
                                          f"{budget_s:g} s", "time_budget_s": budget_s},
                                status=504)
        return None


def remaining_ms(request: HttpRequest) -> int:
    """Milliseconds left in this request's budget; raises ``BudgetExceeded`` at zero."""
    left = (request.deadline - time.monotonic()) * 1000
    if left <= 0:
        raise BudgetExceeded()
    return max(1, int(left))


def budget_connection(request: HttpRequest, alias: str) -> psycopg.Connection:
    """The psycopg connection behind Django's ``alias``, its statements bounded by the budget.

    The connection starts with ``statement_timeout`` = the whole budget; it is lowered to
    what is left only once the request has spent a tenth of it, so fast requests pay no
    extra round trip.
    """
    wrapper = connections[alias]
    wrapper.ensure_connection()
    conn: psycopg.Connection = wrapper.connection
    left = remaining_ms(request)
    current = getattr(wrapper, "_labkit_timeout_ms", int(request.time_budget_s * 1000))
    if left < current * 0.9 or current < request.time_budget_s * 900:
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(left),))
        current = left
    wrapper._labkit_timeout_ms = current
    return conn
