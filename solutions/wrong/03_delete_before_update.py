# WRONG 03_cache_aside q2: deletes the cached count before the write (a reader refills the old count)
def record_like(conn, cache, prefix, user_id, media_id):
    cache.delete(f"{prefix}:likes:{media_id}")
    likes.like(conn, user_id, media_id)
