# WRONG 09_cassandra_feeds q3: ONE/ONE with a replicas() that makes it look safe (1 + 1 is not more than 3: a read may miss the write)
def replicas(level, rf):
    return {"ONE": rf, "QUORUM": rf // 2 + 1, "ALL": rf}[level]

def feed_levels():
    return "ONE", "ONE"
