"""The docker provider: the lab's servers in containers on a local Docker engine.

One lab on docker (PostgreSQL leader + follower, Memcached, RabbitMQ) serves the service tests;
the CLI tests start labs of their own in fresh directories. They run wherever an engine
answers; where none does they skip, saying why, except in CI (CI=true), where bootstrap.sh
starts one and a skip would hide a broken provider: there they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import amqp
import pytest
from pymemcache.client.base import Client

import labkit as lk
from labkit._labdir import make_temp, read_marker
from labkit._proc import ServiceError, wait_ready
from labkit.config import LabConfig
from labkit import cli, providers
from labkit.providers import docker as dockerp


def _engine() -> str:
    """The engine the lab would use (``docker_host``), once the provider says it can run."""
    config = LabConfig.load()
    verdict = providers.get("docker").check(config)
    if not verdict.ok:
        why = (f"the docker provider cannot run here ({verdict.why}); `LABKIT_DOCKER=1 bash "
               "containers/bootstrap.sh` installs and starts an engine")
        if os.environ.get("CI") == "true":
            pytest.fail(f"in CI the docker provider must run: {why}")
        pytest.skip(why)
    return config.docker_host


@pytest.fixture(scope="module")
def client():
    return dockerp.client(_engine())


@pytest.fixture(scope="module")
def dlab(client):
    lab_dir = make_temp("labkit-docker-")
    try:
        yield lk.up(lab_dir=lab_dir, provider="docker", followers=1,
                    services=("postgres", "memcached", "rabbitmq"))
    finally:
        lk.down(lab_dir=lab_dir, purge=True)
        shutil.rmtree(lab_dir, ignore_errors=True)


def _lab_filter(lab_dir) -> dict[str, str]:
    return {"label": f"{dockerp.LABEL}={read_marker(lab_dir).lab_id}"}


def _containers(client, lab_dir) -> list[str]:
    """Containers labelled with the lab of ``lab_dir``.

    The low-level list: the high-level one inspects each container it lists, and fails with
    NotFound when one goes in between.
    """
    return [c["Names"][0].lstrip("/")
            for c in client.api.containers(all=True, filters=_lab_filter(lab_dir))]


def _labelled(client, lab_dir) -> list[str]:
    """Containers and networks labelled with the lab of ``lab_dir``."""
    return _containers(client, lab_dir) + [
        n["Name"] for n in client.api.networks(filters=_lab_filter(lab_dir))]


def test_servers_run_in_containers_published_on_loopback_only(dlab, client):
    assert dlab.provider.name == "docker"
    for svc in (dlab.leader, dlab.follower, dlab.memcached[0], dlab.rabbitmq):
        c = client.containers.get(svc.container_name)
        assert c.status == "running" and c.labels[dockerp.LABEL]
        bindings = [b for bs in c.attrs["HostConfig"]["PortBindings"].values() for b in bs]
        assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(svc.port)}]
        assert svc.host == "127.0.0.1"
    assert all(r["ok"] for r in dlab.health()), dlab.status_table()


def test_postgres_leader_and_follower_replicate_with_a_delay(dlab):
    pg = dlab.postgres
    db = pg.create_database(f"d_{uuid.uuid4().hex[:8]}")  # waits for the follower too
    dlab.leader.execute("CREATE TABLE t (x int)", dbname=db)
    dlab.leader.execute("INSERT INTO t VALUES (1)", dbname=db)
    dlab.follower.wait_replayed()
    assert dlab.follower.execute("SELECT x FROM t", dbname=db) == [(1,)]
    assert dlab.follower.execute("SELECT pg_is_in_recovery()") == [(True,)]
    try:
        dlab.follower.set_delay(400, settle=True)
        assert dlab.follower.delay_ms() == 400
        dlab.leader.execute("INSERT INTO t VALUES (2)", dbname=db)  # a write to be held back
        lag = dlab.follower.lag()  # read over SQL, from the leader's heartbeat, as on native
        assert lag.bytes > 0 and lag.ms >= 200, lag
    finally:
        dlab.follower.set_delay(0)
    # The generated password is the login; a wrong one is refused.
    import psycopg
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dlab.leader.dsn().replace(dlab.leader.password, "wrong"),
                        connect_timeout=3)
    pg.drop_database(db)


def test_a_follower_stops_and_starts_and_catches_up(dlab):
    f = dlab.follower
    f.stop()
    assert not f.running() and not f.health()["ok"]
    dlab.leader.execute("CREATE TABLE IF NOT EXISTS while_down (x int)")
    f.start()
    f.wait_replayed(timeout_s=30)
    assert f.execute("SELECT count(*) FROM while_down") == [(0,)]
    dlab.leader.execute("DROP TABLE while_down")


def test_memcached_pause_freezes_it_and_resume_thaws(dlab):
    mc = dlab.memcached[0]
    c = Client(mc.host_port, connect_timeout=2, timeout=1)
    assert c.set("k", b"v", noreply=False) and c.get("k") == b"v"
    mc.pause()
    try:
        assert mc.running()  # paused, not gone
        with pytest.raises(Exception):
            mc.ready()  # frozen: no answer within the check's timeout
    finally:
        mc.resume()
    assert Client(mc.host_port, connect_timeout=2, timeout=2).get("k") == b"v"


def test_rabbitmq_speaks_amqp_with_the_lab_user_and_rabbitmqctl_runs_inside(dlab):
    mq = dlab.rabbitmq
    q = f"q-{uuid.uuid4().hex[:8]}"
    with mq.connect() as conn:
        ch = conn.channel()
        ch.queue_declare(q, durable=False, auto_delete=False)
        ch.basic_publish(amqp.Message("hello"), routing_key=q)
        assert ch.basic_get(q, no_ack=True).body == "hello"
    assert q in mq.queues()  # `rabbitmqctl list_queues` through docker exec
    mq.delete_queues([q])
    with mq.connect() as conn, pytest.raises(amqp.exceptions.NotFound):
        conn.channel().queue_declare(q, passive=True)
    with pytest.raises(amqp.exceptions.AccessRefused):
        amqp.Connection(host=mq.address, userid="guest", password="guest",
                        virtual_host=mq.vhost, connect_timeout=3).connect()


def test_the_herd_experiment_runs_on_docker_and_leases_stop_the_herd(dlab, tmp_path, capsys):
    """One experiment, unchanged, on the containers: `labkit experiment herd` on the docker lab."""
    out = tmp_path / "herd.json"
    rc = cli.main(["--lab-dir", str(dlab.config.lab_dir), "experiment", "herd", "--clients", "16",
                   "--lease", "none,meta", "--rounds", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    rows = {r["lease"]: r for r in json.loads(out.read_text())}
    assert all(r["errors"] == 0 for r in rows.values()), rows
    assert rows["meta"]["queries"] == [1, 1], rows["meta"]  # one refill per expiry, leased
    assert max(rows["none"]["queries"]) > 1, rows["none"]   # the herd: several refills at once


def _app_containers(client, lab_dir) -> dict[int, str]:
    """{host pid of its process: name} of the lab's running containers of the app image."""
    found = {}
    for c in client.api.containers(filters=_lab_filter(lab_dir)):
        if c["Image"].startswith("labkit/app:"):
            found[client.api.inspect_container(c["Id"])["State"]["Pid"]] = c["Names"][0]
    return found


