"""Tunable consistency on the 3-node ring, measured: t-visibility, faults, convergence, availability.

Introduced in notebooks/09_cassandra_feeds.ipynb.

The register is the feed of notebook 09: a *write* is one post fanned out into one follower's
``feed_by_user`` partition, a *read* is that follower's newest feed item (``LIMIT 1``, newest
first). Every operation is recorded in a ``History`` (Jepsen-style: who, what, invocation and
completion time, value, outcome), and ``check`` decides afterwards which reads were stale: a
read that returned an older value (or nothing) although a write of a newer value had been
*acknowledged before the read began*. A read concurrent with the write may see either.

``t_visibility`` runs trials "write at W, wait t ms after the acknowledgement, read at R", for
several (W, R) and t at once, in random order and at random moments, so that every cell meets
the faults equally; P(consistent | t) per (W, R) is PBS's t-visibility (Bailis et al., VLDB'12).
Writes go through node A and reads through node C (sessions pinned with ``only=``,
``WhiteListRoundRobinPolicy``): with RF 3 on 3 nodes every node holds every row, and a read at
ONE is answered by its coordinator's own replica (the lab turns the dynamic snitch off), so
pinning aims the reads at the replica the faults hit. Under token-aware routing a client would
meet that replica on about a third of its reads.

Faults (the nemesis, whose windows are recorded): ``SlowReplica`` freezes C with SIGSTOP for
``pause_ms`` out of every ``pause_ms + run_ms``. ``outage`` stops C with hinted handoff on at
one coordinator and off at the other, measures availability per level with one and then two
nodes down, brings them back and times each repair path: hints, read repair, ``nodetool
repair``.

    labkit experiment consistency --trials 40 --delays 0,5,20,100,500,1000 --out results.json

>>> ks = prepare(lab)                                                            # doctest: +SKIP
>>> history, rows = t_visibility(lab, ks, trials=20)                   # doctest: +SKIP
>>> print(table(rows))                                                           # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from labkit._proc import BackgroundLoop
from labkit.backend import feeds, ids
from labkit.experiments.results import save as save_results

DEFAULT_KEYSPACE = "consistency"
LEVELS = ("ONE", "QUORUM", "ALL")
PAIRS = (("ONE", "ONE"), ("QUORUM", "ONE"), ("ONE", "QUORUM"), ("QUORUM", "QUORUM"),
         ("ALL", "ONE"), ("ONE", "ALL"))
DELAYS_MS = (0, 5, 20, 100, 500, 1000)
AUTHOR_ID = 1  # the experiment's posts all come from one account


# ------------------------------------------------------------------------------- history

@dataclass
class Op:
    """One operation: invocation and completion (seconds since the history began) and outcome.

    ``status`` is Jepsen's: ``ok`` (done), ``fail`` (certainly not done: Unavailable) or
    ``info`` (unknown: it timed out, and a write may still have been applied).
    """

    process: int
    kind: str                  # "write" | "read"
    key: int                   # the follower whose feed is written or read
    value: int | None          # the post written, or the newest post read (None: empty)
    invoke_s: float
    complete_s: float
    status: str
    level: str
    meta: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class History:
    """Operations as they happen (thread-safe), and the nemesis' fault windows."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.windows: list[tuple[float, float, str]] = []
        self.t0 = time.monotonic()
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def run(self, process: int, kind: str, key: int, level: str, fn: Callable[[], Any], *,
            value: int | None = None, **meta: Any) -> Op:
        """Invoke ``fn`` (a write of ``value``, or a read returning the value), record it."""
        from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
        from cassandra.cluster import NoHostAvailable
        invoke = self.now()
        status, error = "ok", ""
        try:
            got = fn()
            if kind == "read":
                value = got
        except (Unavailable, NoHostAvailable) as e:
            status, error = "fail", type(e).__name__
        except (WriteTimeout, ReadTimeout, OperationTimedOut) as e:
            status, error = "info", type(e).__name__
        op = Op(process, kind, key, value if status == "ok" or kind == "write" else None,
                invoke, self.now(), status, level, meta, error)
        with self._lock:
            self.ops.append(op)
        return op

    def window(self, start_s: float, end_s: float, what: str) -> None:
        with self._lock:
            self.windows.append((start_s, end_s, what))

    def to_json(self) -> dict[str, Any]:
        return {"ops": [asdict(o) for o in self.ops], "windows": self.windows}


