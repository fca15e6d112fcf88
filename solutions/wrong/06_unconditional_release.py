# WRONG 06_leases q1: a token placeholder and a cas refill, but a failed load deletes the key whoever holds it
def read_with_lease(cache, key, load, ttl_s, lease_ttl_s=10, wait_s=0.01, max_wait_s=5):
    deadline = time.monotonic() + max_wait_s
    token = LEASE + secrets.token_hex(8).encode()
    while True:
        value = cache.get(key)
        if value is not None and not value.startswith(LEASE):
            return value
        if value is None:
            if cache.add(key, token, expire=lease_ttl_s, noreply=False):
                try:
                    value = load()
                except BaseException:
                    cache.delete(key)
                    raise
                current, cas_id = cache.gets(key)
                if current == token:
                    cache.cas(key, value, cas_id, expire=ttl_s, noreply=False)
                return value
            continue
        if time.monotonic() > deadline:
            return load()
        time.sleep(wait_s)
