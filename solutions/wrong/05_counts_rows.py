# WRONG 05_thundering_herd q2: counts pg_stat_statements rows (distinct statements), not their calls
def queries(conn, pattern):
    return conn.execute(
        "SELECT count(*) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
        "WHERE d.datname = current_database() AND s.query ILIKE %s", (f"%{pattern}%",)).fetchone()[0]