@dataclass(frozen=True)
class Anomaly:
    """A read that missed a write acknowledged before it began (``stale``), or that returned a
    value nobody wrote (``unknown``)."""

    kind: str
    read: Op
    write: Op | None


def check(ops: Sequence[Op]) -> list[Anomaly]:
    """The stale and unknown reads of a history of one register per key.

    Assumes what ``t_visibility`` does: the writes of a key carry increasing values (newer
    posts have larger IDs) and come one after another from one client, so the newest
    acknowledged value is the largest. A read is stale when some write acknowledged (``ok``)
    *before the read's invocation* has a larger value than what the read returned. Writes
    that failed or timed out oblige nobody; reading their value is allowed (a timed-out write
    may have been applied), reading a value never written is not.
    """
    writes: dict[int, list[Op]] = {}
    for op in ops:
        if op.kind == "write":
            writes.setdefault(op.key, []).append(op)
    out = []
    for r in ops:
        if r.kind != "read" or r.status != "ok":
            continue
        mine = writes.get(r.key, [])
        if r.value is not None and r.value not in {w.value for w in mine}:
            out.append(Anomaly("unknown", r, None))
            continue
        done = [w for w in mine if w.status == "ok" and w.complete_s < r.invoke_s]
        if done:
            newest = max(done, key=lambda w: w.value)
            if r.value is None or r.value < newest.value:
                out.append(Anomaly("stale", r, newest))
    return out


# ------------------------------------------------------------------------------- nemesis

class SlowReplica(BackgroundLoop):
    """Freeze ``node`` (SIGSTOP) for ``pause_ms`` of every ``pause_ms + run_ms``, in a thread.

    A context manager; every pause is recorded in ``history.windows``. On exit the node is
    resumed whatever happened (a JVM left frozen would hang the ring's next user).
    """

    def __init__(self, node: Any, history: History, *, pause_ms: float = 800,
                 run_ms: float = 200) -> None:
        super().__init__()
        self.node, self.history = node, history
        self.pause_ms, self.run_ms = pause_ms, run_ms

    def _loop(self) -> None:
        while not self._stop.is_set():
            start = self.history.now()
            self.node.pause()
            try:
                self._stop.wait(self.pause_ms / 1000)
            finally:
                self.node.resume()
                self.history.window(start, self.history.now(), f"{self.node.host} paused")
            self._stop.wait(self.run_ms / 1000)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.node.resume()


# --------------------------------------------------------------------------- the register

def prepare(lab: Any, keyspace: str = DEFAULT_KEYSPACE) -> str:
    """The experiment's keyspace (feeds tables, RF 3) on the lab's ring; its name.

    Raises with the fix when the lab's Cassandra is not a ring of three nodes.
    """
    cas = getattr(lab, "cassandra", None)
    if cas is None or len(cas.region(cas.regions[0]).nodes) < 3:
        raise RuntimeError("the consistency experiment needs the 3-node ring: start it with "
                           "`labkit up --cassandra ring` (or lk.up(cassandra='ring'))")
    session = cas.connect()
    try:
        return feeds.install(session, keyspace, dc=cas.regions[0])
    finally:
        session.cluster.shutdown()


INSERT = ("INSERT INTO feed_by_user (user_id, bucket, media_id, author_id) "
          "VALUES (?, ?, ?, ?)")
SELECT = "SELECT media_id FROM feed_by_user WHERE user_id = ? AND bucket = ? LIMIT 1"


