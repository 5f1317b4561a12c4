"""Reading single records back from Kafka, for escalations of uncaptured predictions.

The warehouse never holds an uncaptured prediction's text; when an escalation arrives for one,
the sink re-reads the event at the partition and offset the audit row recorded. When the
prediction carried no text and its escalation came first, the sink re-reads the escalation
(which carries the text) at the position the escalations table recorded.
"""

from __future__ import annotations

import threading
from typing import Any


class KafkaRecordFetcher:
    """Reads single records of one topic back from Kafka by partition and offset."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._consumer: Any = None
        self._lock = threading.Lock()

    def fetch(self, partition: int, offset: int) -> bytes | None:
        from kafka import KafkaConsumer, TopicPartition

        with self._lock:
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
                        if record.offset == offset:
                            return bytes(record.value)
                        return None
            return None

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
