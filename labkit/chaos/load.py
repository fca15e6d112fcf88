"""The users of notebook 12: an open-loop request mix on the full backend, recorded as a History.

Introduced in notebooks/12_backend_under_faults.ipynb.

Requests arrive at a fixed rate whatever the answers take (``labkit.web.loadgen.OpenLoad``,
notebook 13's generator, reused: a stalled server does not slow its users down, and a
request's latency counts from when it was due). Locust's users are closed loops (each waits
for its answer) and wrk2 and oha send one request shape, not a mix whose every answer a
checker reads afterwards; so the generator is the lab's own, and this module only adds the mix
and the conversion of each answered call into a ``history.Op``.

The mix (``MIX``): reads far more than writes; which media item a read or a like picks
follows a Zipf law over the media ordered by popularity; the celebrity (the account with the
most followers) writes ``celebrity_share`` of the posts.

>>> mix = Mix(backend.data, seed=1)                                            # doctest: +SKIP
>>> history = record(backend, mix, rate_per_s=50, duration_s=10)               # doctest: +SKIP
>>> len(history.ops), history.ops[0].f                                         # doctest: +SKIP
(500, 'media')
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from typing import Any, Callable

from labkit.backend.datagen import power_law_weights
from labkit.chaos.history import History, Op, outcome_of
from labkit.web.loadgen import Call, OpenLoad

# Share of each operation in the mix (reads ~80%, writes ~20%).
MIX = {"media": 0.52, "profile": 0.10, "feed": 0.16, "like": 0.14, "unlike": 0.05, "post": 0.03}


class Mix:
    """The request mix as an ``OpenLoad`` request function that remembers every request.

    Called from the load's one scheduler thread, in order: the ``i``-th call makes request
    ``i``, so ``specs[i]`` is what request ``i`` did (acting user, operation, arguments).
    """

    def __init__(self, data: Any, *, mix: dict[str, float] | None = None, alpha: float = 1.1,
                 celebrity_share: float = 0.3) -> None:
        mix = dict(MIX if mix is None else mix)
        unknown = set(mix) - set(MIX)
        if unknown or not mix or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(f"mix={mix}: give non-negative weights for some of "
                             f"{', '.join(MIX)}")
        self.data, self.celebrity_share = data, celebrity_share
        self.names = list(mix)
        self.cum_mix = list(itertools.accumulate(mix.values()))
        self.users = data.user_ids
        self.cum_media = list(itertools.accumulate(power_law_weights(len(data.media_ids), alpha)))
        self.specs: list[tuple[int, str, dict[str, Any]]] = []

    def __call__(self, rng: random.Random) -> tuple:
        f = rng.choices(self.names, cum_weights=self.cum_mix)[0]
        user = rng.choice(self.users)
        if f == "post" and rng.random() < self.celebrity_share:
            user = self.data.celebrity_id
        args: dict[str, Any] = {}
        if f in ("media", "like", "unlike"):
            args["media_id"] = rng.choices(self.data.media_ids, cum_weights=self.cum_media)[0]
        method, path = {
            "media": ("GET", f"/api/media/{args.get('media_id')}"),
            "like": ("POST", f"/api/media/{args.get('media_id')}/like"),
            "unlike": ("DELETE", f"/api/media/{args.get('media_id')}/like"),
            "profile": ("GET", f"/api/users/{user}"),
            "feed": ("GET", "/api/feed?count=10"),
            "post": ("POST", f"/api/posts?caption=chaos-{len(self.specs)}"),
        }[f]
        if f == "profile":
            args["user_id"] = user
        self.specs.append((user, f, args))
        return method, path, {"Authorization": self.data.tokens[user]}, f


def to_op(call: Call, spec: tuple[int, str, dict[str, Any]], t0: float) -> Op:
    """One answered (or failed) call as a history operation, times relative to ``t0``."""
    process, f, args = spec
    try:
        value = json.loads(call.body) if call.body else None
    except ValueError:
        value = None
    return Op(index=call.index, process=process, f=f, args=args, due_s=call.due_s - t0,
              sent_s=call.sent_s - t0, done_s=None if call.status == 0 else call.done_s - t0,
              outcome=outcome_of(call.status), value=value, status=call.status, error=call.error)


def record(web: Any, mix: Mix, *, rate_per_s: float, duration_s: float, clients: int = 48,
           timeout_s: float = 30.0, seed: int = 0,
           during: Callable[[History, float], Any] | None = None,
           tail_s: float = 3.0) -> History:
    """Run ``mix`` at ``rate_per_s`` for ``duration_s`` against ``web``; every request an Op.

    ``during(history, t0)``, when given, runs in a thread beside the load (the nemesis),
    with ``t0`` the load's start on ``time.monotonic()``. The load goes on until it has
    returned, and ``tail_s`` more when that was after ``duration_s``.
    """
    load = OpenLoad(web.host, web.port, mix, rate_per_s=rate_per_s, clients=clients,
                    timeout_s=timeout_s, keep_body=True, seed=seed)
    history = History(meta={"rate_per_s": rate_per_s, "duration_s": duration_s,
                            "clients": clients, "seed": seed})
    load.start()
    t0 = load.started_s
    side = None
    if during is not None:
        side = threading.Thread(target=during, args=(history, t0), daemon=True)
        side.start()
    time.sleep(max(0.0, t0 + duration_s - time.monotonic()))
    if side is not None and side.is_alive():
        # A fault outlasted the run (a broker that is slow to come back): the users keep
        # coming until it is healed and for a short tail after, so its cost is measured.
        side.join()
        time.sleep(tail_s)
        history.meta["extended_s"] = round(time.monotonic() - t0 - duration_s, 1)
    calls = load.stop()
    history.meta["lag_s"] = round(load.lag_s, 3)
    for call in calls:
        history.add(to_op(call, mix.specs[call.index], t0))
    return history
