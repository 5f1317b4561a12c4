"""`tutorloop doctor`: check the installation end to end."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import typer
from rich.table import Table

from tutorloop.infra.cli_common import console, fail, settings_of
from tutorloop.infra.warehouse_backends import open_warehouse

# (name, ok, detail); ok None is a warning: worth reading, not a failed installation.
_Check = tuple[str, bool | None, str]


def doctor(
    ctx: typer.Context,
    start: bool = typer.Option(
        False, "--start", help="start the embedded broker for the check if it is not running"
    ),
) -> None:
    """Check the installation end to end: the machine and the training path it gets, config,
    warehouse, broker, an event round trip."""
    from tutorloop.infra.broker import EmbeddedBroker, bootstrap_servers

    settings = settings_of(ctx)
    checks: list[_Check] = _machine_checks(settings.data_dir, settings.trainer.quantization)

    wh = open_warehouse(settings)
    t0 = time.perf_counter()
    with wh.connect() as con:
        # Written and rolled back: proves the schema takes a row without leaving one.
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "INSERT INTO predictions_audit (event_id, ts, tenant_id, user_id, request_id, "
            "model_version, label, confidence, consent_training, captured, policy_version) "
            "VALUES (?, now(), 'doctor', 'doctor', 'doctor', 'doctor', 'x', 1.0, false, "
            "false, 'doctor')",
            [str(uuid.uuid4())],
        )
        con.execute("ROLLBACK")
    checks.append(("warehouse", True, f"{wh.location} ({(time.perf_counter() - t0) * 1e3:.0f} ms)"))

    broker = EmbeddedBroker(settings)
    started_here = False
    if settings.broker.embedded and broker.state() is None:
        if not start:
            checks.append(("broker", False, "embedded broker not running (use --start)"))
            _report(checks)
        broker.up()
        started_here = True
    try:
        bootstrap = bootstrap_servers(settings)
        checks.append(("broker", True, bootstrap))
        t0 = time.perf_counter()
        _roundtrip(settings.topic("tutorloop.doctor"), bootstrap)
        checks.append(
            (
                "event round trip",
                True,
                f"produce → consume → validate in {(time.perf_counter() - t0) * 1e3:.0f} ms",
            )
        )
    finally:
        if started_here:
            broker.down()
    _report(checks)


def _machine_checks(data_dir: Path, quantization: str) -> list[_Check]:
    """Why a run is fast or slow here: the CPU and what torch makes of it, threads, memory,
    disk, and the training path ``trainer.quantization`` resolves to on this machine."""
    try:
        from tutorloop.infra.machine import describe_machine, training_path

        m = describe_machine(data_dir)
    except ImportError as exc:  # an install without the ml extra: nothing here trains
        return [("machine", None, f"not described: {exc.name or exc} is not installed")]
    gpu = f", GPU {m.cuda}" if m.cuda else ""
    path = training_path(quantization)
    return [
        ("machine", True, f"{m.cpu} ({m.arch}, torch capability {m.cpu_capability}){gpu}"),
        ("threads", True, f"{m.torch_threads} torch threads on {m.cpus} CPUs"),
        ("memory", True, f"{m.memory_available_gib} GiB free of {m.memory_gib} GiB"),
        ("disk", True, f"{m.disk_free_gib} GiB free under {data_dir}"),
        (
            "training path",
            None if path.slow else True,
            f"trainer.quantization = {path.requested} -> {path.quantization}: {path.reason}",
        ),
    ]


def _roundtrip(topic: str, bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from tutorloop.infra.topics import create_topic
    from tutorloop.streams.events import (
        Consent,
        PredictionEvent,
        TopK,
        decode_prediction,
        now_utc,
    )

    create_topic(bootstrap, topic, partitions=1, retention=3_600_000)  # a scratch topic: 1 h
    event = PredictionEvent(
        event_id=uuid.uuid4(),
        ts=now_utc(),
        tenant_id="doctor",
        user_id="doctor",
        request_id=str(uuid.uuid4()),
        model_version="doctor",
        text="doctor round trip",
        label="doctor",
        confidence=0.5,
        top_k=TopK.from_pairs([("doctor", 0.5), ("other", 0.5)]),
        consent=Consent(training=False),
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        meta = producer.send(topic, value=event.to_bytes(), key=event.key).get(timeout=10)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if decode_prediction(record.value) == event:
                        return
    finally:
        consumer.close()
    raise RuntimeError("the produced event was not read back within 10 s")


def _report(checks: list[_Check]) -> None:
    table = Table("check", "ok", "detail")
    marks = {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]warn[/]"}
    for name, ok, detail in checks:
        table.add_row(name, marks[ok], detail)
    console.print(table)
    failed = [name for name, ok, _ in checks if ok is False]
    if failed:
        fail(f"failed: {', '.join(failed)}")
