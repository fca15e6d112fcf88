# WRONG 07_replication_lag q2: routes by the received LSN (a follower that has the WAL but not applied it)
def read_your_writes(leader_conn, follower_conn, last_write_lsn, query, params=None, timeout_s=0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        if follower_conn.execute("SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn",
                                 (last_write_lsn,)).fetchone()[0]:
            return follower_conn.execute(query, params).fetchall(), "follower"
        if time.monotonic() > deadline:
            return leader_conn.execute(query, params).fetchall(), "leader"
        time.sleep(0.005)
