"""Experiments: params -> run on the real servers -> result table -> plot."""
