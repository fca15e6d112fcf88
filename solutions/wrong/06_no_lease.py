# WRONG 06_leases q1: plain cache-aside, every client that misses loads (the herd)
def read_with_lease(cache, key, load, ttl_s, lease_ttl_s=10, wait_s=0.01, max_wait_s=5):
    value = cache.get(key)
    if value is None:
        value = load()
        cache.set(key, value, expire=ttl_s)
    return value