def test_the_backend_runs_in_app_containers_and_its_faults_act_there(dlab, client):
    """The backend's own processes (web tier, Celery workers, invalidation service) run in
    containers of the app image under docker, each with the pid the host sees: `labkit status`
    checks them, the nemesis kills a worker and a gunicorn worker and stops the invalidation
    service there, and the checkers find nothing lost; stop removes the containers."""
    from labkit.backend.stack import Backend
    from labkit.experiments import chaos
    lab_dir = dlab.config.lab_dir
    lab = lk.up(lab_dir=lab_dir, provider="docker", services=("cassandra",), cassandra="ring")
    backend = Backend(lab, name="indocker", users=60, web_workers=2, celery_workers=2)
    try:
        backend.start()
        helpers = [*backend.web.procs, *backend.workers.procs, *backend.invalidation.procs]
        running = _app_containers(client, lab_dir)
        assert sorted(running) == sorted(p.pid for p in helpers), (running, helpers)
        health = {row["kind"]: row for row in lab.helper_health()}
        assert all(health[k]["ok"] for k in ("web", "celery", "invalidation")), health
        assert backend.web.get("/healthz")[0] == 200
        first_worker = backend.workers.procs[0].pid
        result, history = chaos.run(
            lab, duration_s=14, rate_per_s=8, hold_s=1.5, backend=backend,
            faults=["celery-kill", "gunicorn-kill", "invalidation-stop"])
        assert result["nemesis_errors"] == []
        verdicts = {v["name"]: v for v in result["checkers"]}
        for name in ("likes", "notifications", "feeds"):
            assert verdicts[name]["ok"], (name, verdicts[name]["violations"][:3])
        assert len(history.acknowledged("like")) > 0
        # the killed worker and the stopped service came back, in new containers
        now = _app_containers(client, lab_dir)
        assert first_worker not in now and backend.workers.procs[0].pid in now, now
        assert backend.invalidation.procs[0].pid in now
    finally:
        backend.stop()
    # each process has ended; the engine removes its container (auto_remove) right after
    wait_ready("the app containers removed", lambda: not _app_containers(client, lab_dir),
               timeout_s=30)


