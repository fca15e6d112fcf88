"""The placement service: its own process that clients ask "where is user U?".

Introduced in notebooks/10_akkio_placement.ipynb. Lookup path: Memcached (the location
cache), on a miss the location database in PostgreSQL, then the cache is filled. Every
lookup names the region asking (``from``), which the service counts per user in a sliding
window (``AccessCounters``); when the ``MigrationPolicy`` says so, the service moves the
user's data (``store.migrate``) on a background thread, one move at a time.

HTTP on loopback from the standard library's ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive,
JSON): a lookup is a dozen lines of routing and nothing more, so no web framework is
needed; clients keep one connection open (``http.client``), so a cached lookup is one
loopback round trip plus one memcached get.

    GET  /where?user=U&from=R     -> {"region", "version", "moving", "cache": "hit"|"miss"}
    POST /refresh?user=U&from=R   -> the same, skipping (and clearing) the cache entry
    POST /migrate?user=U&to=R     -> move now (for demonstrations), returns the step timings
    GET  /stats                   -> lookups, hits, migrations, moves in progress
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import sys
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from labkit.backend.akkio.location import Location
from labkit.services.base import HelperService

__all__ = ["PlacementClient", "PlacementService", "Placement"]


class Placement:
    """The service's logic (also usable in-process, as the notebook first does)."""

    def __init__(self, db: Any, cache: Any, counters: Any, policy: Any, stores: dict[str, Any]
                 ) -> None:
        self.db, self.cache, self.counters, self.policy, self.stores = (db, cache, counters,
                                                                        policy, stores)
        self.stats = {"lookups": 0, "hits": 0, "misses": 0, "migrations": 0, "refused_moves": 0}
        self.moves: list[dict[str, Any]] = []
        self.inside_ms: dict[str, list[float]] = {"hit": [], "miss": []}
        # The psycopg connection serializes its own use, the cache client is pooled: the lock
        # guards only the counters and the set of users being moved.
        self._lock = threading.Lock()
        self._moving: set[int] = set()
        self._todo: queue.Queue = queue.Queue()
        threading.Thread(target=self._mover, daemon=True).start()

    def where(self, user_id: int, region: str | None, refresh: bool = False) -> dict[str, Any]:
        """The user's location (cache, else database); ``region`` asking is counted."""
        t0 = time.perf_counter()
        loc = None if refresh else self.cache.get(user_id)
        hit = loc is not None
        if refresh:
            self.cache.invalidate(user_id)
        if loc is None:
            loc = self.db.get(user_id)
            if loc is None:
                raise KeyError(f"user {user_id} has no location; sign them up first")
            self.cache.put(loc)
        took_ms = (time.perf_counter() - t0) * 1000
        with self._lock:
            self.stats["lookups"] += 1
            self.stats["hits" if hit else "misses"] += 1
            # Inside the service: what the cache (and database) cost, without HTTP.
            self.inside_ms["hit" if hit else "miss"].append(took_ms)
        if region is not None and self.policy is not None:
            self._consider(loc, self.counters.record(user_id, region))
        return {**asdict(loc), "cache": "hit" if hit else "miss"}

    def inside_percentiles(self) -> dict[str, float]:
        """p50/p99 of a lookup's time inside the service, on a cache hit and on a miss."""
        from labkit.backend.cache import percentile

        with self._lock:
            return {f"inside_{k}_p{p}_ms": percentile(v, p)
                    for k, v in self.inside_ms.items() for p in (50, 99)}

    def _consider(self, loc: Location, counts: dict[str, int]) -> None:
        if loc.moving or loc.user_id in self._moving:
            return
        # The database is asked how long the user stayed only when the counts call for a move.
        if self.policy.decide(counts, loc.region, float("inf")) is None:
            return
        target = self.policy.decide(counts, loc.region, self.db.stayed_s(loc.user_id))
        with self._lock:
            if target is None or loc.user_id in self._moving:
                return
            self._moving.add(loc.user_id)
        self._todo.put((loc.user_id, target, None))

    def migrate(self, user_id: int, target: str) -> dict[str, Any]:
        """Move the user now (waits for the move, made on the mover thread)."""
        done: queue.Queue = queue.Queue()
        with self._lock:
            self._moving.add(user_id)
        self._todo.put((user_id, target, done))
        result = done.get()
        if isinstance(result, Exception):
            raise result
        return result

    def _mover(self) -> None:
        from labkit.backend.akkio.store import migrate

        while True:
            user_id, target, done = self._todo.get()
            try:
                result = self._move(user_id, target, migrate)
            except Exception as e:  # reported to a waiting caller; a policy move is retried later
                result = e
                with self._lock:
                    self.stats["refused_moves"] += 1
            finally:
                with self._lock:
                    self._moving.discard(user_id)
            if done is not None:
                done.put(result)

    def _move(self, user_id: int, target: str, migrate: Any) -> dict[str, Any]:
        loc = self.db.get(user_id)
        if loc.region == target:
            return {"moved": False, "why": f"already in {target}"}
        if not self.db.begin_move(loc):
            raise RuntimeError(f"user {user_id} is already moving")
        self.cache.invalidate(user_id)

        def switch() -> None:
            self.db.finish_move(loc, target)
            self.cache.invalidate(user_id)

        try:
            steps = migrate(user_id, loc.version, self.stores[loc.region], self.stores[target],
                            switch)
        except BaseException:
            self.db.abort_move(loc)
            raise
        self.counters.forget(user_id)
        record = {"user_id": user_id, "from": loc.region, "to": target, "at": time.time(),
                  "version": loc.version + 1, **steps}
        with self._lock:
            self.stats["migrations"] += 1
            self.moves.append(record)
        return {"moved": True, **record}


