# WRONG 06_leases q2: deletes a cached value but leaves a lease placeholder (a refill in progress) alone
def invalidate(cache, key):
    value = cache.get(key)
    if value is not None and not value.startswith(LEASE):
        cache.delete(key, noreply=False)
