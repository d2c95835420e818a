"""Size limits of what a node accepts and what it may put on Kafka: one home for each number.

Kafka refuses a record whose batch exceeds the producer's ``max.request.size`` or the broker's
``message.max.bytes`` (both about 1 MiB by default, and the launcher keeps the defaults). A node
checks the sealed envelope, its key and an allowance for the record's headers and framing
against ``MAX_RECORD_BYTES`` before it queues anything, so that no row it accepted can be refused
by the broker for its size. The clear header's fields are bounded so that the allowance holds.
"""

from __future__ import annotations

KAFKA_MESSAGE_BYTES = 1024 * 1024  # max.request.size (producer) and ~message.max.bytes (broker)
RECORD_OVERHEAD_BYTES = 16 * 1024  # record batch framing and the ce_* headers mirrored from the header
MAX_RECORD_BYTES = KAFKA_MESSAGE_BYTES - RECORD_OVERHEAD_BYTES
"""What the envelope plus its key may weigh: the limit every node checks before queueing."""

MAX_BODY_BYTES = 2 * KAFKA_MESSAGE_BYTES
"""A submitted JSON body (base64 bytes make it larger than the envelope); larger ones get 413."""

MAX_CASE_REF = 128
MAX_ADDRESS = 64  # a country code or a participant id in ``to``
MAX_RECIPIENTS = 32
MAX_CORRELATION_ID = 64
MAX_CURSOR = 200  # the inbox's ``after`` cursor: ``received_at|event_id``
MAX_PAGE = 500  # events in one inbox page


def record_fits(envelope: bytes, key: bytes) -> bool:
    """Whether a record of this envelope and key stays within the producer's and broker's limits."""
    return len(envelope) + len(key) <= MAX_RECORD_BYTES


def header_fields_bound() -> int:
    """The most the bounded clear-header fields can weigh (they must fit in the overhead)."""
    return MAX_CASE_REF + MAX_RECIPIENTS * (MAX_ADDRESS + 1) + MAX_CORRELATION_ID + 1024
