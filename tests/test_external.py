"""The external provider: a lab pointed at servers that run elsewhere (here: another lab).

"Elsewhere" is a native lab started in a directory of its own, as a real cluster would be
somewhere else; the external lab, in another directory, names its servers in a lab.toml and
starts none of them. What a notebook does works through it; what would need a server labkit
runs is a clear error; `down` stops nothing of the other lab.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import amqp
import pytest
from pymemcache.client.base import Client

import labkit as lk
from labkit._labdir import make_temp
from labkit.config import ConfigError, LabConfig
from labkit.providers.external import NotManaged


@pytest.fixture(scope="module")
def elsewhere():
    """A native lab with every kind of server, in a directory of its own: the 'cluster'."""
    lab_dir = make_temp("labkit-elsewhere-")
    try:
        yield lk.up(lab_dir=lab_dir, followers=1, cassandra="single",
                    services=("postgres", "memcached", "rabbitmq", "cassandra"))
    finally:
        lk.down(lab_dir=lab_dir, purge=True)
        shutil.rmtree(lab_dir, ignore_errors=True)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _lab_toml(path: Path, other: lk.Lab) -> Path:
    """A lab.toml naming ``other``'s servers, the way one names a real cluster's."""
    cas = other.cassandra
    path.write_text(f"""
provider = "external"
services = ["postgres", "memcached", "rabbitmq"]
cassandra = "single"

[external]
leader = {json.dumps(other.leader.url())}
followers = {_toml_list([other.follower.dsn()])}
memcached = {_toml_list([f"{h}:{p}" for h, p in other.cache_servers])}
broker_url = {json.dumps(other.broker_url)}

