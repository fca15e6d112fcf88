"""Values sent between the grader and a graded kernel: tagged JSON, bounded, never executed.

``encode`` turns what a student's function returned into JSON the grader can read back with
``decode``: None, bools, ints, floats (NaN and infinities too), str, bytes, lists, tuples,
dicts, sets, datetimes (naive or aware, as ISO 8601 text). Anything else arrives as an ``Opaque`` (its type name and a short repr), which
compares unequal to every expected value. Sizes are bounded: long strings, bytes and
collections are cut (``Opaque`` again), and nesting stops at ``MAX_DEPTH``. Decoding
builds only those plain types, whatever the input: a forged or garbled answer can be wrong,
never dangerous.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_ITEMS = 10_000
MAX_TEXT = 100_000
MAX_DEPTH = 20


@dataclass(frozen=True)
class Opaque:
    """A value the wire cannot carry (an object, a value too large): only what it was."""

    type: str
    repr: str

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return hash((self.type, self.repr))

    def __repr__(self) -> str:
        return f"<{self.type}: {self.repr}>"


def encode(value: Any, depth: int = 0) -> Any:
    """A JSON-able form of ``value`` (tagged where JSON has no type of its own).

    An object with a ``__wire__`` method (the grader's references to kernel objects,
    ``labkit.grading.harness.Marker``) is sent as what that method returns.
    """
    if hasattr(type(value), "__wire__"):
        return {"$marker": value.__wire__()}
    if value is None or isinstance(value, bool) or isinstance(value, str) and len(value) <= MAX_TEXT:
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else {"$int": str(value)[:MAX_TEXT]}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if depth >= MAX_DEPTH:
        return _opaque(value, "nested too deep")
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) <= MAX_TEXT:
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (list, tuple, set, frozenset)) and len(value) <= MAX_ITEMS:
        items = [encode(v, depth + 1) for v in value]
        if isinstance(value, list):
            return items
        return {"$tuple" if isinstance(value, tuple) else "$set": items}
    if isinstance(value, dict) and len(value) <= MAX_ITEMS:
        return {"$dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    return _opaque(value, "too large" if hasattr(value, "__len__") else "")


def _opaque(value: Any, why: str) -> dict[str, str]:
    try:
        text = repr(value)[:200]
    except Exception:
        text = "?"
    return {"$opaque": type(value).__name__[:100], "repr": f"{text}{' (' + why + ')' if why else ''}"}


def decode(data: Any, depth: int = 0, resolve: Any = None) -> Any:
    """The value ``encode`` made (an ``Opaque`` for anything malformed).

    ``resolve`` turns a marker into the object it names (only the kernel side passes one:
    a marker coming back from a kernel is an ``Opaque`` to the grader).
    """
    if depth > MAX_DEPTH + 1:
        return Opaque("?", "nested too deep")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v, depth + 1, resolve) for v in data]
    if isinstance(data, dict) and len(data) in (1, 2):
        try:
            (tag, body), *rest = data.items()
            if tag == "$int":
                return int(body)
            if tag == "$float":
                return float(body)
            if tag == "$bytes":
                return base64.b64decode(body)
            if tag == "$datetime":
                return datetime.fromisoformat(str(body)[:64])
            if tag == "$tuple":
                return tuple(decode(v, depth + 1, resolve) for v in body)
            if tag == "$set":
                return {decode(v, depth + 1, resolve) for v in body}
            if tag == "$dict":
                return {decode(k, depth + 1, resolve): decode(v, depth + 1, resolve) for k, v in body}
            if tag == "$marker" and resolve is not None:
                return resolve(body)
            if tag == "$opaque":
                return Opaque(str(body)[:100], str(data.get("repr", ""))[:300])
        except (TypeError, ValueError):
            pass
    return Opaque(type(data).__name__, "malformed on the wire")


def dumps(value: Any) -> str:
    return json.dumps(encode(value), allow_nan=False, separators=(",", ":"))


def loads(text: str, resolve: Any = None) -> Any:
    return decode(json.loads(text), resolve=resolve)
