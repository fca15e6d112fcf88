"""The API: like/unlike, a media item with its like count, a profile, a feed page, a post.

Every answer is JSON. Errors a client can cause are 4xx with a message (unknown or malformed
ID, missing or wrong token, wrong method), never a 500. Writes go to the leader and reads to
the follower, as the router says; all data access is ``labkit.backend``.

Introduced in notebooks/02_web_tier.ipynb.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

from django.conf import settings
from django.db import router
from django.http import HttpRequest, JsonResponse

from labkit.backend import likes, ranking, schema
from labkit.web import feed as feed_state
from labkit.web.middleware import budget_connection
from labkit.web.models import MediaLikes

TOKEN_HELP = "send the header 'Authorization: Token <user_id>.<secret>'"


def _error(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def api(*methods: str, auth: bool = True) -> Callable:
    """Wrap a view: check the method, authenticate, and map lookup errors to 4xx JSON."""

    def wrap(view: Callable) -> Callable:
        @functools.wraps(view)
        def handler(request: HttpRequest, **kwargs: Any) -> JsonResponse:
            if request.method not in methods:
                response = _error(405, f"method {request.method} not allowed here; use "
                                       f"{' or '.join(methods)}", allowed=list(methods))
                response["Allow"] = ", ".join(methods)
                return response
            if auth:
                request.user_id = _authenticate(request)
                if isinstance(request.user_id, JsonResponse):
                    return request.user_id
            try:
                return view(request, **kwargs)
            except schema.MalformedId as e:
                return _error(400, str(e))
            except schema.NotFound as e:
                return _error(404, str(e))
            except ValueError as e:
                return _error(400, str(e))
        return handler

    return wrap


# token -> (user_id, monotonic expiry); per worker process, bounded.
_verified_tokens: dict[str, tuple[int, float]] = {}
_TOKEN_CACHE_MAX = 10_000


def _authenticate(request: HttpRequest) -> int | JsonResponse:
    header = request.headers.get("Authorization", "")
    kind, _, token = header.partition(" ")
    if not header:
        return _error(401, f"missing token: {TOKEN_HELP}")
    if kind not in ("Token", "Bearer") or not token.strip():
        return _error(401, f"malformed Authorization header, no token in it: {TOKEN_HELP}")
    token = token.strip()
    ttl_s = float(settings.LABKIT_TOKEN_CACHE_TTL_S)
    hit = _verified_tokens.get(token)
    now = time.monotonic()
    if hit and hit[1] > now:
        return hit[0]
    user_id = _check_token(request, token)
    if isinstance(user_id, int) and ttl_s > 0:
        if len(_verified_tokens) >= _TOKEN_CACHE_MAX:
            _verified_tokens.clear()
        _verified_tokens[token] = (user_id, now + ttl_s)
    return user_id


def _check_token(request: HttpRequest, token: str) -> int | JsonResponse:
    read = router.db_for_read(MediaLikes)
    user_id = schema.user_for_token(budget_connection(request, read), token)
    if user_id is None and read != "default":
        # A brand-new account may not have reached the follower yet: ask the leader.
        user_id = schema.user_for_token(budget_connection(request, "default"), token)
    if user_id is None:
        return _error(401, "invalid token: no user has this token; create one with "
                           "labkit.backend.schema.create_user")
    return user_id


@api("GET", auth=False)
def constant(request: HttpRequest) -> JsonResponse:
    """A constant answer: the cost of Django + gunicorn alone, to compare endpoints with."""
    return JsonResponse({"ok": True})


@api("GET", auth=False)
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


@api("POST", "DELETE")
def like(request: HttpRequest, media_id: str) -> JsonResponse:
    """POST likes the media item, DELETE takes the like back; both idempotent."""
    mid = schema.parse_id(media_id)
    conn = budget_connection(request, router.db_for_write(MediaLikes))
    if request.method == "POST":
        changed = likes.like(conn, request.user_id, mid)
    else:
        changed = likes.unlike(conn, request.user_id, mid)
    body = {"media_id": mid, "user_id": request.user_id, "liked": request.method == "POST",
            "changed": changed}
    if changed and request.method == "POST" and settings.LABKIT_BROKER_URL:
        # After the commit: the owner's notification goes to the queue, not into this request.
        owner_id = likes.owner_of(conn, mid)
        _notifier().tasks["notify_like"].delay(liker_id=request.user_id, media_id=mid,
                                               owner_id=owner_id)
        body["notification"] = "queued"
    return JsonResponse(body)


_notifiers: dict[tuple, Any] = {}


def _notifier() -> Any:
    """This process's Celery app for the configured broker (made once, reused per request).

    With the feeds configured it has the fan-out tasks too (a post queues ``fan_out_post``).
    """
    from labkit.backend import tasks
    feeds = settings.LABKIT_CASSANDRA_FEEDS
    key = (settings.LABKIT_BROKER_URL, settings.LABKIT_LEADER_DSN, settings.LABKIT_NOTIFY_QUEUE,
           repr(sorted(feeds.items())) if feeds else None)
    if key not in _notifiers:
        _notifiers[key] = tasks.make_app(key[0], key[1], queue=key[2], feeds=feeds)
    return _notifiers[key]


@functools.lru_cache(maxsize=None)
def _like_count_lease(servers: tuple, kind: str) -> Any:
    """This process's memcached lease for like counts (``WebConfig.cache``; notebook 12)."""
    from labkit.backend.leases import make_lease
    return make_lease(kind, servers)


