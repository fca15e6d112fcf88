# WRONG 06_leases q1: a "lease" in a separate key and a plain set for the refill (no token, no cas)
def read_with_lease(cache, key, load, ttl_s, lease_ttl_s=10, wait_s=0.01, max_wait_s=5):
    deadline = time.monotonic() + max_wait_s
    while True:
        value = cache.get(key)
        if value is not None:
            return value
        if cache.add(key + ":lease", b"1", expire=lease_ttl_s, noreply=False):
            try:
                value = load()
                cache.set(key, value, expire=ttl_s)
                return value
            finally:
                cache.delete(key + ":lease")
        if time.monotonic() > deadline:
            return load()
        time.sleep(wait_s)
