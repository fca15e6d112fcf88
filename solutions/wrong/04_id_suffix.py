# WRONG 04_invalidation q1: finds "id[" anywhere, so user_id[...] is taken for a media row's id
import re

def keys_for_change(line, prefix):
    m = re.match(r"^table (?:[^.]+\.)?(\S+): (INSERT|UPDATE|DELETE):", line)
    if not m or m.group(1) not in RULES:
        return []
    kind, column = RULES[m.group(1)]
    ids = re.findall(rf"{re.escape(column)}\[[^\]]+\]:(-?\d+)", line)
    return sorted({f"{prefix}:{kind}:{int(i)}" for i in ids})
