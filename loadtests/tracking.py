"""Per-conversation sequence accounting: lost, duplicated and out-of-order deliveries.

The gateway numbers each conversation's messages 1, 2, 3, ... (protocol section 5.1). A
receiver sees them live (``message`` frames) or through sync. Live frames are checked:
a seq already seen is a duplicate, a seq below the highest seen is out of order. At the end a
final sync from the contiguous cursor fetches whatever live delivery missed: each such seq
is a lost message (lost on the live path; sync still had it).

A ``gap`` (protocol 5.6: a live frame, or a sync batch's ``gaps``) announces an in-doubt range
after a dispatcher took a conversation over uncleanly: the cursor moves past it, and a message
that still turns up inside it is a late fill, neither duplicated nor out of order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class ConversationSeqs:
    # Every session holds one per conversation: slots, and the rarely used in-doubt set only
    # once a gap is announced (an empty set alone is 216 bytes).
    seen: set[int] = field(default_factory=set)
    cursor: int = 0  # highest contiguous seq
    highest: int = 0
    in_doubt: set[int] | None = None  # announced as a gap, not delivered (yet)

    def add(self, seq: int) -> None:
        self.seen.add(seq)
        self.highest = max(self.highest, seq)
        while self.cursor + 1 in self.seen:
            self.cursor += 1
            # Keep memory flat on long runs: everything up to the cursor is implied.
            self.seen.discard(self.cursor)

    def has(self, seq: int) -> bool:
        return seq <= self.cursor or seq in self.seen

    def skip(self, low: int, high: int) -> int:
        """Mark an announced in-doubt range as had; returns how many seqs were new to us."""
        new = [seq for seq in range(low, high + 1) if not self.has(seq)]
        if new:
            if self.in_doubt is None:
                self.in_doubt = set()
            self.in_doubt.update(new)
        for seq in new:
            self.add(seq)
        return len(new)

    def fill(self, seq: int) -> bool:
        """A message inside an announced range: True the first time (a late fill)."""
        if self.in_doubt is None or seq not in self.in_doubt:
            return False
        self.in_doubt.discard(seq)
        return True


class SeqTracker:
    """One device's view of its conversations; ``counters`` is shared per worker."""

    __slots__ = ("conversations", "counters")

    def __init__(self, counters: Counter[str]) -> None:
        self.conversations: dict[str, ConversationSeqs] = {}
        self.counters = counters

    def _conversation(self, conversation_id: str) -> ConversationSeqs:
        conv = self.conversations.get(conversation_id)
        if conv is None:
            conv = self.conversations[conversation_id] = ConversationSeqs()
        return conv

    def live(self, conversation_id: str, seq: int) -> bool:
        """Record a live message; True if it is new (not a duplicate)."""
        conv = self._conversation(conversation_id)
        if conv.fill(seq):
            self.counters["gap_filled"] += 1
            self.counters["delivered_live"] += 1
            return True
        if conv.has(seq):
            self.counters["duplicated"] += 1
            return False
        if seq < conv.highest:
            self.counters["out_of_order"] += 1
        conv.add(seq)
        self.counters["delivered_live"] += 1
        return True

    def synced(self, conversation_id: str, seq: int, *, final: bool) -> None:
        """Record a message from sync; in the final sync a new seq is a lost live delivery."""
        conv = self._conversation(conversation_id)
        if conv.fill(seq):
            self.counters["gap_filled"] += 1
            self.counters["delivered_sync"] += 1
            return
        if conv.has(seq):
            return
        conv.add(seq)
        self.counters["lost" if final else "delivered_sync"] += 1

    def gap(self, conversation_id: str, low: int, high: int) -> None:
        """An announced in-doubt range ``low..high`` (inclusive): move the cursor past it."""
        self.counters["gap_seqs"] += self._conversation(conversation_id).skip(low, high)

    def cursors(self) -> dict[str, int]:
        return {conv_id: conv.cursor for conv_id, conv in self.conversations.items()}
