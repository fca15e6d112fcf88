"""The grader's wire format for datetimes (no servers needed)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from labkit.grading import wire


def test_datetimes_cross_the_wire_as_themselves():
    aware = datetime.now(timezone(timedelta(hours=2))).replace(microsecond=123456)
    naive = datetime(2026, 11, 21, 23, 59, 1)
    back = wire.loads(wire.dumps([aware, naive, (aware,)]))
    assert back == [aware, naive, (aware,)]
    assert back[0].utcoffset() == timedelta(hours=2) and back[1].tzinfo is None


def test_a_garbled_datetime_is_opaque_never_an_error():
    value = wire.decode(json.loads('{"$datetime": "not a time"}'))
    assert isinstance(value, wire.Opaque) and value != datetime(2026, 1, 1)
