"""Leases against the thundering herd, three ways behind one interface.

Introduced in notebooks/06_leases.ipynb (the unprotected read is notebooks/05_thundering_herd).

Every kind answers ``read(key, load, ttl_s)``: return the cached value, or make sure that
only one caller runs ``load()`` (the database query) when the key is missing, while the
others wait briefly or take a stale value. ``invalidate(key, stale_s=...)`` deletes the key,
cancelling any outstanding lease, optionally keeping the old value as stale for ``stale_s``.

``none``        cache-aside with no protection: every client that misses queries the database.
``tokens``      Scaling Memcache at Facebook's lease tokens, built from ordinary memcached
                commands: a miss ``add``s a placeholder holding a token (so one token per key
                per ``lease_ttl_s`` = 10 s); the refill is a ``cas`` that only succeeds while that
                placeholder, i.e. the token, is still there; a ``delete`` removes it, cancelling
                the token. Others see the placeholder and wait, or take the stale copy.
``meta``        memcached 1.6's meta protocol, through the meta-memcache library: ``mg ... N``
                vivifies a miss and answers W (you refill) or Z (someone else is); ``md ... I``
                marks a value stale, which ``mg`` flags X; the refill is ``ms ... C<cas>``.
``coalescing``  in-process request coalescing (Instagram's "promises"): one refill per key per
                process, the other callers in that process await its result.

>>> lease = make_lease("meta", lab.cache_servers)                        # doctest: +SKIP
>>> lease.read("ig:likes:42", lambda: db.query_one(sql, (42,))[0], ttl_s=60)  # doctest: +SKIP
420
"""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

from labkit.backend.cache import connect_cache, dumps, loads

KINDS = ("none", "tokens", "meta", "coalescing")
LEASE_MARK = b"\x00lease:"  # a placeholder that holds a token; no serialized value starts so


