# WRONG 07_replication_lag q1: waits for the received LSN, not the replayed one
import time

def wait_for_lsn(follower_conn, lsn, timeout_s):
    deadline = time.monotonic() + timeout_s
    while True:
        if follower_conn.execute("SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
