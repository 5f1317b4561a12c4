"""Reading single records back from Kafka, for escalations of uncaptured predictions.

The warehouse never holds an uncaptured prediction's text; when an escalation arrives for one,
the sink re-reads the event at the partition and offset the audit row recorded. When the
prediction carried no text and its escalation came first, the sink re-reads the escalation
(which carries the text) at the position the escalations table recorded.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class KafkaRecordFetcher:
    """Reads single records of one topic back from Kafka by partition and offset."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._consumer: Any = None
        self._lock = threading.Lock()

    def fetch(self, partition: int, offset: int) -> bytes | None:
        """The record's value, or None when Kafka does not give it back now.

        A broker that does not answer (down, paused, restarting) is not an error here: the
        caller parks the position and asks again later."""
        from kafka.errors import KafkaError

        with self._lock:
            try:
                return self._fetch(partition, offset)
            except (KafkaError, OSError) as exc:
                log.warning(
                    "reading %s[%d]@%d back failed (%s); will retry",
                    self.topic, partition, offset, type(exc).__name__,
                )  # fmt: skip
                self._close()
                return None

    def _fetch(self, partition: int, offset: int) -> bytes | None:
        from kafka import KafkaConsumer, TopicPartition

        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                group_id=None,
                consumer_timeout_ms=5000,
            )
        tp = TopicPartition(self.topic, partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, offset)
        for _ in range(10):
            for records in self._consumer.poll(timeout_ms=500, max_records=1).values():
                for record in records:
                    return bytes(record.value) if record.offset == offset else None
        return None

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._consumer is not None:
            # A half-open consumer (the broker went away): nothing left to release.
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None