@pytest.fixture(scope="module")
def dcas(client):
    """A docker lab running Cassandra's ring and the two regions side by side (five JVMs)."""
    lab_dir = make_temp("labkit-docker-cassandra-")
    try:
        lk.up(lab_dir=lab_dir, provider="docker", services=("cassandra",), cassandra="ring")
        yield lk.up(lab_dir=lab_dir, provider="docker", services=("cassandra",), cassandra="regions")
    finally:
        lk.down(lab_dir=lab_dir, purge=True)
        shutil.rmtree(lab_dir, ignore_errors=True)


def test_cassandra_nodes_run_in_containers_each_on_its_own_loopback_address(dcas, client):
    nodes = [n for cas in dcas.cassandra_topologies.values() for n in cas.nodes]
    assert len(nodes) == 5 and len({n.container_name for n in nodes}) == 5
    assert len({n.host for n in nodes}) == 5
    for n in nodes:
        c = client.containers.get(n.container_name)
        assert c.status == "running" and c.labels[dockerp.LABEL]
        bindings = [b for bs in c.attrs["HostConfig"]["PortBindings"].values() for b in bs]
        assert bindings == [{"HostIp": n.host, "HostPort": str(n.native_port)}]
        assert n.host.startswith("127.0.0.")
    assert all(r["ok"] for r in dcas.health()), dcas.status_table()
    # nodetool runs in the container, logged in over its JMX; the ring's three gossip
    # with each other on the lab's network.
    ring = dcas.cassandra_topologies["ring"]
    status = ring.nodes[0].nodetool("status")
    assert sum(line.startswith("UN ") for line in status.splitlines()) == 3, status


def test_the_ring_replicates_across_containers_and_quorum_outlives_a_paused_node(dcas, client):
    from cassandra import ConsistencyLevel, Unavailable, WriteTimeout
    from cassandra.query import SimpleStatement

    from labkit.services.cassandra import create_keyspace
    ring = dcas.cassandra_topologies["ring"]
    ks = f"d_{uuid.uuid4().hex[:8]}"
    # The first node coordinates every request: the one to be paused must not.
    session = ring.connect(only=ring.nodes[0], request_timeout_s=30)
    create_keyspace(session, ks, {"us": 3})
    session.execute(f"CREATE TABLE {ks}.t (k int PRIMARY KEY, v text)", timeout=60)

    def write(k: int, level: int) -> None:
        session.execute(SimpleStatement(f"INSERT INTO {ks}.t (k, v) VALUES (%s, 'x')",
                                        consistency_level=level), (k,))

    write(1, ConsistencyLevel.ALL)
    for node in ring.nodes:  # each replica alone has it
        alone = ring.connect(only=node)
        read = SimpleStatement(f"SELECT v FROM {ks}.t WHERE k = 1",
                               consistency_level=ConsistencyLevel.ONE)
        assert alone.execute(read).one().v == "x", node.name
    paused = ring.nodes[2]
    paused.pause()  # docker pause: the cgroup freezer, as SIGSTOP natively
    try:
        assert client.containers.get(paused.container_name).status == "paused"
        write(2, ConsistencyLevel.QUORUM)  # two of three answer
        with pytest.raises((WriteTimeout, Unavailable)):
            write(3, ConsistencyLevel.ALL)
    finally:
        paused.resume()
    assert client.containers.get(paused.container_name).status == "running"
    session.execute(f"DROP KEYSPACE {ks}", timeout=60)