@functools.lru_cache(maxsize=None)
def _gate_store(dsn: str, servers: tuple, prefix: str) -> Any:
    from labkit.backend.gates import GateStore
    return GateStore(dsn, servers, prefix=prefix)


def feature_on(request: HttpRequest, gate: str) -> bool:
    """Whether feature ``gate`` is on for this request's user (labkit.backend.gates).

    Off when the server has no gate store (``WebConfig.gates``). A view guards new code with
    it, so the code can ship dark and be turned on for a share of users later.
    """
    cfg = settings.LABKIT_GATES
    if not cfg or getattr(request, "user_id", None) is None:
        return False
    store = _gate_store(cfg["dsn"], tuple(tuple(s) for s in cfg["cache_servers"]),
                        cfg.get("prefix", "gates"))
    return store.enabled(gate, request.user_id)


@api("GET")
def media(request: HttpRequest, media_id: str) -> JsonResponse:
    """A media item with its like count (from the counter row, on the follower).

    ``?dependency_ms=N`` simulates a slow dependency inside the request (when allowed).
    """
    mid = schema.parse_id(media_id)
    conn = budget_connection(request, router.db_for_read(MediaLikes))
    delay = request.GET.get("dependency_ms")
    if delay is not None:
        if not settings.LABKIT_ALLOW_INJECTED_DELAY:
            return _error(400, "dependency_ms is disabled on this server "
                               "(WebConfig(allow_injected_delay=True) turns it on)")
        try:
            delay_ms = float(delay)
        except ValueError:
            return _error(400, f"dependency_ms={delay[:20]!r}: give milliseconds, e.g. 250")
        conn.execute("SELECT pg_sleep(%s)", (max(0.0, delay_ms) / 1000,))
    item = schema.get_media(conn, mid)
    if settings.LABKIT_CACHE:
        item["like_count"] = _cached_like_count(conn, mid)
    return JsonResponse(item)


def _cached_like_count(conn: Any, media_id: int) -> int:
    """The like count through memcached under a lease (``WebConfig.cache``; notebook 12).

    The key is the one the invalidation service deletes when the counter row changes. With
    memcached down the count comes from the database: a cache is an optimisation, never a
    reason to fail a read.
    """
    from labkit.backend.cache import TTL_S, cache_key
    cfg = settings.LABKIT_CACHE
    key = cache_key(cfg.get("prefix", "ig"), "likes", media_id)
    lease = _like_count_lease(tuple(tuple(s) for s in cfg["servers"]), cfg.get("lease", "meta"))
    return lease.read_or_load(key, lambda: likes.count(conn, media_id), TTL_S["likes"])


@api("GET")
def profile(request: HttpRequest, user_id: str) -> JsonResponse:
    """A user's profile (read on the follower)."""
    uid = schema.parse_id(user_id)
    return JsonResponse(schema.get_profile(
        budget_connection(request, router.db_for_read(MediaLikes)), uid))


@api("GET")
def feed(request: HttpRequest) -> JsonResponse:
    """A ranked feed page: ``?count=20`` posts, skipping ``?seen=<id>,<id>,...``.

    Candidates come from the follower (``ranking.PostgresCandidates``), or from the viewer's
    Cassandra feed (``WebConfig.feed_source="cassandra"``, notebook 09); scoring runs in the
    configured kernel (``WebConfig.feed_kernel``).
    """
    count_text = request.GET.get("count", str(ranking.DEFAULT_PAGE_SIZE))
    try:
        count = int(count_text)
    except ValueError:
        return _error(400, f"count={count_text[:20]!r}: give a number of posts, 1 to 100")
    seen = ranking.parse_seen(request.GET.get("seen"))
    conn = budget_connection(request, router.db_for_read(MediaLikes))
    model = feed_state.model(lambda: conn)
    if settings.LABKIT_FEED_SOURCE == "cassandra":
        source = feed_state.cassandra_source(conn, settings.LABKIT_CASSANDRA_FEEDS)
    else:
        source = ranking.PostgresCandidates(conn)
    page = ranking.feed_page(source, model, request.user_id,
                             seen=seen, count=count,
                             scorer=ranking.kernel(settings.LABKIT_FEED_KERNEL))
    return JsonResponse(page)


@api("POST")
def post(request: HttpRequest) -> JsonResponse:
    """Post a photo (``?caption=...``): its row on the leader, the author's row in Cassandra,
    and the fan-out to followers' feeds queued (``labkit.backend.feeds.publish``)."""
    if not (settings.LABKIT_BROKER_URL and settings.LABKIT_CASSANDRA_FEEDS):
        return _error(400, "posting needs the feeds: start the server with "
                           "WebConfig(broker_url=..., cassandra_feeds=...) "
                           "(labkit.backend.stack.Backend does)")
    from labkit.backend import feeds
    caption = request.GET.get("caption", "")[:2200]
    conn = budget_connection(request, router.db_for_write(MediaLikes))
    clients = feed_state.cassandra_clients(settings.LABKIT_CASSANDRA_FEEDS)
    media_id = feeds.publish(conn, clients["feeds"], _notifier(), request.user_id, caption)
    return JsonResponse({"media_id": media_id, "user_id": request.user_id,
                         "fan_out": "queued"})


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _error(404, f"no endpoint at {request.path}; see labkit/web/urls.py for the API")


def server_error(request: HttpRequest) -> JsonResponse:
    return _error(500, "internal error; the server log says why")