class Register:
    """One post's fan-out as a register: written through ``writer``, read through ``reader``.

    Both sessions are pinned to one node (``only=``); the consistency level is chosen per
    operation. A write puts ``post`` into a follower's feed; a read returns the follower's
    newest post in the bucket of ``post`` (or None).
    """

    def __init__(self, cas: Any, keyspace: str, post: int, *, writer: Any, reader: Any) -> None:
        self.post, self.bucket = post, feeds.bucket_of(post)
        self.write_session = cas.connect(keyspace, only=writer)
        self.read_session = cas.connect(keyspace, only=reader)
        self._insert = self.write_session.prepare(INSERT)
        self._select = self.read_session.prepare(SELECT)

    def write(self, key: int, level: str) -> None:
        bound = self._insert.bind((key, self.bucket, self.post, AUTHOR_ID))
        bound.consistency_level = feeds.consistency(level)
        self.write_session.execute(bound)

    def write_all(self, keys: Sequence[int], level: str) -> None:
        """Write every key at once (up to 50 in flight); raise the first error."""
        from cassandra.concurrent import execute_concurrent_with_args
        self._insert.consistency_level = feeds.consistency(level)
        execute_concurrent_with_args(self.write_session, self._insert,
                                     [(k, self.bucket, self.post, AUTHOR_ID) for k in keys],
                                     concurrency=50)

    def read(self, key: int, level: str) -> int | None:
        bound = self._select.bind((key, self.bucket))
        bound.consistency_level = feeds.consistency(level)
        row = self.read_session.execute(bound).one()
        return row.media_id if row else None

    def present(self, keys: Sequence[int]) -> int:
        """How many of ``keys`` the reader's own replica holds (reads at ONE it coordinates)."""
        from cassandra.concurrent import execute_concurrent_with_args
        self._select.consistency_level = feeds.consistency("ONE")
        results = execute_concurrent_with_args(self.read_session, self._select,
                                               [(k, self.bucket) for k in keys],
                                               concurrency=50, raise_on_first_error=False)
        return sum(1 for ok, rs in results if ok and (row := rs.one()) and
                   row.media_id == self.post)

    def close(self) -> None:
        for s in (self.write_session, self.read_session):
            s.cluster.shutdown()


@contextlib.contextmanager
def _quiet_driver(level: int = logging.CRITICAL) -> Iterator[None]:
    """The driver logs every refused connection to a stopped or frozen node: expected here."""
    log = logging.getLogger("cassandra")
    before = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(before)


def _fresh_keys(n: int) -> Iterator[int]:
    """``n`` follower IDs never used before (random 62-bit, so runs never collide)."""
    base = random.getrandbits(61) + (1 << 61)
    return iter(range(base, base + n))


# --------------------------------------------------------------------------- t-visibility

def t_visibility(lab: Any, keyspace: str, *, pairs: Sequence[tuple[str, str]] = PAIRS,
                 delays_ms: Sequence[float] = DELAYS_MS, trials: int = 30,
                 concurrency: int = 16, spread_s: float = 0.3,
                 slow: dict[str, float] | None = None,
                 history: History | None = None) -> tuple[History, list[dict[str, Any]]]:
    """Trials "write at W through A, wait t ms, read at R through C"; the history and a table.

    ``trials`` per (W, R, t), shuffled, each starting after a random wait of up to
    ``spread_s``; ``slow={"pause_ms": 800, "run_ms": 200}`` runs them with C slowed
    (``SlowReplica``). Each row: W, R, t_ms, reads, stale, p_consistent, failed (trials whose
    write or read did not succeed), read_p50_ms.
    """
    cas = lab.cassandra
    a, c = cas.nodes[0], cas.nodes[2]
    history = history or History()
    cells = [(w, r, t) for w, r in pairs for t in delays_ms] * trials
    random.shuffle(cells)
    keys = _fresh_keys(len(cells))
    plan = [(next(keys), cell) for cell in cells]
    register = Register(cas, keyspace, _new_post(), writer=a, reader=c)

    def trial(i: int) -> None:
        key, (w, r, t) = plan[i]
        time.sleep(random.random() * spread_s)
        cell = {"w": w, "r": r, "t_ms": t}
        op = history.run(i, "write", key, w, lambda: register.write(key, w),
                         value=register.post, **cell)
        if op.status != "ok":
            return
        time.sleep(t / 1000)
        history.run(i, "read", key, r, lambda: register.read(key, r), **cell)

    try:
        with _quiet_driver(), \
                (SlowReplica(c, history, **slow) if slow else contextlib.nullcontext()), \
                ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(trial, range(len(plan))))
    finally:
        register.close()
    return history, visibility_table(history.ops)