@dataclass
class LeaseStats:
    """Per-kind counters: cache hits, refills (database loads), waits, stale values served."""

    hits: int = 0
    loads: int = 0
    waits: int = 0
    stale_served: int = 0
    lease_lost: int = 0      # a refill's set was refused: its lease was cancelled by a delete
    wait_timeouts: int = 0   # a waiter gave up and loaded from the database itself

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Lease:
    """The interface: ``read``, ``invalidate``, ``stats``; subclasses implement one kind.

    ``lease_ttl_s`` bounds a lease (one token per key per that many seconds); waiters poll
    every ``wait_ms`` for up to ``max_wait_s`` and then load from the database themselves.
    ``allow_stale`` lets waiters take a value marked stale instead of waiting.
    """

    kind = "?"

    def __init__(self, servers: Sequence[tuple[str, int]], *, lease_ttl_s: int = 10,
                 wait_ms: float = 5.0, max_wait_s: float = 3.0, allow_stale: bool = False) -> None:
        self.servers = [tuple(s) for s in servers]
        self.lease_ttl_s, self.wait_ms, self.max_wait_s = lease_ttl_s, wait_ms, max_wait_s
        self.allow_stale = allow_stale
        self.stats = LeaseStats()
        self._stats_lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def _load(self, load: Callable[[], Any]) -> Any:
        self._count("loads")
        return load()

    def _wait(self, deadline: float) -> bool:
        """Sleep one poll interval; False once the waiting budget is spent."""
        if time.monotonic() > deadline:
            return False
        time.sleep(self.wait_ms / 1000)
        return True

    def read(self, key: str, load: Callable[[], Any], ttl_s: int) -> Any:
        raise NotImplementedError

    def read_or_load(self, key: str, load: Callable[[], Any], ttl_s: int) -> Any:
        """``read``, or ``load()`` itself when memcached cannot be reached (restarting, or this
        client cut off from it: notebook 12): a cache is an optimisation, never a reason to
        fail a read.

        An error of ``load`` is raised as it is (it is the source's, not the cache's), and
        ``load`` never runs twice: a value loaded before storing it failed is returned.
        """
        loaded: list[Any] = []
        started = False

        def tracked() -> Any:
            nonlocal started
            started = True
            loaded.append(load())
            return loaded[-1]
        try:
            return self.read(key, tracked, ttl_s)
        except Exception:  # whatever the cache client raises when it cannot reach memcached
            if loaded:
                return loaded[-1]
            if started:
                raise
            return load()

    def invalidate(self, key: str, stale_s: int = 0) -> None:
        raise NotImplementedError

    def get(self, key: str) -> Any:
        """The cached value (never a placeholder), or None: what a test inspects."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind} {self.stats.as_dict()}>"


class _PymemcacheLease(Lease):
    def __init__(self, servers: Sequence[tuple[str, int]], **kw: Any) -> None:
        super().__init__(servers, **kw)
        self.cache = connect_cache(self.servers, pooled=True)

    def get(self, key: str) -> Any:
        data = self.cache.get(key)
        return None if data is None or data.startswith(LEASE_MARK) else loads(data)

    def invalidate(self, key: str, stale_s: int = 0) -> None:
        self.cache.delete(key, noreply=False)

    def close(self) -> None:
        self.cache.close()


class NoLease(_PymemcacheLease):
    """Plain cache-aside: every client that misses loads from the database (the herd)."""

    kind = "none"

    def read(self, key: str, load: Callable[[], Any], ttl_s: int) -> Any:
        data = self.cache.get(key)
        if data is not None:
            self._count("hits")
            return loads(data)
        value = self._load(load)
        self.cache.set(key, dumps(value), expire=ttl_s, noreply=False)
        return value


class TokenLease(_PymemcacheLease):
    """Facebook's lease tokens on ordinary memcached commands (get/add/gets/cas/delete).

    The placeholder ``LEASE_MARK + token`` lives ``lease_ttl_s``: while it is there nobody
    else gets a token for the key. The refill ``cas``es over exactly that placeholder, so a
    ``delete`` in between (a newer write) makes the refill fail instead of caching old data.
    On ``invalidate(key, stale_s)`` the old value is kept under ``key|stale`` for ``stale_s``.
    """

    kind = "tokens"

    def read(self, key: str, load: Callable[[], Any], ttl_s: int) -> Any:
        deadline = time.monotonic() + self.max_wait_s
        waited = False
        while True:
            data = self.cache.get(key)
            if data is None:
                token = LEASE_MARK + secrets.token_hex(8).encode()
                if self.cache.add(key, token, expire=self.lease_ttl_s, noreply=False):
                    value = self._load(load)
                    if not self.set_with_token(key, token, value, ttl_s):
                        self._count("lease_lost")
                    return value
                continue  # someone else took the lease (or filled the key) first: look again
            if not data.startswith(LEASE_MARK):
                self._count("hits")
                return loads(data)
            if self.allow_stale:
                stale = self.cache.get(key + "|stale")
                if stale is not None:
                    self._count("stale_served")
                    return loads(stale)
            if not waited:
                self._count("waits")
                waited = True
            if not self._wait(deadline):
                self._count("wait_timeouts")
                return self._load(load)

    def set_with_token(self, key: str, token: bytes, value: Any, ttl_s: int) -> bool:
        """Store ``value`` only while ``token`` is the key's outstanding lease."""
        data, cas_unique = self.cache.gets(key)
        if data != token:
            return False  # deleted (token cancelled) or already refilled
        if not self.cache.cas(key, dumps(value), cas_unique, expire=ttl_s, noreply=False):
            return False
        # A stale copy is older than what we just stored: never serve it from now on.
        self.cache.delete(key + "|stale", noreply=False)
        return True

    def invalidate(self, key: str, stale_s: int = 0) -> None:
        if stale_s:
            data = self.cache.get(key)
            if data is not None and not data.startswith(LEASE_MARK):
                self.cache.set(key + "|stale", data, expire=stale_s, noreply=False)
        self.cache.delete(key, noreply=False)  # also cancels an outstanding token


