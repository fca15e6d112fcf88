# WRONG 05_thundering_herd q1: the clients read one after the other (no herd: the first refills, the rest hit)
def herd(cache, key, read, clients):
    cache.delete(key)
    return [read() for _ in range(clients)]