def _new_post() -> int:
    """A post ID made now (the value the trials write)."""
    return ids.make_id(ids.now_ms(), 0, random.randrange(ids.SEQ_PER_MS))


def visibility_table(ops: Sequence[Op]) -> list[dict[str, Any]]:
    """Per (W, R, t): reads, stale reads (per ``check``), P(consistent), failures, read p50."""
    from labkit.backend.cache import percentile
    stale = {id(a.read) for a in check(ops) if a.kind == "stale"}
    cells: dict[tuple, dict[str, Any]] = {}
    for op in ops:
        key = (op.meta.get("w"), op.meta.get("r"), op.meta.get("t_ms"))
        row = cells.setdefault(key, {"w": key[0], "r": key[1], "t_ms": key[2], "reads": 0,
                                     "stale": 0, "failed": 0, "_ms": []})
        if op.status != "ok":
            row["failed"] += 1
        elif op.kind == "read":
            row["reads"] += 1
            row["stale"] += id(op) in stale
            row["_ms"].append((op.complete_s - op.invoke_s) * 1000)
    rows = []
    for row in cells.values():
        ms = row.pop("_ms")
        row["p_consistent"] = round(1 - row["stale"] / row["reads"], 4) if row["reads"] else None
        row["read_p50_ms"] = round(percentile(ms, 50), 2)
        rows.append(row)
    order = {p: i for i, p in enumerate(PAIRS)}
    return sorted(rows, key=lambda r: (order.get((r["w"], r["r"]), 99), r["w"], r["r"],
                                       r["t_ms"]))


def stale_rate(rows: Sequence[dict[str, Any]], w: str, r: str,
               max_t_ms: float = float("inf")) -> tuple[int, int]:
    """(stale reads, reads) of one (W, R) over the delays up to ``max_t_ms``."""
    sel = [x for x in rows if x["w"] == w and x["r"] == r and x["t_ms"] <= max_t_ms]
    return sum(x["stale"] for x in sel), sum(x["reads"] for x in sel)


def table(rows: Sequence[dict[str, Any]]) -> str:
    """P(consistent read) per (W, R) across the delays, as text."""
    delays = sorted({r["t_ms"] for r in rows})
    out = [f"{'W/R':<14}" + "".join(f"{f't={t:g}ms':>10}" for t in delays) + f"{'stale':>8}"]
    for w, r in dict.fromkeys((x["w"], x["r"]) for x in rows):
        cells = {x["t_ms"]: x for x in rows if x["w"] == w and x["r"] == r}
        stale, reads = stale_rate(rows, w, r)
        out.append(f"{w + '/' + r:<14}" + "".join(
            f"{cells[t]['p_consistent']:>10.3f}" if t in cells and cells[t]["reads"] else
            f"{'-':>10}" for t in delays) + f"{stale:>4}/{reads:<4}")
    return "\n".join(out)


def corrupt(ops: Sequence[Op], rng: random.Random | None = None) -> tuple[list[Op], Op]:
    """A copy of ``ops`` where one read that saw its write returns nothing instead.

    The deliberately broken history a checker must catch; returns (ops, the changed read).
    """
    rng = rng or random.Random(9)
    written = {(o.key, o.value) for o in ops if o.kind == "write" and o.status == "ok"}
    good = [o for o in ops if o.kind == "read" and o.status == "ok" and (o.key, o.value) in written]
    if not good:
        raise ValueError("no read saw a write in this history: nothing to corrupt")
    victim = rng.choice(good)
    broken = Op(**{**asdict(victim), "value": None})
    return [broken if o is victim else o for o in ops], broken


# --------------------------------------------------------------------------- availability

