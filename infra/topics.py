"""Topic bootstrap: create the loop's topics if they are missing (idempotent), with a retention."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from tutorloop.infra.settings import Settings

#: Logical topic names; the settings' ``topic_prefix`` is prepended on the wire.
PREDICTIONS = "predictions"
ESCALATIONS = "escalations"
PREDICTIONS_DLQ = "predictions.dlq"
TOPICS: tuple[str, ...] = (PREDICTIONS, ESCALATIONS, PREDICTIONS_DLQ)


@contextlib.contextmanager
def _admin(bootstrap: str, timeout_s: float) -> Iterator[KafkaAdminClient]:
    timeout_ms = int(timeout_s * 1000)
    client = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="tutorloop-admin",
        request_timeout_ms=timeout_ms,
        # kafka-python waits 30 s for a bootstrap by default, whatever the request timeout: a
        # broker that accepts TCP but is not answering yet would hold a 2 s probe for 30 s.
        bootstrap_timeout_ms=timeout_ms,
    )
    try:
        yield client
    finally:
        client.close()


def list_topics(bootstrap: str, *, timeout_s: float = 10.0) -> set[str]:
    with _admin(bootstrap, timeout_s) as admin:
        return set(admin.list_topics())


def ensure_topics(
    settings: Settings,
    bootstrap: str,
    names: Sequence[str] = TOPICS,
    *,
    partitions: int | None = None,
    timeout_s: float = 10.0,
) -> dict[str, bool]:
    """Create each logical topic that does not exist yet.

    Returns ``{full topic name: created now?}``. Existing topics are left as they are, even
    with another partition count: repartitioning a live topic reorders keys, so it is not
    done behind the operator's back.
    """
    count = partitions or settings.broker.partitions
    retention = retention_ms(settings)
    with _admin(bootstrap, timeout_s) as admin:
        existing = set(admin.list_topics())
        return {
            topic: _create_missing(admin, existing, topic, count, retention)
            for topic in (settings.topic(name) for name in names)
        }


def retention_ms(settings: Settings) -> int:
    """``retention.ms`` of the topics tutorloop creates (``streams.retention_hours``)."""
    return int(settings.streams.retention_hours * 3600 * 1000)


def create_topic(
    bootstrap: str,
    topic: str,
    *,
    partitions: int,
    retention: int | None = None,
    timeout_s: float = 10.0,
) -> bool:
    """Create one topic by its full name unless it exists; return whether it was created."""
    with _admin(bootstrap, timeout_s) as admin:
        return _create_missing(admin, set(admin.list_topics()), topic, partitions, retention)


def _create_missing(
    admin: KafkaAdminClient, existing: set[str], topic: str, partitions: int, retention: int | None
) -> bool:
    if topic in existing:
        return False
    # The broker deletes raw events after this: the bound on how long an erased user's
    # prediction text survives in Kafka (the erasure record states it).
    configs = {"retention.ms": str(retention)} if retention else {}
    if topic.endswith(PREDICTIONS_DLQ):
        # Letters are keyed by their source record, and the latest letter of a key is its
        # state (streams.dead_letters): compaction may drop the older ones.
        configs["cleanup.policy"] = "compact,delete"
    try:
        admin.create_topics([
            NewTopic(name=topic, num_partitions=partitions, replication_factor=1,
                     topic_configs=configs)
        ])  # fmt: skip
    except TopicAlreadyExistsError:
        # Another process created it between our list and create.
        return False
    return True


def partition_counts(
    bootstrap: str, topics: Sequence[str], *, timeout_s: float = 10.0
) -> dict[str, int]:
    """Number of partitions per topic, as the broker reports it."""
    with _admin(bootstrap, timeout_s) as admin:
        described = admin.describe_topics(list(topics))
    return {t["name"]: len(t["partitions"]) for t in described}


def read_to_end(bootstrap: str, topic: str, *, timeout_s: float = 30.0) -> list[Any]:
    """Every record on ``topic`` from the beginning, up to the high watermark of each partition
    as the broker reports it in fetch responses (tansu's ListOffsets(latest) is wrong, so
    ``end_offsets`` cannot say where the end is). Records of each partition in order."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    records: list[Any] = []
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            return []
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while not _at_end(consumer, partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end in {timeout_s:.0f}s")
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def _at_end(consumer: Any, partitions: list[Any]) -> bool:
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is None or consumer.position(tp) < highwater:
            return False
    return True
