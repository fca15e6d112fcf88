"""RabbitMQ in the lab: one node with the lab's own user and vhost (``labkit.services.rabbitmq``)."""

from __future__ import annotations

import secrets
from typing import Any

from labkit._proc import new_password
from labkit.lab.kinds.base import BuildContext, ServiceKind
from labkit.providers import docker, external
from labkit.services.rabbitmq import RabbitMQ


class RabbitMQKind(ServiceKind):
    name = "rabbitmq"
    secrets = {"mq_user": lambda: "lab-" + secrets.token_hex(4), "mq_password": new_password,
               "mq_vhost": lambda: "lab"}

    def native(self, ctx: BuildContext, saved: dict[str, Any] | None) -> RabbitMQ:
        cfg, creds = ctx.config, ctx.secrets
        mq = RabbitMQ(cfg.lab_dir / "rabbitmq", username=creds["mq_user"],
                      password=creds["mq_password"], vhost=creds["mq_vhost"],
                      port=ctx.ports.take(), dist_port=ctx.ports.take(),
                      epmd_port=ctx.ports.take(), server_bin=cfg.rabbitmq_server_bin,
                      epmd_bin=cfg.epmd_bin, timeout_s=cfg.startup_timeout_s,
                      host=cfg.host, user=ctx.user)
        if saved is not None:
            mq.restore(saved)
        return mq

    def docker(self, ctx: BuildContext, saved: dict[str, Any] | None) -> RabbitMQ:
        return docker.rabbitmq(ctx, saved)

    def external(self, ctx: BuildContext, saved: Any) -> RabbitMQ:
        return external.rabbitmq(ctx.external)

    def env(self, mq: RabbitMQ, lab: Any) -> dict[str, str]:
        return {"LABKIT_BROKER_URL": mq.broker_url, "CELERY_BROKER_URL": mq.broker_url}

    def topology(self, mq: RabbitMQ, lab: Any) -> list[str]:
        return [f"  rabbitmq           {mq.address}  vhost {mq.vhost}"]

    def reset(self, mq: RabbitMQ, lab: Any, dry_run: bool) -> list[str]:
        queues = mq.queues()
        if not queues:
            return []
        if not dry_run:
            mq.delete_queues(queues)
        return [f"delete RabbitMQ queues in vhost {mq.vhost}: {', '.join(queues)}"]