def availability(session: Any, keyspace: str, *, n: int = 20,
                 levels: Sequence[str] = LEVELS) -> list[dict[str, Any]]:
    """Share of ``n`` writes and ``n`` reads that succeed at each level, through ``session``.

    ``session`` routes as a client would (token-aware, skipping nodes it knows are down).
    """
    from cassandra.concurrent import execute_concurrent_with_args
    insert = session.prepare(INSERT.replace("feed_by_user", f"{keyspace}.feed_by_user"))
    select = session.prepare(SELECT.replace("feed_by_user", f"{keyspace}.feed_by_user"))
    post = _new_post()
    bucket = feeds.bucket_of(post)
    rows = []
    for level in levels:
        for kind, stmt in (("write", insert), ("read", select)):
            stmt.consistency_level = feeds.consistency(level)
            params = [(k, bucket, post, AUTHOR_ID) if kind == "write" else (k, bucket)
                      for k in _fresh_keys(n)]
            results = execute_concurrent_with_args(session, stmt, params, concurrency=n,
                                                   raise_on_first_error=False)
            errors = sorted({type(r).__name__ for ok, r in results if not ok})
            ok = sum(ok for ok, _ in results)
            rows.append({"level": level, "kind": kind, "ok": ok, "n": n,
                         "share": round(ok / n, 3), "errors": ",".join(errors)})
    return rows


# --------------------------------------------------------------------------------- outage

def _bring_back(nodes: Sequence[Any]) -> None:
    """Resume every frozen node of ``nodes`` and start every stopped one, all at once."""
    for n in nodes:
        if n.running():
            n.resume()
    down = [n for n in nodes if not n.running()]
    with ThreadPoolExecutor(max(1, len(down))) as pool:
        for f in [pool.submit(n.start) for n in down]:
            f.result()


def outage(lab: Any, keyspace: str, *, keys: int = 200, n: int = 20,
           hints_timeout_s: float = 90.0, poll_s: float = 0.5) -> dict[str, Any]:
    """Stop replica C; measure availability with one then two nodes down; time convergence.

    While C is down, ``keys`` posts go to followers through A (hinted handoff on: A keeps a
    hint for C) and ``keys`` through B (handoff off: no hint), at QUORUM. Then B stops too
    (two nodes down), both come back, and C's own replica is polled: the hinted keys arrive
    with the hints; of the others, half are read at QUORUM through C (blocking read repair
    writes them to C) and the rest wait for ``nodetool repair``. Every node is running, resumed
    and has handoff on again afterwards (B's is turned back on; A's is never touched: on, as
    ``cassandra.yaml`` says), whatever happened, and the lab's state file names the
    restarted JVMs (``lab.save_state()``), so other processes reattach to them.
    """
    cas = lab.cassandra
    a, b, c = cas.nodes[:3]
    post = _new_post()
    hinted, unhinted = list(_fresh_keys(keys)), list(_fresh_keys(keys))
    out: dict[str, Any] = {"keys": keys}
    try:
        with _quiet_driver():
            b.nodetool("disablehandoff")  # A keeps cassandra.yaml's default: on
            c.stop()
            session = cas.connect(keyspace)
            out["one_down"] = availability(session, keyspace, n=n)
            for node, batch in ((a, hinted), (b, unhinted)):
                via = Register(cas, keyspace, post, writer=node, reader=node)
                via.write_all(batch, "QUORUM")
                via.close()
            b.stop()
            out["two_down"] = availability(session, keyspace, n=n)
            session.cluster.shutdown()
            t0 = time.monotonic()
            _bring_back([b, c])
            lab.save_state()
            out["restart_s"] = round(time.monotonic() - t0, 1)
            register = Register(cas, keyspace, post, writer=a, reader=c)
            try:
                out.update(_converge(register, c, keyspace, hinted, unhinted,
                                     hints_timeout_s=hints_timeout_s, poll_s=poll_s))
            finally:
                register.close()
    finally:
        _bring_back([a, b, c])
        lab.save_state()
        b.nodetool("enablehandoff")
    return out