[external.cassandra]
user = {json.dumps(cas.credentials.user)}
password = {json.dumps(cas.credentials.password)}
single = {{ us = {_toml_list([f"{h}:{p}" for h, p in cas.contact_points])} }}
""")
    return path


@pytest.fixture
def external(tmp_path, elsewhere):
    """(config of an external lab pointed at ``elsewhere``, env for its CLI)."""
    toml = _lab_toml(tmp_path / "lab.toml", elsewhere)
    lab_dir = make_temp("labkit-external-")
    env = {**os.environ, "LABKIT_CONFIG": str(toml), "LABKIT_LAB_DIR": str(lab_dir)}
    try:
        yield LabConfig.load(toml, environ={}, lab_dir=lab_dir), env
    finally:
        lk.down(lab_dir=lab_dir, purge=True)
        shutil.rmtree(lab_dir, ignore_errors=True)


def _labkit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True,
                          text=True, timeout=180, env=env)


def _healthy(lab: lk.Lab) -> bool:
    return all(r["ok"] for r in lab.health())


@pytest.mark.cassandra
def test_status_is_healthy_and_down_stops_nothing_of_the_servers(external, elsewhere):
    cfg, env = external
    up = _labkit(env, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert elsewhere.leader.address in up.stdout  # the topology it drew is the other lab's
    status = _labkit(env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "(external servers: labkit starts and stops none)" in status.stdout
    rows = {l.split()[0]: l for l in status.stdout.splitlines()[2:] if " ok " in l}
    assert {"postgres-leader", "postgres-follower1", "memcached-0", "rabbitmq",
            "cassandra-us-node1"} <= set(rows), status.stdout
    assert "delay 0 ms" in rows["postgres-follower1"], status.stdout  # lag read over SQL
    assert not (cfg.lab_dir / "postgres").exists()  # nothing was started here
    # Reattached without its lab.toml at hand (another shell): the state file says it all.
    bare = {k: v for k, v in env.items() if k != "LABKIT_CONFIG"}
    again = _labkit(bare, "status")
    assert again.returncode == 0 and "external servers" in again.stdout, again.stdout

    down = _labkit(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "left running (external servers, which labkit did not start)" in down.stdout
    assert "postgres" in down.stdout and "cassandra-single" in down.stdout, down.stdout
    assert not cfg.state_file.exists()
    assert _healthy(lk.attach(lab_dir=elsewhere.config.lab_dir, cassandra="single"))


@pytest.mark.cassandra
def test_a_notebook_flow_runs_through_the_external_lab(external, elsewhere):
    lab = lk.up(external[0])
    assert lab.provider.name == "external" and lab.leader.address == elsewhere.leader.address
    db = lab.postgres.create_database(f"ext_{uuid.uuid4().hex[:8]}")
    try:
        lab.leader.execute("CREATE TABLE likes (user_id bigint, media_id bigint)", dbname=db)
        lab.leader.execute("INSERT INTO likes VALUES (1, 42)", dbname=db)
        lab.follower.wait_replayed()
        assert lab.follower.execute("SELECT media_id FROM likes", dbname=db) == [(42,)]
        # The same servers the other lab runs: it sees the row.
        assert elsewhere.leader.execute("SELECT count(*) FROM likes", dbname=db) == [(1,)]

        cache = Client(lab.cache_servers[0])
        cache.set(f"{db}:like_count:42", b"1", noreply=False)  # else a get may pass the set
        assert Client(elsewhere.cache_servers[0]).get(f"{db}:like_count:42") == b"1"

        queue = f"{db}.notify"
        with lab.rabbitmq.connect() as conn:  # AMQP, no Celery
            ch = conn.channel()
            ch.queue_declare(queue, auto_delete=False)
            ch.basic_publish(amqp.Message(b"like 42"), routing_key=queue)
            msg = ch.basic_get(queue, no_ack=True)
            ch.queue_delete(queue)
        assert msg is not None and msg.body == b"like 42"

        session = lab.cassandra.connect()
        session.execute(f"CREATE KEYSPACE {db} WITH replication = "
                        "{'class': 'NetworkTopologyStrategy', 'us': 1}")
        session.execute(f"CREATE TABLE {db}.feed (user_id int PRIMARY KEY, media_id int)")
        session.execute(f"INSERT INTO {db}.feed (user_id, media_id) VALUES (1, 42)")
        assert session.execute(f"SELECT media_id FROM {db}.feed WHERE user_id = 1").one()[0] == 42
        assert elsewhere.cassandra.connect().execute(
            f"SELECT media_id FROM {db}.feed WHERE user_id = 1").one()[0] == 42

        # The reset of an external lab leaves the servers' data alone (not the lab's to drop).
        assert lk.reset(external[0]) == []
        assert db in elsewhere.postgres.scratch_databases()
        session.execute(f"DROP KEYSPACE {db}")
    finally:
        lab.postgres.drop_database(db)


@pytest.mark.cassandra
def test_fault_controls_on_servers_labkit_does_not_run_say_so(external, elsewhere):
    lab = lk.up(external[0])
    attempts = {
        "follower.set_delay": (lambda: lab.follower.set_delay(300), "ALTER SYSTEM"),
        "set_synchronous_commit": (lambda: lab.postgres.set_synchronous_commit("remote_apply"),
                                   "synchronous_standby_names"),
        "node.pause": (lambda: lab.cassandra.nodes[0].pause(), "native lab"),
        "node.nodetool": (lambda: lab.cassandra.nodes[0].nodetool("status"), "nodetool"),
        "memcached.stop": (lambda: lab.memcached[0].stop(), "labkit down` leaves it running"),
        "rabbitmq.queues": (lambda: lab.rabbitmq.queues(), "rabbitmqctl"),
    }
    for what, (attempt, fix) in attempts.items():
        with pytest.raises(NotManaged) as e:
            attempt()
        message = str(e.value)
        assert "runs elsewhere" in message and "[external" in message and fix in message, what
    # Nothing was changed on the servers.
    assert elsewhere.follower.delay_ms() == 0
    assert elsewhere.postgres.synchronous_commit() == "local"
    assert _healthy(elsewhere)
    # A config asking for the native provider on this lab is told what runs there.
    with pytest.raises(lk.ServiceError, match=r"runs on the external provider.*labkit down"):
        lk.up(lab_dir=lab.config.lab_dir, provider="native", services=("memcached",))


def test_lab_toml_errors_name_the_key_and_the_fix(tmp_path):
    toml = tmp_path / "lab.toml"
    toml.write_text('provider = "external"\n')
    with pytest.raises(ConfigError, match=r"add an \[external\] table to lab.toml"):
        LabConfig.load(toml, environ={})
    toml.write_text('[lab]\nprovider = "external"\nservices = ["postgres"]\nfollowers = 0\n'
                    '[external]\nleader = "postgres on the big box"\n')
    with pytest.raises(ConfigError) as e:
        LabConfig.load(toml, environ={})
    assert f"external.leader = 'postgres on the big box' in {toml}" in str(e.value)
    assert "not a libpq connection string or postgresql:// URL" in str(e.value)
    assert f"edit {toml}" in str(e.value)
    toml.write_text('provider = "external"\nservices = ["postgres", "memcached"]\n'
                    'cassandra = "regions"\n[external]\nleader = "host=10.0.0.5 user=lab"\n'
                    'memcached = ["10.0.0.7:11211"]\n[external.cassandra]\nuser = "lab"\n'
                    'password = "x"\nring = { us = ["10.0.1.1"] }\n')
    with pytest.raises(ConfigError) as e:
        LabConfig.load(toml, environ={})
    assert "followers = 1 (default), but [external] names 0 follower(s)" in str(e.value)
    assert "names no regions under [external.cassandra]" in str(e.value)
    ok = LabConfig.load(toml, environ={}, followers=0, cassandra="ring")
    assert ok.external.cassandra.topology("ring") == {"us": [("10.0.1.1", 9042)]}
    assert ok.to_dict()["external"]["memcached"] == ("10.0.0.7:11211",)
