"""The live dashboard (``lk.dashboard()``): health, follower lag, queue depths, hit ratio, invalidation delay.

``gather(lab)`` is the one place these figures are collected, as a ``Figures`` snapshot (no
widgets): server and helper health come from ``lab.health()`` and ``lab.helper_health()``, the
rows `labkit status` prints (the followers' rows carry their lag in ms and bytes); the depth of
the queues the lab's Celery workers consume (and their dead-letter queues), and of any queue
named, over AMQP (``RabbitMQ.queue_depths``); hits and misses from every memcached's ``stats``;
commit -> delete delays from the files of the invalidation services the lab's state file
records. A figure that cannot be read goes into ``errors``: a dashboard never raises.

``Dashboard`` shows the latest snapshot in ipywidgets and refreshes it from a background thread
until ``stop()``, or until ``duration_s`` has passed, so a forgotten dashboard does not poll the
servers forever. Starting a new dashboard stops the ones before it (re-running a cell leaves
one thread, not two).

>>> dash = lk.dashboard(lab)      # doctest: +SKIP  (displays itself, refreshes every 2 s)
>>> dash.figures.followers        # doctest: +SKIP
[{'name': 'postgres-follower-1', 'lag_ms': 0.0, 'lag_bytes': 0, 'delay_ms': 0}]
>>> dash.stop()                   # doctest: +SKIP
"""

from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from labkit._proc import BackgroundLoop
from labkit.backend.cache import percentile
from labkit.backend.invalidation import InvalidationService, read_records

# How many of an invalidation service's latest commits the delay percentiles cover.
DELAY_WINDOW = 500


@dataclass
class Figures:
    """One snapshot of the lab's figures (what ``gather`` read, at ``at``)."""

    at: float
    servers: list[dict[str, Any]] = field(default_factory=list)
    helpers: list[dict[str, Any]] = field(default_factory=list)
    followers: list[dict[str, Any]] = field(default_factory=list)
    queues: dict[str, dict[str, int]] = field(default_factory=dict)  # ready, consumers
    cache: dict[str, int] = field(default_factory=lambda: {"hits": 0, "misses": 0})
    invalidation: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """Every server and every recorded helper answers."""
        return all(r["ok"] for r in self.servers + self.helpers)

    def hit_ratio(self, since: "Figures | None" = None) -> float | None:
        """Hits / (hits + misses) of every memcached: since the servers started, or since
        the snapshot ``since``; None when there was no read."""
        hits, misses = self.cache["hits"], self.cache["misses"]
        if since is not None:
            hits, misses = hits - since.cache["hits"], misses - since.cache["misses"]
        return hits / (hits + misses) if hits + misses > 0 else None


def gather(lab: Any, queues: Sequence[str] = ()) -> Figures:
    """Read every figure of the dashboard from ``lab``'s servers, once.

    ``queues``: RabbitMQ queues to show besides those of the recorded Celery workers.
    """
    figures = Figures(at=time.time())
    figures.servers = _safe(figures, "health", lab.health, [])
    figures.helpers = _safe(figures, "helpers", lab.helper_health, [])
    figures.followers = [{k: r[k] for k in ("name", "lag_ms", "lag_bytes", "delay_ms")}
                         for r in figures.servers if "lag_ms" in r]
    figures.errors += [f"{r['name']}: lag {r['lag']}" for r in figures.servers
                       if str(r.get("lag", "")).startswith("error")]
    names = [*queues]
    for h in figures.helpers:
        if "amqp_consumers" in h["probe"]:
            names += [h["probe"]["amqp_consumers"], h["probe"]["amqp_consumers"] + ".dead"]
    if lab.rabbitmq and names:
        figures.queues = _safe(figures, "queues",
                               lambda: lab.rabbitmq.queue_depths(dict.fromkeys(names)), {})
    for mc in lab.memcached:
        stats = _safe(figures, mc.name, mc.stats, {})
        for k in ("hits", "misses"):
            figures.cache[k] += stats.get(f"get_{k}", 0)
    for h in figures.helpers:
        if h["kind"] == InvalidationService.kind:
            figures.invalidation[h["name"]] = _delays(lab.config.lab_dir / h["key"])
    return figures


def _safe(figures: Figures, what: str, read: Any, default: Any) -> Any:
    try:
        return read()
    except Exception as e:  # a dashboard shows what it could not read, and goes on
        figures.errors.append(f"{what}: {type(e).__name__}: {e}")
        return default


def _delays(workdir: Path) -> dict[str, float]:
    """Commit -> delete delay (ms) of an invalidation service's latest commits."""
    records = read_records(workdir / "delays.jsonl")
    delays = [r["delay_ms"] for r in records[-DELAY_WINDOW:] if r.get("delay_ms") is not None]
    return {"commits": len(records), "p50_ms": percentile(delays, 50),
            "p99_ms": percentile(delays, 99), "last_ms": delays[-1] if delays else 0.0}


# ------------------------------------------------------------------------------ the widget
_running: list["Dashboard"] = []


