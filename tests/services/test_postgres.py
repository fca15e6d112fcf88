"""PostgreSQL leader/follower on the real servers: replication, injected lag, remote_apply."""

import time
import uuid

import pytest

from labkit import ServiceError
from labkit.services import heartbeat


def _table(lab, pg_db):
    name = f"t_{uuid.uuid4().hex[:8]}"
    lab.leader.execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, v text)", dbname=pg_db)
    return name


def test_write_on_leader_is_visible_on_follower(lab, pg_db):
    t = _table(lab, pg_db)
    (row_id,), = lab.leader.execute(f"INSERT INTO {t} (v) VALUES ('hello') RETURNING id",
                                    dbname=pg_db)
    lab.follower.wait_replayed()
    assert lab.follower.execute(f"SELECT v FROM {t} WHERE id = %s", (row_id,),
                                dbname=pg_db) == [("hello",)]
    assert lab.follower.execute("SELECT pg_is_in_recovery()") == [(True,)]


def test_follower_refuses_writes(lab, pg_db):
    import psycopg
    t = _table(lab, pg_db)
    lab.follower.wait_replayed()
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        lab.follower.execute(f"INSERT INTO {t} (v) VALUES ('x')", dbname=pg_db)


@pytest.mark.parametrize("delay_ms", [500, 1500])
def test_lag_right_after_a_single_write_is_the_delay(lab, pg_db, delay_ms):
    """The incident of issue 10: one write after a quiet spell read 0.4 ms at 500 ms of delay."""
    t = _table(lab, pg_db)
    follower = lab.follower
    follower.set_delay(delay_ms, settle=True)
    try:
        assert follower.delay_ms() == delay_ms
        (row,), = lab.leader.execute(f"INSERT INTO {t} (v) VALUES ('one') RETURNING id",
                                     dbname=pg_db)
        t0 = time.monotonic()
        lag = follower.lag()
        assert lag.bytes > 0
        # An upper bound, at most one heartbeat interval (plus a loaded machine's jitter) high.
        assert delay_ms * 0.9 <= lag.ms <= delay_ms + heartbeat.INTERVAL_MS + 250, lag
        with follower.connect(pg_db) as conn:
            assert conn.execute(f"SELECT 1 FROM {t} WHERE id = %s", (row,)).fetchone() is None
            follower.wait_replayed(timeout_s=delay_ms / 1000 + 10, conn=conn)
            visible_s = time.monotonic() - t0
            assert conn.execute(f"SELECT 1 FROM {t} WHERE id = %s", (row,)).fetchone()
        # The row took about what lag() said, minus the time lag() itself took.
        assert visible_s >= delay_ms / 1000 * 0.8
    finally:
        follower.set_delay(0)
    follower.wait_replayed()
    assert follower.lag().ms <= heartbeat.INTERVAL_MS + 250   # 0, or a beat in flight


def test_lag_grows_to_the_delay_after_it_is_set(lab):
    """A delay holds back commits made from then on: the visible state ages for delay_ms."""
    follower = lab.follower
    follower.set_delay(1000)
    try:
        assert follower.lag().ms < 600      # what was applied before the change stays applied
        time.sleep(1.2)
        assert follower.lag().ms >= 900
    finally:
        follower.set_delay(0)
    follower.wait_replayed()


def test_wait_replayed_times_out_with_the_fix_named(lab, pg_db):
    from labkit.services.postgres import ReplayTimeout, current_lsn, replayed
    follower = lab.follower
    follower.set_delay(2000)
    try:
        with lab.leader.connect(pg_db) as conn:
            conn.execute("CREATE TABLE waited (x int)")
            lsn = current_lsn(conn)
        with pytest.raises(ReplayTimeout, match="set_delay"):
            follower.wait_replayed(lsn, timeout_s=0.2)
        with follower.connect() as fconn:
            assert replayed(fconn, lsn) is False
            assert replayed(fconn, lsn, timeout_s=10) is True
    finally:
        follower.set_delay(0)
    with pytest.raises(ServiceError, match="for followers"):
        lab.leader.wait_replayed()


def test_heartbeat_is_a_member_of_the_postgres_service(lab):
    import json
    pg = lab.postgres
    assert pg.heartbeat in pg.members() and pg.heartbeat.running() and pg.heartbeat.ready()
    assert pg.heartbeat.age_ms() < 1000
    rows = {r["name"]: r for r in lab.health()}
    assert rows["postgres-heartbeat"]["ok"]
    assert "ms" in rows["postgres-follower1"]["lag"]
    state = json.loads(lab.config.state_file.read_text())
    assert state["services"]["postgres"]["heartbeat"]["procs"][0]["pid"] == pg.heartbeat.procs[0].pid
    # Stopped, the lag in ms cannot be read (it is not made up); the next `up` restarts it.
    pg.heartbeat.procs[0].stop()
    assert not pg.running()
    time.sleep(heartbeat.STALE_MS / 1000 + 0.3)
    with pytest.raises(ServiceError, match="heartbeat is not being written.*labkit up"):
        lab.follower.lag()
    import labkit as lk
    again = lk.up(lab.config)
    assert again.postgres.heartbeat.running() and again.postgres.heartbeat.age_ms() < 1000
    assert again.follower.lag().ms <= heartbeat.INTERVAL_MS + 250
    lab.postgres.restore(json.loads(lab.config.state_file.read_text())["services"]["postgres"])
    assert lab.postgres.running()


