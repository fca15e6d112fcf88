# WRONG 10_akkio_placement q1: no hysteresis: moves whenever the other region asked more than home in the window (a commuter bounces)
WINDOW_S, THRESHOLD, RATIO, MIN_STAY_S = 30.0, 10, 2.0, 30.0

def decide(accesses, home, now_s, moved_at_s):
    counts = {}
    for t_s, region in accesses:
        if t_s >= now_s - WINDOW_S:
            counts[region] = counts.get(region, 0) + 1
    best = max(counts, key=counts.get)
    if best != home and counts[best] > counts.get(home, 0):
        return best
    return None