def test_regions_on_docker_are_reached_through_their_delayed_links(dcas):
    net = dcas.regions
    cross, local = net.connect("eu", "us"), net.connect("us", "us")
    try:
        for s in (cross, local):
            assert s.execute("SELECT peer FROM system.peers").all() == []  # no gossip across
        rtts = []
        for _ in range(4):
            t0 = time.perf_counter()
            cross.execute("SELECT release_version FROM system.local")
            rtts.append((time.perf_counter() - t0) * 1000)
        # A lower bound only: a round trip through a link of d ms each way takes 2*d at least.
        assert min(rtts) >= 2 * net.delay_ms_of("eu", "us") > 0
    finally:
        cross.cluster.shutdown()
        local.cluster.shutdown()


def test_the_consistency_experiment_runs_on_the_docker_ring(dcas, tmp_path, capsys):
    """Notebook 09's experiment, unchanged, on the containers: replica C frozen by docker pause."""
    out = tmp_path / "consistency.json"
    rc = cli.main(["--lab-dir", str(dcas.config.lab_dir), "experiment", "consistency",
                   "--phases", "slow", "--trials", "6", "--delays", "0,1000",
                   "--pairs", "ONE/ONE,QUORUM/QUORUM", "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    rows = json.loads(out.read_text())["slow"]["rows"]
    assert {(r["w"], r["r"], r["t_ms"]) for r in rows} == {
        (w, w, t) for w in ("ONE", "QUORUM") for t in (0.0, 1000.0)}, rows
    assert all(r["reads"] == 6 and r["failed"] == 0 for r in rows), rows  # every read answered
    assert all(r["p_consistent"] == 1.0 for r in rows if r["w"] == "QUORUM"), rows  # R + W > N


def _labkit(env: dict[str, str], *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env, **kw)


def test_cli_up_status_down_removes_containers_and_network(client, fresh_lab_dir):
    env = {**os.environ, "LABKIT_LAB_DIR": str(fresh_lab_dir)}
    env.pop("LABKIT_CONFIG", None)
    up = _labkit(env, "up", "--provider", "docker", "--services", "memcached")
    assert up.returncode == 0, up.stdout + up.stderr
    status = _labkit(env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert any(l.split()[:2] == ["memcached-0", "ok"] for l in status.stdout.splitlines()), \
        status.stdout
    assert len(_labelled(client, fresh_lab_dir)) == 2  # the container and the network
    down = _labkit(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "removed the lab's containers and network" in down.stdout, down.stdout
    assert _labelled(client, fresh_lab_dir) == []


def test_down_after_kill_9_of_the_starter_removes_what_it_made(client, fresh_lab_dir):
    env = {**os.environ, "LABKIT_LAB_DIR": str(fresh_lab_dir)}
    env.pop("LABKIT_CONFIG", None)
    starter = subprocess.Popen([sys.executable, "-m", "labkit.cli", "up", "--provider", "docker",
                                "--services", "postgres,memcached", "--followers", "0"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _containers(client, fresh_lab_dir):
            if starter.poll() is not None:
                pytest.fail(f"the starter ended before making a container:\n{starter.stdout.read()}")
            assert time.monotonic() < deadline, "no container came within 120 s"
            time.sleep(0.2)
    finally:
        starter.send_signal(signal.SIGKILL)
        starter.wait()
        starter.stdout.close()
    assert _labelled(client, fresh_lab_dir)  # left behind by the killed starter
    down = _labkit(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert _labelled(client, fresh_lab_dir) == []


def test_an_image_is_named_by_its_build_context_and_base(tmp_path, monkeypatch):
    """Reuse by content hash: the same files and base give the same tag, any edit a new one."""
    from labkit.providers import images
    (tmp_path / "memcached").mkdir()
    dockerfile = tmp_path / "memcached" / "Dockerfile"
    dockerfile.write_text("FROM debian:bookworm\n")
    monkeypatch.setattr(images, "template_dir", lambda service: tmp_path / service)
    first = images.tag("memcached", "sha256:base1")
    assert first == images.tag("memcached", "sha256:base1")
    assert first.startswith("labkit/memcached:")
    assert images.tag("memcached", "sha256:base2") != first  # a new base builds anew
    dockerfile.write_text("FROM debian:bookworm\nRUN true\n")
    assert images.tag("memcached", "sha256:base1") != first  # so does an edited Dockerfile
    (tmp_path / "memcached" / "extra.conf").write_text("x")
    assert len({first, images.tag("memcached", "sha256:base1")}) == 2


def test_the_app_image_holds_the_processes_packages_at_the_versions_here(monkeypatch):
    """What the app image copies: the closure of labkit's dependencies and its backend extra at
    the installed versions, without labkit (mounted) and the host-only packages; another
    version of any of them names another image."""
    import importlib.metadata as md
    from labkit.providers import app_image, images
    pins = app_image.pins()
    names = {p.split("==")[0].lower().replace("_", "-") for p in pins}
    assert {"django", "gunicorn", "celery", "kombu", "psycopg", "psycopg-binary",
            "cassandra-driver", "pymemcache", "meta-memcache", "psutil", "pydantic"} <= names
    assert not names & ({"labkit"} | app_image.HOST_ONLY), names
    assert f"Django=={md.version('django')}" in pins
    base = images.tag("app", "sha256:base1")
    monkeypatch.setattr(app_image, "pins", lambda: [*pins[:-1], pins[-1] + ".post1"])
    assert images.tag("app", "sha256:base1") != base


def test_the_app_launcher_runs_only_the_labs_python_processes_on_python_3_11(tmp_path,
                                                                              monkeypatch):
    """Refusals before any engine is asked, each naming the fix."""
    from labkit.providers import app_image
    launch = app_image.AppContainers(docker=None)
    with pytest.raises(ServiceError, match="only the lab's Python processes"):
        launch("memcached", ["/usr/bin/memcached"], cwd=tmp_path, log_path=tmp_path / "m.log",
               user=None)
    with pytest.raises(ServiceError, match="as the user that starts them"):
        launch("web", [sys.executable], cwd=tmp_path, log_path=tmp_path / "w.log", user="nobody")
    monkeypatch.setattr(app_image, "PYTHON", (3, 12))
    with pytest.raises(ServiceError, match="Run labkit on Python 3.11"):
        app_image.site_packages(tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_the_backend_asks_for_containers_only_where_the_provider_has_them(lab):
    """Natively the backend's processes are the host's; asking for containers there is an
    error that names the provider to use."""
    from labkit.backend.stack import Backend
    assert Backend(lab).launcher is None
    assert Backend(lab, containers=False).launcher is None
    with pytest.raises(ServiceError, match='provider="docker"'):
        Backend(lab, containers=True)



def test_notebook_00_runs_unchanged_on_docker(client):
    """The lab tour on docker: the same cells and asserts (the session's own lab is native).

    In a pytest of its own: the root conftest.py gives it a fresh lab directory, where the
    notebook's `lk.up()` starts a docker lab (LABKIT_PROVIDER), stopped and purged at its end.
    """
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "LABKIT_PROVIDER": "docker"}
    env.pop("LABKIT_LAB_DIR", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "notebooks/00_lab_tour.ipynb"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
