"""Instagram's 64-bit IDs: 41 bits of milliseconds, 13 bits of logical shard, 10 bits of sequence.

An ID sorts by creation time and says which logical shard holds the row, so nothing but the
ID is needed to route a read. PostgreSQL makes them (see ``labkit.backend.schema``); this
module takes them apart again and builds them for bulk loads.

Introduced in notebooks/01_data_model.ipynb.

>>> i = make_id(ms=1_000, shard=5, seq=7)
>>> decode(i).shard, decode(i).seq, decode(i).ms
(5, 7, 1000)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

# Instagram's custom epoch (2011-08-24 21:07:01.721 UTC): 41 bits of ms then last ~69 years.
EPOCH_MS = 1_314_220_021_721
TIME_BITS, SHARD_BITS, SEQ_BITS = 41, 13, 10
MAX_SHARDS = 1 << SHARD_BITS  # 8192 logical shards
SEQ_PER_MS = 1 << SEQ_BITS  # 1024 IDs per millisecond per shard before the sequence wraps


@dataclass(frozen=True)
class DecodedId:
    """The three fields of an ID, and the creation time they encode."""

    ms: int  # milliseconds since EPOCH_MS
    shard: int
    seq: int

    @property
    def created_at(self) -> datetime:
        return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(
            milliseconds=EPOCH_MS + self.ms)


def make_id(ms: int, shard: int, seq: int) -> int:
    """Pack (ms since EPOCH_MS, shard, seq) into one 64-bit ID, as the PL/pgSQL function does."""
    if not 0 <= shard < MAX_SHARDS:
        raise ValueError(f"shard={shard}: logical shards are numbered 0..{MAX_SHARDS - 1}")
    if not 0 <= ms < 1 << TIME_BITS:
        raise ValueError(f"ms={ms}: must fit in {TIME_BITS} bits (0 <= ms < 2**{TIME_BITS})")
    return (ms << (SHARD_BITS + SEQ_BITS)) | (shard << SEQ_BITS) | (seq % SEQ_PER_MS)


def decode(id_: int) -> DecodedId:
    """Split an ID into milliseconds since the epoch, logical shard and sequence."""
    if not 0 < id_ < 1 << 63:
        raise ValueError(f"{id_!r} is not a 64-bit Instagram ID (must be 1 .. 2**63-1)")
    return DecodedId(ms=id_ >> (SHARD_BITS + SEQ_BITS),
                     shard=(id_ >> SEQ_BITS) & (MAX_SHARDS - 1),
                     seq=id_ & (SEQ_PER_MS - 1))


def shard_of(id_: int) -> int:
    """The logical shard an ID was made in (where its row lives)."""
    return decode(id_).shard


def now_ms() -> int:
    """Milliseconds since EPOCH_MS, now (for IDs made in Python during bulk loads)."""
    return int(datetime.now(timezone.utc).timestamp() * 1000) - EPOCH_MS
