"""Cassandra 5.0 on real JVMs: tunable consistency, hints, regions, clean stop, clear errors.

The ring is started once for TestRing, through `labkit up --cassandra ring` as a student
would, and reused by its tests (each in its own keyspace); the regions topology once for
TestRegions. Jars come from the lab's cache directory (LabConfig.cache_dir), resolved on
first use.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest

import labkit as lk
from labkit.config import LabConfig
from labkit._proc import listening, service_account
from labkit.services.cassandra import (
    DEFAULT_SUPERUSER,
    Cassandra,
    CassandraCluster,
    CassandraCredentials,
    CassandraError,
    CassandraNode,
    DDL_TIMEOUT_S,
    driver_cluster,
    resolve_jars,
    wait_for_schema,
)

CACHE_DIR = LabConfig.load().cache_dir  # where `labkit up --cassandra` resolves the jars too
# As root the JVMs run under the lab's unprivileged account, as `labkit up` runs them.
USER = service_account("labkit")


def _lab_dir(name: str) -> Path:
    # Not tmp_path: pytest's base dir is mode 0700, and as root the servers run as `labkit`.
    d = Path(tempfile.mkdtemp(prefix=f"labkit-{name}-", dir="/tmp"))
    d.chmod(0o755)
    return d


def _cleanup(cas: Cassandra, lab_dir: Path) -> None:
    try:
        cas.stop()
    finally:
        shutil.rmtree(lab_dir, ignore_errors=True)


def _wait_for(check: Callable[[], object], timeout_s: float, what: str, poll_s: float = 1.0):
    """Poll ``check`` until it returns a truthy value (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except Exception as e:  # the cluster is still settling; keep the last reason
            last = e
        time.sleep(poll_s)
    raise AssertionError(f"{what} did not happen within {timeout_s} s (last: {last!r})")


# ---------------------------------------------------------------------------
# ring: three nodes, RF=3
# ---------------------------------------------------------------------------


def _labkit(lab_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit.cli", "--lab-dir", str(lab_dir), *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="class")
def ring() -> Iterator[CassandraCluster]:
    """The ring as a student gets it: `labkit up --cassandra ring`, then `labkit status`."""
    lab_dir = _lab_dir("ring")
    try:
        up = _labkit(lab_dir, "up", "--services", "cassandra", "--cassandra", "ring")
        assert up.returncode == 0, up.stdout + up.stderr
        status = _labkit(lab_dir, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        healthy = [l for l in status.stdout.splitlines() if l.startswith("cassandra-us-node")]
        assert len(healthy) == 3 and all(" ok " in l and "5.0." in l for l in healthy), status.stdout
        lab = lk.attach(lab_dir=lab_dir)
        yield lab.cassandra.region("us")
        _down_leaves_no_node(lab_dir, lab.cassandra.nodes)
    finally:
        lk.down(lab_dir=lab_dir, purge=True)
        shutil.rmtree(lab_dir, ignore_errors=True)


def _down_leaves_no_node(lab_dir: Path, nodes: list[CassandraNode]) -> None:
    """`labkit down` stops every node: no JVM left, nothing listening on their ports."""
    pids = [n.pid for n in nodes]
    ports = [(n.host, p) for n in nodes for p in (n.native_port, n.storage_port)]
    down = _labkit(lab_dir, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [p for p in pids if p and psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not [hp for hp in ports if listening(*hp)]


def _make_keyspace(ring: CassandraCluster, name: str):
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    session = ring.connect()
    session.execute(
        f"CREATE KEYSPACE {name} WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'us': 3}"
    )
    # No speculative retry and no read repair: a read at ONE through node X
    # reports exactly what X's replica holds.
    session.execute(
        f"CREATE TABLE {name}.feed (user_id int PRIMARY KEY, v text) "
        "WITH speculative_retry = 'NONE' AND read_repair = 'NONE'"
    )
    wait_for_schema(session)

    def write(user_id: int, v: str, cl) -> None:
        session.execute(
            SimpleStatement(f"INSERT INTO {name}.feed (user_id, v) VALUES (%s, %s)", consistency_level=cl),
            (user_id, v),
        )

    return session, write, ConsistencyLevel, SimpleStatement


def _read_alone(ring: CassandraCluster, node: CassandraNode, keyspace: str, user_id: int, cl):
    """Read through ``node`` alone (WhiteListRoundRobinPolicy) at ``cl``."""
    from cassandra.query import SimpleStatement

    session = ring.connect(only=node)
    try:
        row = session.execute(
            SimpleStatement(f"SELECT v FROM {keyspace}.feed WHERE user_id = %s", consistency_level=cl),
            (user_id,),
        ).one()
        return row.v if row else None
    finally:
        session.cluster.shutdown()


def _restart(node: CassandraNode, peers: int) -> None:
    node.expect_peers = peers
    node.start()  # returns once the node answers CQL and sees its peers


def _login_refused(points: list[tuple[str, int]], creds: CassandraCredentials) -> bool:
    """True when the cluster refuses ``creds`` (bad credentials), False when the login works."""
    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable

    cluster = driver_cluster(points, credentials=creds)
    try:
        cluster.connect().execute("SELECT release_version FROM system.local")
        return False
    except NoHostAvailable as e:
        assert e.errors and all(isinstance(x, AuthenticationFailed) for x in e.errors.values()), e
        return all("incorrect" in str(x) for x in e.errors.values())
    finally:
        cluster.shutdown()


def _only_the_lab_superuser(cluster: CassandraCluster) -> None:
    """The lab's role is the only one, the default superuser and a wrong password are refused."""
    session = cluster.connect()
    roles = {(r.role, r.is_superuser, r.can_login)
             for r in session.execute("SELECT role, is_superuser, can_login FROM system_auth.roles")}
    assert roles == {(cluster.credentials.user, True, True)}
    replication = session.execute("SELECT replication FROM system_schema.keyspaces "
                                  "WHERE keyspace_name = 'system_auth'").one().replication
    assert dict(replication) == {"class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
                           cluster.dc: str(len(cluster.nodes))}
    wrong = dataclasses.replace(cluster.credentials, password="not-the-password")
    for creds in (DEFAULT_SUPERUSER, wrong):
        # A node may still hold a just-dropped role in its credentials cache (2 s).
        _wait_for(lambda: _login_refused(cluster.contact_points, creds), timeout_s=30,
                  what=f"a login as {creds.user!r} with a wrong or default password refused")


@pytest.mark.cassandra
class TestRing:
    def test_read_at_one_returns_stale_value_without_hints(self, ring: CassandraCluster) -> None:
        a, b, c = ring.nodes
        session, write, CL, SimpleStatement = _make_keyspace(ring, "stale_one")
        write(42, "old", CL.ALL)
        for n in ring.nodes:
            n.nodetool("disablehandoff")
        try:
            c.stop()
            write(42, "new", CL.ONE)
            _restart(c, peers=2)
            c_alone = ring.connect(only=c)
            a.pause()
            b.pause()
            try:
                # C is the coordinator and, with the others frozen, the only replica that answers.
                stmt = SimpleStatement("SELECT v FROM stale_one.feed WHERE user_id = 42", consistency_level=CL.ONE)
                assert c_alone.execute(stmt).one().v == "old"
            finally:
                a.resume()
                b.resume()
            # QUORUM needs two replicas, and the newest timestamp wins.
            assert _wait_for(
                lambda: _read_alone(ring, c, "stale_one", 42, CL.QUORUM) == "new",
                timeout_s=60,
                what="a QUORUM read through C returning the new value",
            )
        finally:
            for n in ring.nodes:
                if n.running():
                    n.nodetool("enablehandoff")

    def test_hints_bring_the_restarted_replica_up_to_date(self, ring: CassandraCluster) -> None:
        session, write, CL, _ = _make_keyspace(ring, "hinted")
        for n in ring.nodes:
            n.nodetool("enablehandoff")
        c = ring.nodes[2]
        write(7, "old", CL.ALL)
        c.stop()
        write(7, "new", CL.ONE)
        _restart(c, peers=2)

        def converged() -> bool:
            return all(_read_alone(ring, n, "hinted", 7, CL.ONE) == "new" for n in ring.nodes)

        _wait_for(converged, timeout_s=120, what="all three replicas holding the new value")

    def test_quorum_writes_succeed_with_one_node_down(self, ring: CassandraCluster) -> None:
        session, write, CL, SimpleStatement = _make_keyspace(ring, "quorum_down")
        b = ring.nodes[1]
        b.stop()
        try:
            for user_id in range(20):
                write(user_id, f"like-{user_id}", CL.QUORUM)
            rows = session.execute(
                SimpleStatement("SELECT count(*) FROM quorum_down.feed", consistency_level=CL.QUORUM)
            ).one()
            assert rows[0] == 20
        finally:
            _restart(b, peers=2)

    def test_only_the_lab_superuser_logs_in(self, ring: CassandraCluster) -> None:
        _only_the_lab_superuser(ring)
        # Reattached from state.json (the fixture's lk.attach): the password is not in the state
        # file but in the lab's secrets, where the reattached handle found it.
        lab_dir = ring.cluster_dir.parents[1]
        assert ring.credentials.password not in (lab_dir / "state.json").read_text()
        secrets = json.loads((lab_dir / "secrets.json").read_text())
        assert secrets["cassandra_password"] == ring.credentials.password

    def test_login_works_with_two_nodes_down(self, ring: CassandraCluster) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.query import SimpleStatement

        a, b, c = ring.nodes
        c.stop()
        b.pause()
        try:
            # Past node A's credentials and roles caches (2 s each): the login reads system_auth.
            time.sleep(3)
            cluster = driver_cluster([a.contact_point], only=a.host, credentials=ring.credentials)
            try:
                stmt = SimpleStatement("SELECT release_version FROM system.local",
                                       consistency_level=ConsistencyLevel.ONE)
                assert cluster.connect().execute(stmt).one().release_version.startswith("5.0.")
            finally:
                cluster.shutdown()
        finally:
            b.resume()
            _restart(c, peers=2)

    def test_schema_agreement_waits_for_a_frozen_node_and_fails_with_the_fix(
            self, ring: CassandraCluster) -> None:
        a, b, c = ring.nodes
        session = ring.connect(only=a)
        try:
            session.execute("CREATE KEYSPACE IF NOT EXISTS agree WITH replication = "
                            "{'class': 'NetworkTopologyStrategy', 'us': 3}", timeout=DDL_TIMEOUT_S)
            wait_for_schema(session)
            c.pause()
            try:
                # A schema change node C cannot apply while frozen: A's view of C's version
                # stays behind, so agreement is not reached, and the wait says so.
                session.execute("CREATE TABLE agree.t (k int PRIMARY KEY)", timeout=DDL_TIMEOUT_S)
                with pytest.raises(lk.ServiceError, match="schema agreement.*not ready after"):
                    wait_for_schema(session, timeout_s=3)
            finally:
                c.resume()
            wait_for_schema(session)  # C catches up once it runs again
            c_alone = ring.connect(only=c)
            try:
                assert c_alone.execute("SELECT k FROM agree.t").all() == []
            finally:
                c_alone.cluster.shutdown()
        finally:
            session.execute("DROP KEYSPACE IF EXISTS agree", timeout=DDL_TIMEOUT_S)
            session.cluster.shutdown()

    def test_jmx_needs_the_lab_login(self, ring: CassandraCluster) -> None:
        a = ring.nodes[0]
        refused = subprocess.run(a.nodetool_command("status", login=False), capture_output=True,
                                 text=True, timeout=300)
        assert refused.returncode != 0
        assert "Credentials required" in refused.stdout + refused.stderr
        assert "UN  " in a.nodetool("status")
        # The password travels in a file, not on nodetool's command line (visible to `ps`).
        assert a.credentials.jmx_password not in " ".join(a.nodetool_command("status"))
        owner = USER or pwd.getpwuid(os.geteuid()).pw_name
        for name in ("jmxremote.password", "jmxremote.access"):
            st = (a.workdir / "conf" / name).stat()
            assert (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name) == (0o400, owner)

    def test_cqlsh_logs_in_with_what_labkit_env_prints(self, ring: CassandraCluster,
                                                        tmp_path: Path) -> None:
        lab_dir = ring.cluster_dir.parents[1]
        cqlsh = Path(sys.executable).parent / "cqlsh"
        env_cmd = f"{sys.executable} -m labkit.cli --lab-dir {lab_dir} env"
        query = "SELECT cluster_name FROM system.local"

        def run(credentials: str) -> subprocess.CompletedProcess:
            # Exactly what `labkit env` prints: CQLSH_HOST/CQLSH_PORT and the credentials file.
            script = f'eval "$({env_cmd})" && {cqlsh} --credentials "{credentials}" -e "{query}"'
            return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                  timeout=120, env={k: v for k, v in os.environ.items()
                                                    if not k.startswith("CQLSH_")})

        ok = run("$LABKIT_CQLSH_CREDENTIALS")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "labkit-us" in ok.stdout
        wrong = tmp_path / "wrong-credentials"
        wrong.write_text(f"[plain_text_auth]\nusername = {ring.credentials.user}\n"
                         "password = not-the-password\n")
        wrong.chmod(0o600)
        refused = run(str(wrong))
        assert refused.returncode != 0
        assert "are incorrect" in refused.stdout + refused.stderr


# ---------------------------------------------------------------------------
# regions: two independent clusters
# ---------------------------------------------------------------------------


@pytest.fixture(scope="class")
def regions() -> Iterator[Cassandra]:
    lab_dir = _lab_dir("regions")
    cas = Cassandra(lab_dir, "regions", cache_dir=CACHE_DIR, user=USER)
    try:
        cas.start()
        yield cas
    finally:
        _cleanup(cas, lab_dir)


@pytest.mark.cassandra
class TestRegions:
    def test_regions_never_see_each_other(self, regions: Cassandra) -> None:
        us = regions.connect(region="us")
        eu = regions.connect(region="eu")
        for session, region in ((us, "us"), (eu, "eu")):
            session.execute(
                "CREATE KEYSPACE activity WITH replication = "
                f"{{'class': 'NetworkTopologyStrategy', '{region}': 1}}"
            )
            session.execute("CREATE TABLE activity.log (user_id int PRIMARY KEY, region text)")
            session.execute("INSERT INTO activity.log (user_id, region) VALUES (%s, %s)", (1, region))
        us.execute("INSERT INTO activity.log (user_id, region) VALUES (2, 'us')")

        assert [r.region for r in us.execute("SELECT region FROM activity.log")] == ["us", "us"]
        assert [r.region for r in eu.execute("SELECT region FROM activity.log")] == ["eu"]
        # No gossip between them: each cluster knows no peer and has its own name and dc.
        for session, region in ((us, "us"), (eu, "eu")):
            local = session.execute("SELECT cluster_name, data_center FROM system.local").one()
            assert (local.cluster_name, local.data_center) == (f"labkit-{region}", region)
            assert list(session.execute("SELECT peer FROM system.peers")) == []

    def test_each_region_has_the_lab_superuser_only(self, regions: Cassandra) -> None:
        for region in ("us", "eu"):
            _only_the_lab_superuser(regions.region(region))


# ---------------------------------------------------------------------------
# topologies side by side in one lab (notebooks 09, 10 and 12 share a lab in CI)
# ---------------------------------------------------------------------------


def _one_row_keyspace(session, keyspace: str, replication: dict, value: str) -> None:
    # Schema changes wait for agreement across the ring: with five JVMs on two loaded cores
    # that took longer than the driver's 10 s once (services.cassandra.DDL_TIMEOUT_S).
    session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = {replication!r}",
                    timeout=DDL_TIMEOUT_S)
    session.execute(f"CREATE TABLE {keyspace}.t (k int PRIMARY KEY, v text)", timeout=DDL_TIMEOUT_S)
    wait_for_schema(session)
    session.execute(f"INSERT INTO {keyspace}.t (k, v) VALUES (1, %s)", (value,))


def _values(session, keyspace: str) -> list[str]:
    from cassandra import InvalidRequest
    try:
        return [r.v for r in session.execute(f"SELECT v FROM {keyspace}.t")]
    except InvalidRequest:  # no such keyspace on this cluster
        return []


@pytest.mark.cassandra
def test_ring_and_regions_run_side_by_side_each_with_its_own_data(ring_lab, regions_lab) -> None:
    """The session's lab, as notebooks 09, 10 and 12 share it in CI: the ring and the regions.

    (Each topology's own `up` and `down` are tested above, on labs of their own.)
    """
    ring, regions = ring_lab.cassandra, regions_lab.cassandra
    lab_dir = ring_lab.config.lab_dir
    assert regions_lab.config.lab_dir == lab_dir
    assert (ring.topology, regions.topology) == ("ring", "regions")
    assert {"ring", "regions"} <= set(regions_lab.cassandra_topologies)
    assert ring.running() and regions.running()  # the ring kept running beside the regions
    assert [n.host for n in ring.nodes] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    endpoints = [(n.host, port) for cas in (ring, regions) for n in cas.nodes
                 for port in (n.native_port, n.storage_port)]
    assert len(set(endpoints)) == len(endpoints)
    assert not {n.host for n in ring.nodes} & {n.host for n in regions.nodes}

    # Each cluster answers with its own data, and knows nothing of the others'.
    sessions = {"ring": ring.connect(), "us": regions.connect(region="us"),
                "eu": regions.connect(region="eu")}
    tag = uuid.uuid4().hex[:8]
    try:
        _one_row_keyspace(sessions["ring"], f"side_ring_{tag}",
                          {"class": "NetworkTopologyStrategy", "us": 3}, "ring")
        for region in ("us", "eu"):
            _one_row_keyspace(sessions[region], f"side_{region}_{tag}",
                              {"class": "NetworkTopologyStrategy", region: 1}, region)
        for name, session in sessions.items():
            assert [(k, _values(session, f"side_{k}_{tag}")) for k in sessions] == [
                (k, [k] if k == name else []) for k in sessions], name
    finally:
        for name, session in sessions.items():
            session.execute(f"DROP KEYSPACE IF EXISTS side_{name}_{tag}", timeout=DDL_TIMEOUT_S)
    # Gossip joined the ring's nodes, and nothing else: node 1 knows nodes 2 and 3 only.
    first = ring.connect(only=ring.nodes[0])
    peers = {str(r.peer) for r in first.execute("SELECT peer FROM system.peers")}
    assert peers == {"127.0.0.2", "127.0.0.3"}

    # Reattached without naming a topology, the lab cannot guess which one is meant.
    # (Named in the order they started: the session's tests may start either first.)
    with pytest.raises(lk.ServiceError,
                       match=r"several Cassandra topologies \((ring, regions|regions, ring)\)"):
        lk.attach(lab_dir=lab_dir).cassandra
    again = lk.attach(lab_dir=lab_dir, cassandra="ring").cassandra
    assert again.contact_points == ring.contact_points
    status = _labkit(lab_dir, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.splitlines()
    for group, n in (("cassandra ring:", 3), ("cassandra regions:", 2)):
        rows = lines[lines.index(group) + 1:][:n]
        assert all(r.startswith("cassandra-") and " ok " in r for r in rows), status.stdout


# ---------------------------------------------------------------------------
# stop and reattach
# ---------------------------------------------------------------------------


@pytest.mark.cassandra
def test_stop_from_another_handle_leaves_no_jvm_and_no_port() -> None:
    lab_dir = _lab_dir("stop")
    cas = Cassandra(lab_dir, "single", cache_dir=CACHE_DIR, user=USER)
    try:
        cas.start()
        node = cas.nodes[0]
        pid = node.pid
        ports = [(node.host, node.native_port), (node.host, node.storage_port), (node.jmx_host, node.jmx_port)]
        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert set(ports) <= listening
        assert all(ip.startswith("127.") for ip, _ in listening)

        # A lab reattaches from its state file in another process: JSON round trip. The state
        # holds no password; the credentials come from the lab's secrets.
        state = json.dumps(cas.to_state())
        assert cas.credentials.password not in state and cas.credentials.jmx_password not in state
        again = Cassandra.from_state(json.loads(state), credentials=cas.credentials)
        assert again.contact_points == cas.contact_points and again.running() and again.ready()
        again.stop()

        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        leftover = [
            p.pid for p in psutil.process_iter(["cmdline"])
            if any(str(lab_dir) in part for part in (p.info["cmdline"] or []))
        ]
        assert leftover == []
        for host, port in ports:
            with socket.socket() as s:
                assert s.connect_ex((host, port)) != 0, f"{host}:{port} still listening"

        # Its data keeps the password it was made with: another one is refused with the fix,
        # without waiting for the start timeout.
        other = Cassandra.from_state(json.loads(state), credentials=CassandraCredentials())
        with pytest.raises(CassandraError, match=r"refuses the lab's Cassandra password.*--purge"):
            other.start()
        assert not other.nodes[0].running()
    finally:
        _cleanup(cas, lab_dir)


# ---------------------------------------------------------------------------
# bad input: each error names the fix
# ---------------------------------------------------------------------------


def test_unknown_topology_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"single, ring, regions"):
        Cassandra(tmp_path, "galaxy")


def _fake_java(tmp_path: Path, version: str) -> Path:
    java = tmp_path / "java"
    java.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2021-04-20\' >&2\n')
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    return java


@pytest.mark.parametrize("version", ["11.0.11", "1.8.0_292"])
def test_old_java_is_refused_with_the_install_command(tmp_path: Path, version: str) -> None:
    cas = Cassandra(tmp_path / "lab", cache_dir=tmp_path / "cache", java=str(_fake_java(tmp_path, version)))
    with pytest.raises(CassandraError, match=r"openjdk-17-jre-headless.*labkit doctor"):
        cas.start()


def test_missing_java_is_refused_with_the_install_command(tmp_path: Path) -> None:
    cas = Cassandra(tmp_path / "lab", cache_dir=tmp_path / "cache", java=str(tmp_path / "no-such-java"))
    with pytest.raises(CassandraError, match=r"Java not found.*apt-get install openjdk-17-jre-headless"):
        cas.start()


def test_missing_maven_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(CassandraError, match=r"apt-get install maven"):
        resolve_jars(tmp_path / "cache", mvn=str(tmp_path / "no-such-mvn"))


def test_failed_resolution_shows_the_fix_and_the_mvn_output(tmp_path: Path) -> None:
    # A mirror nobody listens on, and an empty local repository: nothing can resolve.
    settings = tmp_path / "settings.xml"
    settings.write_text(
        "<settings><mirrors><mirror><id>nowhere</id><mirrorOf>*</mirrorOf>"
        "<url>http://127.0.0.1:9/maven2</url></mirror></mirrors></settings>"
    )
    with pytest.raises(CassandraError) as info:
        resolve_jars(tmp_path / "cache", maven_settings=settings, maven_repo_local=tmp_path / "m2")
    message = str(info.value)
    assert "apt-get install maven" in message
    assert "mvn output" in message and "127.0.0.1:9" in message
    assert list((tmp_path / "cache").glob("cassandra/*/.resolved")) == []
