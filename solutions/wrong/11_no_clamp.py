# WRONG 11_cython_and_memory q1: posts from the future get a score above 1 (negative ages not clamped)
%%cython --compile-args=-O0
# cython: boundscheck=False, wraparound=False
from libc.math cimport exp, log
from libc.stdint cimport int64_t

def recency_scores(const int64_t[::1] media_ids, int64_t now_ms, double half_life_h,
                   double[::1] out):
    cdef Py_ssize_t i, n = media_ids.shape[0]
    cdef double rate = log(2.0) / half_life_h
    for i in range(n):
        out[i] = exp(-rate * ((now_ms - (media_ids[i] >> 23)) / 3_600_000.0))
