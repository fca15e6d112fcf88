# WRONG 09_cassandra_feeds q2: keys the activity row by when the task runs (a redelivery adds a second row)
import time

def record_like(session, owner_id, liker_id, media_id, liked_at):
    at_ms = int(time.time() * 1000)
    session.execute("INSERT INTO activity_by_user (user_id, bucket, at_ms, kind, actor_id, media_id) "
                    "VALUES (%s, %s, %s, 'like', %s, %s)",
                    (owner_id, feeds.bucket_of_ms(at_ms), at_ms, liker_id, media_id))
