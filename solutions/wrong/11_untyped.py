# WRONG 11_cython_and_memory q2: correct, compiled, but nothing typed: Python objects all the way (slow)
%%cython --compile-args=-O0
import math

def recency_scores(media_ids, now_ms, half_life_h, out):
    if len(out) < len(media_ids):
        raise ValueError("out is too short")
    if not half_life_h > 0:
        raise ValueError("half_life_h must be positive")
    rate = math.log(2.0) / half_life_h
    for i in range(len(media_ids)):
        age_ms = now_ms - (media_ids[i] >> 23)
        age_h = age_ms / 3_600_000.0 if age_ms > 0 else 0.0
        out[i] = math.exp(-rate * age_h)
