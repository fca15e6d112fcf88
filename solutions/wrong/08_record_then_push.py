# WRONG 08_async_tasks q1: records first and pushes only when the record is new (at most once: a kill between loses it)
def notify(conn, liker_id, media_id, owner_id):
    key = tasks.dedup_key(liker_id, media_id)
    new = conn.execute("INSERT INTO notifications (dedup_key, owner_id, liker_id, media_id, body) "
                       "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
                       (key, owner_id, liker_id, media_id,
                        f"user {liker_id} liked your photo {media_id}")).fetchone()
    if new:
        tasks.push(conn, owner_id, liker_id, media_id, idempotency_key=key)