class Dashboard(BackgroundLoop):
    """The figures of ``gather`` in ipywidgets, refreshed every ``interval_s`` in the background.

    Controls: *Refresh now* (one gather at once, also while paused) and *Pause*. ``stop()``
    ends the refresh thread and waits for it; it also ends by itself after ``duration_s``.
    """

    def __init__(self, lab: Any, interval_s: float = 2.0, duration_s: float = 900.0,
                 queues: Sequence[str] = ()) -> None:
        import ipywidgets as w
        if interval_s <= 0 or duration_s <= 0:
            raise ValueError(f"interval_s={interval_s}, duration_s={duration_s}: both must be "
                             "> 0 (seconds between refreshes, seconds before it stops)")
        super().__init__()
        self.lab, self.interval_s, self.duration_s = lab, interval_s, duration_s
        self.queues = tuple(queues)
        self.figures: Figures | None = None
        self.previous: Figures | None = None
        self.refreshes = 0
        self._lock = threading.Lock()
        self.status = w.HTML(value="<b>lab dashboard</b>: gathering…")
        self.body = w.HTML()
        self.refresh_button = w.Button(description="Refresh now", icon="refresh")
        self.pause_button = w.ToggleButton(description="Pause", value=False, icon="pause")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.pause_button.observe(lambda _: self._show(), names="value")
        self.widget = w.VBox([w.HBox([self.refresh_button, self.pause_button]), self.status,
                              self.body])

    @property
    def paused(self) -> bool:
        return bool(self.pause_button.value)

    def refresh(self) -> Figures:
        """Gather the figures once and show them."""
        with self._lock:  # the button and the thread never gather at the same time
            figures = gather(self.lab, self.queues)
            self.previous, self.figures = self.figures, figures
            self.refreshes += 1
        self._show()
        return figures

    def start(self) -> "Dashboard":
        """Refresh once now, then every ``interval_s`` in a background thread."""
        for other in list(_running):
            other.stop()
        self.refresh()
        self.__enter__()
        _running.append(self)
        return self

    def stop(self) -> None:
        """End the background refresh and wait for it (at most one gather's time)."""
        if getattr(self, "_thread", None) is not None:
            self.__exit__(None, None, None)   # sets the stop event, joins the thread
        self._stop.set()
        if self in _running:
            _running.remove(self)
        self._show()

    @property
    def running(self) -> bool:
        thread = getattr(self, "_thread", None)
        return thread is not None and thread.is_alive()

    def _loop(self) -> None:
        deadline = time.monotonic() + self.duration_s
        while not self._stop.wait(self.interval_s) and time.monotonic() < deadline:
            if not self.paused:
                self.refresh()
        self._stop.set()
        self._show()

    def _show(self) -> None:
        f = self.figures
        if f is None:
            return
        state = ("stopped" if self._stop.is_set() else "paused" if self.paused
                 else f"refreshing every {self.interval_s:g} s")
        health = "all healthy" if f.healthy else "<b style='color:#c00'>NOT all healthy</b>"
        self.status.value = (f"<b>lab dashboard</b> · {health} · updated "
                             f"{time.strftime('%H:%M:%S', time.localtime(f.at))} "
                             f"(refresh #{self.refreshes}) · <i>{state}</i>")
        self.body.value = render_html(f, self.previous)


def render_html(f: Figures, previous: Figures | None = None) -> str:
    """The snapshot as HTML tables (what the dashboard's body shows)."""
    def table(title: str, head: list[str], rows: list[list[Any]]) -> str:
        if not rows:
            return ""
        cells = "".join("<tr>" + "".join(f"<td style='padding:0 8px'>{html.escape(str(c))}</td>"
                                         for c in row) + "</tr>" for row in rows)
        th = "".join(f"<th style='padding:0 8px;text-align:left'>{h}</th>" for h in head)
        return f"<h4 style='margin:6px 0 2px'>{title}</h4><table><tr>{th}</tr>{cells}</table>"

    def ratio(r: float | None) -> str:
        return "-" if r is None else f"{r:.1%}"

    out = [table("servers", ["server", "health", "address", "version"],
                 [[r["name"] + (f" ({r['group']})" if r.get("group") else ""),
                   "ok" if r["ok"] else "DOWN", r["address"], r["version"]] for r in f.servers]),
           table("helpers", ["helper", "kind", "health"],
                 [[r["name"], r["kind"], "ok" if r["ok"] else f"DOWN ({r['why']})"]
                  for r in f.helpers]),
           table("follower lag", ["follower", "lag (ms)", "lag (bytes)", "replay delay (ms)"],
                 [[r["name"], f"{r['lag_ms']:.0f}", r["lag_bytes"], r["delay_ms"]]
                  for r in f.followers]),
           table("queues", ["queue", "messages ready", "consumers"],
                 [[q, d["ready"], d["consumers"]] for q, d in sorted(f.queues.items())]),
           table("cache", ["hits", "misses", "hit ratio", "since last refresh"],
                 [[f.cache["hits"], f.cache["misses"], ratio(f.hit_ratio()),
                   ratio(f.hit_ratio(previous)) if previous else "-"]]),
           table("invalidation delay (commit → delete)", ["service", "commits", "p50 (ms)",
                                                          "p99 (ms)", "last (ms)"],
                 [[n, d["commits"], f"{d['p50_ms']:.1f}", f"{d['p99_ms']:.1f}",
                   f"{d['last_ms']:.1f}"] for n, d in sorted(f.invalidation.items())])]
    if f.errors:
        out.append("<p style='color:#c00'>could not read: "
                   + "; ".join(html.escape(e) for e in f.errors) + "</p>")
    return "".join(out)


def dashboard(lab: Any = None, interval_s: float = 2.0, duration_s: float = 900.0,
              queues: Sequence[str] = ()) -> Dashboard:
    """Show the live dashboard of ``lab`` (the running lab by default) and start refreshing it.

    It stops after ``duration_s`` seconds, at ``dash.stop()``, or when another starts.
    """
    from IPython.display import display
    if lab is None:
        from labkit import attach
        lab = attach()
    dash = Dashboard(lab, interval_s=interval_s, duration_s=duration_s, queues=queues).start()
    display(dash.widget)
    return dash
