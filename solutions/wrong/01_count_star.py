# WRONG 01_data_model q2: COUNT(*) over the like rows instead of the counter row
def like_count(conn, media_id):
    return conn.execute("SELECT count(*) FROM user_likes_media WHERE media_id = %s",
                        (media_id,)).fetchone()[0]
