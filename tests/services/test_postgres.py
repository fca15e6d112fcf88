"""PostgreSQL leader/follower on the real servers: replication, injected lag, remote_apply."""

import time
import uuid

import pytest


def _table(lab, pg_db):
    name = f"t_{uuid.uuid4().hex[:8]}"
    lab.leader.execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, v text)", dbname=pg_db)
    return name


def _wait_visible(follower, sql, params, dbname, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if follower.execute(sql, params, dbname=dbname):
            return True
        time.sleep(0.02)
    return False


def test_write_on_leader_is_visible_on_follower(lab, pg_db):
    t = _table(lab, pg_db)
    (row_id,), = lab.leader.execute(f"INSERT INTO {t} (v) VALUES ('hello') RETURNING id",
                                    dbname=pg_db)
    assert _wait_visible(lab.follower, f"SELECT v FROM {t} WHERE id = %s", (row_id,), pg_db)
    assert lab.follower.execute(f"SELECT v FROM {t} WHERE id = %s", (row_id,),
                                dbname=pg_db) == [("hello",)]
    assert lab.follower.execute("SELECT pg_is_in_recovery()") == [(True,)]


def test_follower_refuses_writes(lab, pg_db):
    import psycopg
    t = _table(lab, pg_db)
    assert _wait_visible(lab.follower, "SELECT 1 FROM pg_class WHERE relname = %s", (t,), pg_db)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        lab.follower.execute(f"INSERT INTO {t} (v) VALUES ('x')", dbname=pg_db)


@pytest.mark.parametrize("delay_ms", [500, 1500])
def test_injected_delay_shows_as_lag(lab, pg_db, delay_ms):
    t = _table(lab, pg_db)
    follower = lab.follower
    follower.set_delay(delay_ms)
    try:
        assert follower.delay_ms() == delay_ms
        # A steady trickle of commits for longer than the delay, as a real workload makes.
        end = time.monotonic() + delay_ms / 1000 + 1.0
        with lab.leader.connect(pg_db) as conn:
            while time.monotonic() < end:
                conn.execute(f"INSERT INTO {t} (v) VALUES ('tick')")
                time.sleep(0.02)
        lag = follower.lag()
        assert lag.bytes > 0
        assert delay_ms * 0.8 <= lag.ms <= delay_ms * 1.25 + 150, lag
        # The last commit is not on the follower yet, and arrives after about the delay.
        (last,), = lab.leader.execute(f"SELECT max(id) FROM {t}", dbname=pg_db)
        assert not follower.execute(f"SELECT 1 FROM {t} WHERE id = %s", (last,), dbname=pg_db)
        assert _wait_visible(follower, f"SELECT 1 FROM {t} WHERE id = %s", (last,), pg_db)
    finally:
        follower.set_delay(0)
    deadline = time.monotonic() + 10
    while follower.lag().bytes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert follower.lag().bytes == 0


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
    from labkit import ServiceError
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
