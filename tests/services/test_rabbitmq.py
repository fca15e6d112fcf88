"""RabbitMQ on the real server: the lab's generated credentials work, others do not."""

import time
import uuid

import amqp
import pytest


def test_publish_consume_with_generated_credentials(lab):
    mq = lab.rabbitmq
    queue = f"test-{uuid.uuid4().hex[:8]}"
    with mq.connect() as conn:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True, auto_delete=False)
        ch.basic_publish(amqp.Message(b"liked 42", delivery_mode=2), routing_key=queue)
        msg = None
        for _ in range(50):
            msg = ch.basic_get(queue, no_ack=False)
            if msg:
                break
            time.sleep(0.02)  # a publish is asynchronous; basic_get may run ahead of it
        assert msg is not None and msg.body == b"liked 42"
        ch.basic_ack(msg.delivery_tag)
        ch.queue_delete(queue)


def _connect(host_port, user, password, vhost):
    conn = amqp.Connection(host=f"{host_port[0]}:{host_port[1]}", userid=user, password=password,
                           virtual_host=vhost, connect_timeout=3)
    conn.connect()
    return conn


def test_wrong_credentials_are_refused(lab):
    mq = lab.rabbitmq
    with pytest.raises(amqp.exceptions.AccessRefused):
        _connect(mq.host_port, mq.username, "not-the-password", mq.vhost)
    with pytest.raises(amqp.exceptions.AccessRefused):
        _connect(mq.host_port, "guest", "guest", "/")  # no guest account in a lab


def test_broker_url_works_for_kombu(lab):
    from kombu import Connection
    with Connection(lab.broker_url, connect_timeout=3) as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.connected
