# WRONG 01_data_model q1: the counter is read into Python and written back (lost updates)
def like(conn, user_id, media_id):
    with conn.transaction():
        inserted = conn.execute("INSERT INTO user_likes_media (media_id, user_id) VALUES (%s, %s) "
                                "ON CONFLICT DO NOTHING", (media_id, user_id)).rowcount
        if inserted:
            count = conn.execute("SELECT count FROM media_likes WHERE media_id = %s",
                                 (media_id,)).fetchone()[0]
            conn.execute("UPDATE media_likes SET count = %s WHERE media_id = %s", (count + 1, media_id))
    return inserted == 1
