# WRONG 08_async_tasks q1: pushes without an idempotency key (a redelivered task notifies twice)
def notify(conn, liker_id, media_id, owner_id):
    key = tasks.dedup_key(liker_id, media_id)
    tasks.push(conn, owner_id, liker_id, media_id)
    conn.execute("INSERT INTO notifications (dedup_key, owner_id, liker_id, media_id, body) "
                 "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (dedup_key) DO NOTHING",
                 (key, owner_id, liker_id, media_id, f"user {liker_id} liked your photo {media_id}"))
