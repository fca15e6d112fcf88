# WRONG 02_web_tier q1: the clock is checked in Python between statements; a slow statement runs on
def run_within_budget(conn, statements, budget_s):
    deadline = time.monotonic() + budget_s
    results = []
    for statement in statements:
        if time.monotonic() > deadline:
            raise BudgetExceeded("budget spent")
        cur = conn.execute(statement)
        results.append(cur.fetchall() if cur.description else [])
    if time.monotonic() > deadline:
        raise BudgetExceeded("budget spent")
    return results