# ------------------------------------------------------------------------ the process
def _handler(placement: Placement) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per client

        def _answer(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self) -> None:
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                if url.path in ("/where", "/refresh"):
                    body = placement.where(int(q["user"]), q.get("from"),
                                           refresh=url.path == "/refresh")
                elif url.path == "/migrate":
                    body = placement.migrate(int(q["user"]), q["to"])
                elif url.path == "/stats":
                    body = {**placement.stats, "moves": placement.moves,
                            **placement.inside_percentiles()}
                else:
                    return self._answer(404, {"error": f"no such path {url.path}"})
            except (KeyError, ValueError, RuntimeError) as e:
                return self._answer(400, {"error": str(e)})
            self._answer(200, body)

        do_GET = do_POST = _route

        def log_message(self, format: str, *args: Any) -> None:  # no line per lookup
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    from labkit.backend.akkio.location import LocationCache, LocationDB, cache_prefix
    from labkit.backend.akkio.policy import AccessCounters, MigrationPolicy
    from labkit.backend.akkio.store import RegionStore
    from labkit.backend.cache import connect_cache
    from labkit.services.cassandra.credentials import CassandraCredentials
    from labkit.services.cassandra.driver import driver_cluster

    p = argparse.ArgumentParser(description="Akkio-style placement service")
    p.add_argument("--config", type=Path, required=True)
    cfg = json.loads(p.parse_args(argv).config.read_text())
    creds = CassandraCredentials(cfg["cassandra_user"], cfg["cassandra_password"])
    stores = {}
    for region, (host, port) in cfg["links"].items():
        session = driver_cluster([(host, port)], credentials=creds).connect()
        stores[region] = RegionStore(region, session, cfg["keyspace"])
        stores[region].create()
    policy = MigrationPolicy(**cfg["policy"]) if cfg.get("policy") else None
    placement = Placement(LocationDB(cfg["dsn"]),
                          LocationCache(connect_cache([tuple(cfg["memcached"])], pooled=True),
                                        cache_prefix(cfg["keyspace"])),
                          AccessCounters(cfg.get("window_s", 10.0)), policy, stores)
    server = ThreadingHTTPServer((cfg["host"], cfg["port"]), _handler(placement))
    server.daemon_threads = True
    print(f"placement service on {cfg['host']}:{cfg['port']}", flush=True)
    server.serve_forever()
    return 0


