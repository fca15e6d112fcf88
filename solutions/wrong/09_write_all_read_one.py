# WRONG 09_cassandra_feeds q3: ALL/ONE overlaps, but a write at ALL fails as soon as one replica is down
def replicas(level, rf):
    return {"ONE": 1, "QUORUM": rf // 2 + 1, "ALL": rf}[level]

def feed_levels():
    return "ALL", "ONE"