def test_heartbeat_does_not_wait_for_a_delayed_synchronous_standby(lab, pg_db):
    follower = lab.follower
    lab.postgres.set_synchronous_commit("remote_apply")
    follower.set_delay(1500)
    try:
        ages = []
        for _ in range(10):
            ages.append(lab.postgres.heartbeat.age_ms())
            time.sleep(0.1)
        assert max(ages) < 1000, ages    # beats keep coming every interval, not every 1.5 s
    finally:
        lab.postgres.set_synchronous_commit("local")
        follower.set_delay(0)
    follower.wait_replayed()


def test_logical_slots_of_other_databases_skip_the_heartbeat(lab, pg_db):
    slot = f"hb_{pg_db}"
    lab.leader.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')",
                       (slot,), dbname=pg_db)
    try:
        time.sleep(0.5)   # several beats
        assert lab.leader.execute("SELECT count(*) FROM pg_logical_slot_peek_changes("
                                  "%s, NULL, NULL)", (slot,), dbname=pg_db) == [(0,)]
    finally:
        lab.leader.execute("SELECT pg_drop_replication_slot(%s)", (slot,), dbname=pg_db)


def test_drop_database_drops_its_logical_slots(lab):
    name = lab.postgres.create_database(f"t_{uuid.uuid4().hex[:10]}")
    lab.leader.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')",
                       (f"slot_{name}",), dbname=name)
    lab.postgres.drop_database(name)
    assert lab.leader.execute("SELECT 1 FROM pg_replication_slots WHERE database = %s",
                              (name,)) == []
    assert lab.leader.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)) == []


def test_remote_apply_gives_read_your_writes(lab, pg_db):
    t = _table(lab, pg_db)
    follower = lab.follower
    follower.set_delay(300)
    try:
        # Without it: the anomaly. A read right after the commit misses the write.
        lab.postgres.set_synchronous_commit("local")
        (a,), = lab.leader.execute(f"INSERT INTO {t} (v) VALUES ('a') RETURNING id", dbname=pg_db)
        assert follower.execute(f"SELECT 1 FROM {t} WHERE id = %s", (a,), dbname=pg_db) == []
        # With remote_apply the commit returns only once the follower has applied it.
        lab.postgres.set_synchronous_commit("remote_apply")
        assert lab.postgres.synchronous_commit() == "remote_apply"
        t0 = time.monotonic()
        (b,), = lab.leader.execute(f"INSERT INTO {t} (v) VALUES ('b') RETURNING id", dbname=pg_db)
        commit_s = time.monotonic() - t0
        assert follower.execute(f"SELECT v FROM {t} WHERE id = %s", (b,), dbname=pg_db) == [("b",)]
        assert commit_s >= 0.25  # the price: the commit waited for the follower's replay delay
    finally:
        lab.postgres.set_synchronous_commit("local")
        follower.set_delay(0)


def test_password_is_required_on_tcp(lab):
    import psycopg
    bad = lab.leader.dsn().replace(lab.leader.password, "wrong-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bad, connect_timeout=3)
    nopw = f"host={lab.leader.host} port={lab.leader.port} user=postgres dbname=postgres"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(nopw, connect_timeout=3, password="")


def test_bad_controls_are_refused(lab):
    with pytest.raises(ValueError, match="negative"):
        lab.follower.set_delay(-5)
    with pytest.raises(ServiceError, match="for followers"):
        lab.leader.lag()
    with pytest.raises(ValueError, match="choose one of off, local, remote_apply"):
        lab.postgres.set_synchronous_commit("eventually")


def test_configured_synchronous_commit_applies_at_start(fresh_lab_dir):
    import labkit as lk
    lab = lk.up(lab_dir=fresh_lab_dir, services=("postgres",), followers=1,
                synchronous_commit="remote_apply")
    assert lab.postgres.synchronous_commit() == "remote_apply"
    names = lab.leader.execute("SHOW synchronous_standby_names")[0][0]
    assert "follower1" in names


def test_create_database_is_on_every_follower_when_it_returns(lab):
    import uuid
    name = lab.postgres.create_database(f"t_{uuid.uuid4().hex[:10]}")
    try:
        for server in lab.postgres.servers:  # no wait needed: create_database waited
            assert server.execute("SELECT current_database()", dbname=name) == [(name,)]
        lab.leader.execute("CREATE TABLE kept (x int)", dbname=name)
        lab.postgres.create_database(name)                 # kept as it is
        assert lab.leader.execute("SELECT to_regclass('kept') IS NOT NULL", dbname=name) == [(True,)]
        lab.postgres.create_database(name, replace=True)   # dropped and made anew
        assert lab.leader.execute("SELECT to_regclass('kept') IS NULL", dbname=name) == [(True,)]
    finally:
        lab.postgres.drop_database(name)
    assert lab.leader.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)) == []
