"""The lab's helper processes: what notebooks start beside the servers, and how to see them.

Two views, both needed. Every process spawned in the lab directory carries the lab's marker
(``LABKIT_LAB_ID``), so ``down`` sweeps it and ``reset`` stops it, whether or not anything
recorded it (``marked_helpers``). And every ``HelperService`` (gunicorn web servers, Celery
workers, invalidation services) records itself in the state file while it runs, so
``labkit status`` lists it, from any process, with its kind, name, pids, address and health
(``recorded``): its processes alive, and its own probe, checked over a real protocol.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import psutil

from labkit import _labdir, _state
from labkit._proc import PROCESS_ENV, Proc, marked_processes


def marked_helpers(lab_dir: Path, servers: list[Proc]) -> list[psutil.Process]:
    """Processes that carry the lab's marker but are none of its ``servers`` (or their children)."""
    marker = _labdir.read_marker(lab_dir)
    if marker is None:
        return []
    names, pids = {p.name for p in servers}, {p.pid for p in servers}
    out = []
    for p in marked_processes(marker.lab_id):
        try:
            if p.pid not in pids and p.environ().get(PROCESS_ENV) not in names:
                out.append(p)
        except psutil.Error:
            continue
    return out


def recorded(lab: Any, state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per helper the state file records: kind, name, pids, address, ok, why, probe."""
    state = _state.read(lab.config.lab_dir) if state is None else state
    rows = []
    for key, entry in sorted(state.get("helpers", {}).items()):
        procs = [Proc.from_dict(p) for p in entry.get("procs", [])]
        gone = [p for p in procs if not p.alive()]
        if gone:
            ok, why = False, (f"{len(gone)} of {len(procs)} process(es) gone; `labkit reset` "
                              "forgets it")
        else:
            ok, why = _probe(lab, entry.get("probe") or {})
        rows.append({"key": key, "kind": entry.get("kind", "?"), "name": entry.get("name", key),
                     "address": entry.get("address", ""), "ok": ok, "why": why,
                     "probe": entry.get("probe") or {},
                     "pids": ", ".join(str(p.pid) for p in procs), "gone": len(gone) == len(procs)})
    return rows


def forget_gone(lab_dir: Path, dry_run: bool = False) -> list[str]:
    """Drop the records of helpers whose processes are all gone; return their names."""
    gone: list[str] = []

    def change(state: dict[str, Any]) -> None:
        for key, entry in list(state.get("helpers", {}).items()):
            if not any(Proc.from_dict(p).alive() for p in entry.get("procs", [])):
                gone.append(entry.get("name", key))
                if not dry_run:
                    del state["helpers"][key]

    if dry_run:
        change(_state.read(lab_dir))
    elif _state.read(lab_dir).get("helpers"):
        _state.update(lab_dir, change)
    return gone


def _probe(lab: Any, probe: dict[str, Any]) -> tuple[bool, str]:
    """Check a helper the way it said (``HelperService.probe``), with the lab's own clients."""
    try:
        if "http" in probe:
            with urllib.request.urlopen(probe["http"], timeout=2) as r:
                return r.status == 200, f"HTTP {r.status} from {probe['http']}"
        if "postgres_application" in probe:
            name = probe["postgres_application"]
            (n,), = lab.leader.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,))
            return n > 0, ("connected to the leader" if n else
                           f"no session {name!r} on the leader")
        if "amqp_consumers" in probe:
            queue, want = probe["amqp_consumers"], probe.get("count", 1)
            with lab.rabbitmq.connect() as conn:
                _, _, consumers = conn.channel().queue_declare(queue, passive=True)
            return consumers >= want, f"{consumers} of {want} consumer(s) on queue {queue}"
    except Exception as e:  # a health report never raises
        return False, f"error: {type(e).__name__}: {e}"
    return True, "processes alive"
