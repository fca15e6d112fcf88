# WRONG 01_data_model q1: the like row and the counter in two separate commits (not both-or-neither)
def like(conn, user_id, media_id):
    inserted = conn.execute("INSERT INTO user_likes_media (media_id, user_id) VALUES (%s, %s) "
                            "ON CONFLICT DO NOTHING", (media_id, user_id)).rowcount
    if inserted:
        conn.execute("UPDATE media_likes SET count = count + 1 WHERE media_id = %s", (media_id,))
    return inserted == 1
