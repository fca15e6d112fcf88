"""PostgreSQL in the lab: a leader and its followers (``labkit.services.postgres``)."""

from __future__ import annotations

import contextlib
from typing import Any

from labkit._proc import new_password
from labkit.lab.kinds.base import BuildContext, ServiceKind
from labkit.lab.status import size
from labkit.providers import docker, external
from labkit.services.postgres import Postgres


class PostgresKind(ServiceKind):
    name = "postgres"
    secrets = {"pg_password": new_password}

    @staticmethod
    def followers(ctx: BuildContext, saved: dict[str, Any] | None) -> int:
        """As many followers as run already, or as the config asks for at ``up``."""
        known = len(saved["servers"]) - 1 if saved is not None else 0
        asked = 0 if ctx.attaching or "postgres" not in ctx.config.services else ctx.config.followers
        return max(asked, known)

    def native(self, ctx: BuildContext, saved: dict[str, Any] | None) -> Postgres:
        cfg = ctx.config
        pg = Postgres(cfg.lab_dir / "postgres", password=ctx.secrets["pg_password"],
                      followers=self.followers(ctx, saved),
                      synchronous_commit=cfg.synchronous_commit, ports=ctx.ports,
                      bin_dir=cfg.pg_bin_dir, timeout_s=cfg.startup_timeout_s,
                      host=cfg.host, user=ctx.user)
        if saved is not None:
            pg.restore(saved)
        return pg

    def docker(self, ctx: BuildContext, saved: dict[str, Any] | None) -> Postgres:
        return docker.postgres(ctx, saved, self.followers(ctx, saved))

    def external(self, ctx: BuildContext, saved: Any) -> Postgres:
        return external.postgres(ctx.external, ctx.config.synchronous_commit)

    def env(self, pg: Postgres, lab: Any) -> dict[str, str]:
        lead = pg.leader
        out = dict(PGHOST=lead.host, PGPORT=str(lead.port), PGUSER=lead.login,
                   PGPASSWORD=lead.password, PGDATABASE="postgres", LABKIT_LEADER_DSN=lead.dsn())
        for f in pg.followers:
            out[f"LABKIT_FOLLOWER{f.index}_DSN"] = f.dsn()
        return out

    def topology(self, pg: Postgres, lab: Any) -> list[str]:
        lines = [f"  postgres leader    {pg.leader.address}"]
        for f in pg.followers:
            lines.append(f"    └─ {f.name:<14}  {f.address}  (streaming replica)")
        return lines

    def warnings(self, pg: Postgres, lab: Any) -> list[str]:
        out: list[str] = []
        with contextlib.suppress(Exception):  # a server that is down shows in health()
            for f in pg.followers:
                if f.delay_ms():
                    out.append(f"{f.name} applies every commit {f.delay_ms()} ms late "
                               "(recovery_min_apply_delay); `labkit reset`, or "
                               "set_delay(0), puts it back to 0")
        with contextlib.suppress(Exception):
            mode = pg.synchronous_commit()
            if mode != lab.config.synchronous_commit:
                out.append(f"synchronous_commit is {mode}, not the lab's "
                           f"{lab.config.synchronous_commit}; `labkit reset` puts it back")
        with contextlib.suppress(Exception):
            for s in pg.replication_slots():
                if not s["active"] and s["held_bytes"]:
                    out.append(f"replication slot {s['name']} ({s['type']}"
                               + (f", database {s['database']}" if s["database"] else "")
                               + f") is inactive and holds {size(s['held_bytes'])} of WAL "
                               "on the leader; "
                               + ("`labkit reset` drops it" if s["type"] == "logical" else
                                  "start its follower with `labkit up`"))
        return out

    def reset(self, pg: Postgres, lab: Any, dry_run: bool) -> list[str]:
        done: list[str] = []
        for f in pg.followers:
            if f.delay_ms():
                done.append(f"set {f.name}'s replay delay from {f.delay_ms()} ms to 0")
                if not dry_run:
                    f.set_delay(0)
        mode, default = pg.synchronous_commit(), lab.config.synchronous_commit
        if mode != default:
            done.append(f"set synchronous_commit from {mode} back to {default}")
            if not dry_run:
                pg.set_synchronous_commit(default)
        slots = [s["name"] for s in pg.replication_slots() if s["type"] == "logical"]
        if slots:
            done.append(f"drop logical replication slots: {', '.join(slots)}")
            if not dry_run:
                pg.drop_logical_slots()
        dbs = pg.scratch_databases()
        if dbs:
            done.append(f"drop databases: {', '.join(dbs)}")
            if not dry_run:
                for name in dbs:
                    pg.drop_database(name)
        return done
