# WRONG 02_web_tier q2: puts statement_timeout back only when the statements finished (not after a cut)
def budgeted(conn, statements, budget_s):
    before = conn.execute("SHOW statement_timeout").fetchone()[0]
    results = run_within_budget(conn, statements, budget_s)
    conn.execute("SELECT set_config('statement_timeout', %s, false)", (before,))
    return results
