# WRONG 04_invalidation q2: deletes each change's keys at once, before its transaction commits
def apply_changes(rows, cache, prefix):
    done_lsn = ""
    for lsn, data in rows:
        if data.startswith("COMMIT"):
            done_lsn = lsn
        elif not data.startswith("BEGIN"):
            keys = keys_for_change(data, prefix)
            if keys:
                cache.delete_many(keys)
    return done_lsn
