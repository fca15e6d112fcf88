"""Memcached in the lab: one or more instances (``labkit.services.memcached``)."""

from __future__ import annotations

from typing import Any

from labkit.lab.kinds.base import BuildContext, ServiceKind
from labkit.providers import docker, external
from labkit.services.memcached import Memcached


class MemcachedKind(ServiceKind):
    name = "memcached"
    empty: list[Memcached] = []

    def count(self, ctx: BuildContext, saved: list[dict[str, Any]] | None) -> int:
        """As many instances as run already, or as the config asks for at ``up``."""
        cfg = ctx.config
        asked = 0 if ctx.attaching or self.name not in cfg.services else cfg.memcached_instances
        return max(asked, len(saved or []))

    def native(self, ctx: BuildContext, saved: list[dict[str, Any]] | None) -> list[Memcached]:
        cfg, n = ctx.config, self.count(ctx, saved)
        servers = [Memcached(cfg.lab_dir / f"memcached-{i}", index=i, port=ctx.ports.take(),
                             memory_mb=cfg.memcached_memory_mb, binary=cfg.memcached_bin,
                             host=cfg.host, user=ctx.user)
                   for i in range(n)]
        for m, s in zip(servers, saved or []):
            m.restore(s)
        return servers

    def docker(self, ctx: BuildContext, saved: list[dict[str, Any]] | None) -> list[Memcached]:
        return list(docker.memcached(ctx, saved, self.count(ctx, saved)))

    def external(self, ctx: BuildContext, saved: Any) -> list[Memcached]:
        return list(external.memcached(ctx.external))

    def state(self, servers: list[Memcached]) -> list[dict[str, Any]]:
        return [m.to_state() for m in servers]

    def env(self, servers: list[Memcached], lab: Any) -> dict[str, str]:
        return {"LABKIT_MEMCACHED_SERVERS": ",".join(m.address for m in servers)}

    def topology(self, servers: list[Memcached], lab: Any) -> list[str]:
        return [f"  {m.name:<18} {m.address}" for m in servers]

    def reset(self, servers: list[Memcached], lab: Any, dry_run: bool) -> list[str]:
        done = []
        for m in servers:
            done.append(f"flush {m.name}")
            if not dry_run:
                m.flush()
        return done
