# WRONG 09_cassandra_feeds q1: files the post in the week the task runs, not the post's week (a late task puts it in the wrong bucket)
import time

def deliver_batch(session, media_id, author_id, follower_ids):
    insert = session.prepare("INSERT INTO feed_by_user (user_id, bucket, media_id, author_id) "
                             "VALUES (?, ?, ?, ?)")
    bucket = feeds.bucket_of_ms(int(time.time() * 1000))
    for follower in follower_ids:
        session.execute(insert, (follower, bucket, media_id, author_id))
