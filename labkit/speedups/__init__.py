"""Cython kernels, each beside its pure-Python twin."""
