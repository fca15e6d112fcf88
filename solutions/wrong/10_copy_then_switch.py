# WRONG 10_akkio_placement q2: copies, then switches, with no fence: a write the old region accepts after the copy read it is deleted with the old copy
def move_user(db, stores, user_id, target):
    loc = db.get(user_id)
    if loc.region == target:
        return loc.version
    src, dst = stores[loc.region], stores[target]
    db.begin_move(loc)
    dst.load(user_id, loc.version + 1, src.export(user_id))
    dst.activate(user_id, loc.version + 1)
    new = db.finish_move(loc, target)
    src.drop(user_id)
    return new.version
