# WRONG 09_cassandra_feeds q3: a quorum as half the replicas, rounded (right for RF 3 only: 0 of 1, 2 of 5)
def replicas(level, rf):
    return {"ONE": 1, "QUORUM": round(rf / 2), "ALL": rf}[level]

def feed_levels():
    return "QUORUM", "QUORUM"