class PlacementService(HelperService):
    """The placement service process for one keyspace, started and stopped like a server.

    ``links`` are the (host, port) through which the mover reaches each region's cluster
    (``lab.regions.address(<mover's region>, region)``); the copy pays their distance.
    ``policy`` None places users statically (lookups are still served and counted).
    """

    kind = "placement"

    def __init__(self, workdir: Path, *, dsn: str, memcached: tuple[str, int],
                 links: dict[str, tuple[str, int]], credentials: Any, keyspace: str,
                 policy: Any = None, window_s: float = 10.0, port: int = 0,
                 host: str = "127.0.0.1", python: str = sys.executable,
                 timeout_s: float = 60.0) -> None:
        super().__init__(workdir, host=host, user=None, timeout_s=timeout_s)
        self.dsn, self.memcached, self.links = dsn, tuple(memcached), dict(links)
        self.credentials, self.keyspace, self.policy = credentials, keyspace, policy
        self.window_s, self.port, self.python = window_s, port, python

    @classmethod
    def for_lab(cls, lab: Any, *, dbname: str, keyspace: str, mover_region: str = "us",
                **kw: Any) -> "PlacementService":
        """The service for ``keyspace`` in ``lab``'s regions, its location table in ``dbname``."""
        net = lab.regions
        return cls(lab.config.lab_dir / "placement" / keyspace, dsn=lab.leader.dsn(dbname),
                   memcached=lab.cache_servers[0], keyspace=keyspace,
                   links={r: net.address(mover_region, r) for r in net.regions},
                   credentials=net.cassandra.credentials, host=lab.config.host, **kw)

    @property
    def name(self) -> str:
        return f"placement-{self.keyspace}"

    def _launch(self) -> None:
        from labkit._proc import PortAllocator, spawn
        from labkit.services.cassandra.credentials import write_secret

        if not self.port:
            self.port = PortAllocator(self.host).take()
        cfg = {"host": self.host, "port": self.port, "dsn": self.dsn,
               "memcached": list(self.memcached), "links": self.links,
               "cassandra_user": self.credentials.user,
               "cassandra_password": self.credentials.password, "keyspace": self.keyspace,
               "policy": asdict(self.policy) if self.policy else None, "window_s": self.window_s}
        path = self.workdir / "placement.json"  # holds passwords: readable by its owner only
        write_secret(path, json.dumps(cfg), mode=0o600)
        cmd = [self.python, "-m", "labkit.backend.akkio.service", "--config", str(path)]
        self.procs.append(spawn(self.name, cmd, cwd=self.workdir, log_path=self.log_path,
                                user=None))

    def ready(self) -> bool:
        return PlacementClient(self.host, self.port).stats() is not None

    def probe(self) -> dict[str, Any]:
        return {"http": f"http://{self.address}/stats"}

    def version(self) -> str:
        return "akkio placement"

    def client(self) -> "PlacementClient":
        return PlacementClient(self.host, self.port)


class PlacementClient:
    """Asks the placement service over one kept-alive HTTP connection (one thread at a time)."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def _get(self, method: str, path: str) -> dict[str, Any]:
        for attempt in (1, 2):  # a kept-alive connection the server closed: reconnect once
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout_s)
            try:
                self._conn.request(method, path)
                r = self._conn.getresponse()
                body = json.loads(r.read())
            except (http.client.HTTPException, ConnectionError):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
                continue
            if r.status != 200:
                raise RuntimeError(f"placement service: {body.get('error', r.status)}")
            return body
        raise AssertionError("unreachable")

    def where(self, user_id: int, region: str | None = None, refresh: bool = False) -> Location:
        path = "/refresh" if refresh else "/where"
        q = f"?user={user_id}" + (f"&from={region}" if region else "")
        body = self._get("POST" if refresh else "GET", path + q)
        self.last_cache = body.pop("cache")
        return Location(**body)

    def migrate(self, user_id: int, region: str) -> dict[str, Any]:
        return self._get("POST", f"/migrate?user={user_id}&to={region}")

    def stats(self) -> dict[str, Any]:
        return self._get("GET", "/stats")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


if __name__ == "__main__":
    sys.exit(main())