class MetaLease(Lease):
    """Leases by memcached itself, with the meta protocol (meta-memcache's low-level calls).

    ``mg <key> v c f N<lease_ttl_s>``: on a miss the server creates an empty item and answers
    W to exactly one client (it refills) and Z to the others; ``md <key> I T<stale_s>`` keeps
    the value but marks it stale (X), W going to the first reader after it; the refill is
    ``ms <key> C<cas>``, refused (EX) once the item changed since the W.
    """

    kind = "meta"

    def __init__(self, servers: Sequence[tuple[str, int]], **kw: Any) -> None:
        super().__init__(servers, **kw)
        from meta_memcache import (CacheClient, RequestFlags, ServerAddress,
                                   connection_pool_factory_builder)
        self._flags = RequestFlags
        self.client = CacheClient.cache_client_from_servers(
            servers=[ServerAddress(host=h, port=p) for h, p in self.servers],
            connection_pool_factory_fn=connection_pool_factory_builder(
                max_pool_size=512, connection_timeout=2, recv_timeout=2))
        self._get_flags = RequestFlags(return_value=True, return_cas_token=True,
                                       return_client_flag=True,
                                       vivify_on_miss_ttl=self.lease_ttl_s)

    def read(self, key: str, load: Callable[[], Any], ttl_s: int) -> Any:
        from meta_memcache import Key, Value
        k = Key(key)
        deadline = time.monotonic() + self.max_wait_s
        waited = False
        while True:
            r = self.client.meta_get(k, flags=self._get_flags)
            if not isinstance(r, Value):  # only without N, or the server is unreachable
                return self._load(load)
            if r.flags.win:
                value = self._load(load)
                ok = self.client.meta_set(k, dumps(value), flags=self._flags(
                    cache_ttl=ttl_s, cas_token=r.flags.cas_token))
                if not _is_success(ok):
                    self._count("lease_lost")
                return value
            if r.size > 0 and not r.flags.stale:
                self._count("hits")
                return loads(_as_bytes(r.value))
            if r.size > 0 and self.allow_stale:  # X and Z: someone refills, take the old value
                self._count("stale_served")
                return loads(_as_bytes(r.value))
            if not waited:
                self._count("waits")
                waited = True
            if not self._wait(deadline):
                self._count("wait_timeouts")
                return self._load(load)

    def get(self, key: str) -> Any:
        from meta_memcache import Key, Value
        r = self.client.meta_get(Key(key), flags=self._flags(return_value=True,
                                                             return_client_flag=True))
        if isinstance(r, Value) and r.size > 0 and not r.flags.stale:
            return loads(_as_bytes(r.value))
        return None

    def invalidate(self, key: str, stale_s: int = 0) -> None:
        from meta_memcache import Key
        flags = self._flags(mark_stale=True, cache_ttl=stale_s) if stale_s else None
        self.client.meta_delete(Key(key), flags=flags)


class CoalescingLease(_PymemcacheLease):
    """One refill per key per process; the other callers of this process await its result.

    No memcached feature is involved, so it cannot coordinate *processes*: with P processes a
    hot key's expiry still costs up to P queries (notebook 06 measures that).
    """

    kind = "coalescing"

    def __init__(self, servers: Sequence[tuple[str, int]], **kw: Any) -> None:
        super().__init__(servers, **kw)
        self._inflight: dict[str, Future] = {}
        self._lock = threading.Lock()

    def read(self, key: str, load: Callable[[], Any], ttl_s: int) -> Any:
        data = self.cache.get(key)
        if data is not None:
            self._count("hits")
            return loads(data)
        with self._lock:
            promise = self._inflight.get(key)
            leader = promise is None
            if leader:
                promise = self._inflight[key] = Future()
        if not leader:
            self._count("waits")
            return promise.result(timeout=self.max_wait_s)
        try:
            # A refill that finished between our miss and taking the lead already filled it.
            data = self.cache.get(key)
            if data is not None:
                value = loads(data)
            else:
                value = self._load(load)
                self.cache.set(key, dumps(value), expire=ttl_s, noreply=False)
            promise.set_result(value)
            return value
        except BaseException as e:
            promise.set_exception(e)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)


_CLASSES = {"none": NoLease, "tokens": TokenLease, "meta": MetaLease,
            "coalescing": CoalescingLease}


def make_lease(kind: str, servers: Sequence[tuple[str, int]], **options: Any) -> Lease:
    """A lease of ``kind`` (one of ``KINDS``) over memcached ``servers`` (``lab.cache_servers``)."""
    if kind not in _CLASSES:
        raise ValueError(f"lease kind {kind!r}: choose one of {', '.join(KINDS)}")
    return _CLASSES[kind](servers, **options)


def _is_success(response: Any) -> bool:
    from meta_memcache import Success
    return isinstance(response, Success)


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
