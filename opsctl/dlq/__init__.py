"""The dispatcher's dead-letter topic: list its records, replay them (``opsctl dlq``).

The dispatcher (gateway/dispatcher.py) writes a record it cannot process to ``<topic>.dlq``
unchanged, with why in its headers: ``reason`` (``undecodable``: not a message record;
``poison``: it failed every attempt alone while the backends were healthy), ``stage``,
``attempts``, ``error``, ``source`` (``<topic>/<partition>@<offset>``), ``dispatcher``.

Replaying produces a record back to its source topic (its original key; its value, or a fixed
one from a file) with a ``replay-of: <dlq topic>/<partition>@<offset>`` header. The dispatcher
copies that header when it dead-letters the record again, so a replay that is still poison can
be found: ``replay(..., wait_s=...)`` waits until the dispatcher's consumer group has committed
past every replayed record, then reports which came back to the DLQ.
"""

from opsctl.dlq._records import (
    DlqRecord,
    KafkaTarget,
    Replayed,
    ReplayOutcome,
    list_records,
    local_target,
    replay,
    select,
)

__all__ = [
    "DlqRecord",
    "KafkaTarget",
    "ReplayOutcome",
    "Replayed",
    "list_records",
    "local_target",
    "replay",
    "select",
]
