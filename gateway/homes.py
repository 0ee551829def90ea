"""Shards and home regions (docs/multi-region.md, section 2). Pure functions, no I/O.

``shard_of`` is crc32 of the conversation id's UTF-8 bytes mod 4096: cheap, the same in every
language, independent of Kafka partition counts. A shard's home is the region with the highest
rendezvous score ``blake2b(region || shard)``; when a region leaves, only its shards move (each
to its next-highest region), and no other shard changes home.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Sequence

SHARDS = 4096


def shard_of(conversation_id: str) -> int:
    return zlib.crc32(conversation_id.encode()) % SHARDS


def score(region: str, shard: int) -> int:
    """The rendezvous weight of ``region`` for ``shard`` (64 bits, big-endian digest)."""
    digest = hashlib.blake2b(f"{region}\x00{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ranked(shard: int, regions: Iterable[str]) -> list[str]:
    """Regions in the order they would home ``shard``: the home first, then its successors.
    Ties (practically impossible) break on the region name, so the order is total."""
    unique = set(regions)
    return sorted(unique, key=lambda region: (-score(region, shard), region))


def home_of(shard: int, regions: Sequence[str]) -> str:
    if not regions:
        raise ValueError("no active region to home a shard")
    return ranked(shard, regions)[0]


def home_of_conversation(conversation_id: str, regions: Sequence[str]) -> str:
    return home_of(shard_of(conversation_id), regions)


def homes(regions: Sequence[str]) -> list[str]:
    """The home region of every shard, indexed by shard."""
    if not regions:
        raise ValueError("no active region to home a shard")
    return [home_of(shard, regions) for shard in range(SHARDS)]