def _converge(register: Register, c: Any, keyspace: str, hinted: list[int],
              unhinted: list[int], *, hints_timeout_s: float, poll_s: float) -> dict[str, Any]:
    """Poll C's replica until the hinted keys are there; then read repair, then nodetool repair."""
    out: dict[str, Any] = {}
    timeline = []
    t_back = time.monotonic()
    while True:
        have_h, have_u = register.present(hinted), register.present(unhinted)
        timeline.append((round(time.monotonic() - t_back, 2), have_h, have_u))
        if have_h == len(hinted) or time.monotonic() - t_back > hints_timeout_s:
            break
        time.sleep(poll_s)
    out["timeline"] = timeline
    out["hints_s"] = timeline[-1][0] if timeline[-1][1] == len(hinted) else None
    out["unhinted_before_repair"] = timeline[-1][2]
    half, rest = unhinted[:len(unhinted) // 2], unhinted[len(unhinted) // 2:]
    t0 = time.monotonic()
    for k in half:
        register.read(k, "QUORUM")
    out["read_repair_s"] = round(time.monotonic() - t0, 2)
    out["after_read_repair"] = (register.present(half), register.present(rest))
    t0 = time.monotonic()
    c.nodetool("repair", "-full", keyspace, "feed_by_user")
    out["nodetool_repair_s"] = round(time.monotonic() - t0, 1)
    out["after_nodetool_repair"] = register.present(unhinted)
    return out


# ------------------------------------------------------------------------------- plotting

def plot(rows_by_scenario: dict[str, Sequence[dict[str, Any]]], ax: Any = None) -> Any:
    """t-visibility curves: P(consistent read) vs t per (W, R), one line style per scenario."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    styles = ["-", "--", ":", "-."]
    for (name, rows), ls in zip(rows_by_scenario.items(), styles):
        for i, (w, r) in enumerate(dict.fromkeys((x["w"], x["r"]) for x in rows)):
            sel = sorted((x for x in rows if x["w"] == w and x["r"] == r and x["reads"]),
                         key=lambda x: x["t_ms"])
            # t = 0 on a log axis: drawn at 0.5 ms and labelled so.
            ax.plot([max(x["t_ms"], 0.5) for x in sel], [x["p_consistent"] for x in sel],
                    ls, marker="o", color=f"C{i}", label=f"{w}/{r} ({name})")
    ax.set_xscale("log")
    ax.set(xlabel="t: ms between the write's acknowledgement and the read (0 drawn at 0.5)",
           ylabel="P(read sees the write)", title="t-visibility on the 3-node ring (W/R)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return ax


def plot_timeline(history: History, ax: Any = None) -> Any:
    """Each read at ONE over time (stale ones marked), the nemesis windows shaded (Jepsen)."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 2.5))
    stale = {id(a.read) for a in check(history.ops)}
    for start, end, _ in history.windows:
        ax.axvspan(start, end, color="grey", alpha=0.2, lw=0)
    reads = [o for o in history.ops if o.kind == "read" and o.status == "ok"]
    for label, sel, y, color in (("consistent", [o for o in reads if id(o) not in stale], 0, "C2"),
                                 ("stale", [o for o in reads if id(o) in stale], 1, "C3")):
        ax.plot([o.invoke_s for o in sel], [y + random.uniform(-0.2, 0.2) for o in sel], "|",
                color=color, label=label)
    ax.set(yticks=[0, 1], yticklabels=["consistent", "stale"], xlabel="seconds",
           title="reads over time; shaded: replica C frozen (SIGSTOP)")
    return ax


# ------------------------------------------------------------------------------- report
#: What `labkit report --quick` runs: two (W, R) pairs, no outage phase (its repair is slow).
QUICK_ARGS = ("--phases", "baseline,slow", "--trials", "6", "--delays", "0,20,200,1000",
              "--pairs", "ONE/ONE,QUORUM/QUORUM")


def headline(results: dict[str, Any]) -> list[str]:
    """Per phase: P(consistent) of W=R=ONE at t=0 and the first t with no stale read."""
    out = []
    for phase, res in results.items():
        if phase == "outage":
            out.append(f"outage: hints {res['hints_s']} s, read repair {res['read_repair_s']} "
                       f"s, nodetool repair {res['nodetool_repair_s']} s")
            continue
        for w, r in dict.fromkeys((x["w"], x["r"]) for x in res["rows"]):
            cells = sorted((x for x in res["rows"] if (x["w"], x["r"]) == (w, r)
                            and x["reads"]), key=lambda x: x["t_ms"])
            if not cells:
                continue
            clean = next((x["t_ms"] for x in cells if x["stale"] == 0), None)
            stale, reads = stale_rate(res["rows"], w, r)
            out.append(f"{phase}, {w}/{r}: P(consistent) {cells[0]['p_consistent']:.3f} at "
                       f"t = {cells[0]['t_ms']:g} ms; "
                       + (f"no stale read from t = {clean:g} ms" if clean is not None
                          else "stale reads at every t tried")
                       + f" ({stale} stale of {reads} reads)")
    return out


def plot_result(results: dict[str, Any], ax: Any = None) -> Any:
    """``plot`` of every t-visibility phase in a saved result."""
    return plot({p: r["rows"] for p, r in results.items() if p != "outage"}, ax=ax)


# ------------------------------------------------------------------------------------ CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``labkit experiment consistency``."""
    p.set_defaults(services="cassandra", cassandra="ring")  # what the experiment brings up
    p.add_argument("--phases", default="baseline,slow,outage",
                   help="comma-separated: baseline (no faults), slow (replica C frozen in "
                        "cycles), outage (C then B stopped: availability, hints, repair)")
    p.add_argument("--trials", type=int, default=30, help="trials per (W, R, t)")
    p.add_argument("--delays", default=",".join(map(str, DELAYS_MS)),
                   help="ms between a write's acknowledgement and the read")
    p.add_argument("--pairs", default=",".join(f"{w}/{r}" for w, r in PAIRS),
                   help="W/R consistency levels, e.g. ONE/ONE,QUORUM/QUORUM")
    p.add_argument("--pause-ms", type=float, default=800, help="slow phase: C frozen this long")
    p.add_argument("--run-ms", type=float, default=200, help="slow phase: then running this long")
    p.add_argument("--keys", type=int, default=200, help="outage phase: posts per repair path")
    p.add_argument("--keyspace", default=DEFAULT_KEYSPACE)
    p.add_argument("--out", type=Path, help="write the results (and histories) here as JSON")


def _parsed(args: argparse.Namespace) -> tuple[list[str], list[tuple[str, ...]], list[float]]:
    """(phases, (W, R) pairs, delays in ms) from ``args``; ValueError names what is wrong."""
    phases = [s.strip() for s in args.phases.split(",") if s.strip()]
    unknown = set(phases) - {"baseline", "slow", "outage"}
    if unknown:
        raise ValueError(f"--phases {','.join(sorted(unknown))}: choose from baseline, slow, "
                         "outage")
    try:
        pairs = [tuple(p.strip().upper().split("/")) for p in args.pairs.split(",")]
        for w, r in pairs:
            feeds.consistency(w), feeds.consistency(r)
        delays = [float(d) for d in args.delays.split(",")]
    except ValueError as e:
        raise ValueError(f"--pairs/--delays: {e} (pairs look like ONE/QUORUM, delays like "
                         "0,20,500)") from None
    return phases, pairs, delays


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with ``args`` (checked before any server starts), or None."""
    try:
        _parsed(args)
    except ValueError as e:
        return str(e)
    return None


def run_cli(args: argparse.Namespace, lab: Any) -> int:
    """Run the phases of ``args`` on ``lab``'s ring; print the tables."""
    started_s = time.time()
    phases, pairs, delays = _parsed(args)
    try:
        ks = prepare(lab, args.keyspace)
    except RuntimeError as e:
        print(e)
        return 2
    results: dict[str, Any] = {}
    for phase in phases:
        if phase == "outage":
            results["outage"] = res = outage(lab, ks, keys=args.keys)
            print("\noutage: availability (share of requests that succeeded)")
            for label in ("one_down", "two_down"):
                print(f"  {label.replace('_', ' ')}: " + ", ".join(
                    f"{r['kind']} {r['level']} {r['share']:.0%}" for r in res[label]))
            print(f"  hinted posts on C after {res['hints_s']} s; read repair of "
                  f"{args.keys // 2} keys {res['read_repair_s']} s; nodetool repair "
                  f"{res['nodetool_repair_s']} s")
            continue
        slow = {"pause_ms": args.pause_ms, "run_ms": args.run_ms} if phase == "slow" else None
        history, rows = t_visibility(lab, ks, pairs=pairs, delays_ms=delays,
                                     trials=args.trials, slow=slow)
        results[phase] = {"rows": rows, "history": history.to_json()}
        print(f"\n{phase}: P(read sees the write) by t after the write's acknowledgement")
        print(table(rows))
    save_results(args, lab, "consistency", results, started_s=started_s)
    return 0
