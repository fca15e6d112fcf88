# WRONG 02_web_tier q1: every statement gets the whole budget (the budget is not spent across the list)
def run_within_budget(conn, statements, budget_s):
    results = []
    for statement in statements:
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(int(budget_s * 1000)),))
        try:
            cur = conn.execute(statement)
        except psycopg.errors.QueryCanceled as e:
            raise BudgetExceeded(str(e)) from e
        results.append(cur.fetchall() if cur.description else [])
    return results
