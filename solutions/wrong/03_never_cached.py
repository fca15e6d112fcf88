# WRONG 03_cache_aside q1: fills the cache but always reads the database (a hit is never served)
def like_count(conn, cache, prefix, media_id, ttl_s=60):
    try:
        count = likes.count(conn, media_id)
    except schema.NotFound:
        count = 0
    cache.set(f"{prefix}:likes:{media_id}", str(count), expire=ttl_s)
    return count
