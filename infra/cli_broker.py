"""`tutorloop broker ...`: the embedded broker's lifecycle and topic bootstrap."""

from __future__ import annotations

import typer
from rich.table import Table

from tutorloop.infra.cli_common import JSON_OUT, console, fail, print_json, settings_of

# Commands import the broker and Kafka client modules themselves: `tutorloop --help` and
# unrelated commands should not pay for loading a Kafka client.

broker_app = typer.Typer(help="Start, inspect and stop the embedded Kafka-compatible broker.")


@broker_app.command("up")
def up(ctx: typer.Context, json_out: bool = JSON_OUT) -> None:
    """Start the embedded broker on 127.0.0.1 and create the loop's topics."""
    from tutorloop.infra.broker import EmbeddedBroker
    from tutorloop.infra.topics import ensure_topics

    settings = settings_of(ctx)
    state = EmbeddedBroker(settings).up()
    created = ensure_topics(settings, state.bootstrap_servers)
    if json_out:
        print_json(
            {
                "pid": state.pid,
                "bootstrap_servers": state.bootstrap_servers,
                "storage": state.storage,
                "topics_created": created,
            }
        )
        return
    console.print(f"broker up: pid {state.pid}, {state.bootstrap_servers}, storage {state.storage}")
    new = [t for t, was_created in created.items() if was_created]
    if new:
        console.print(f"topics created: {', '.join(new)}")


@broker_app.command("status")
def status(ctx: typer.Context, json_out: bool = JSON_OUT) -> None:
    """Show whether the broker runs, where, and its topics (exit 1 when it does not run)."""
    from tutorloop.infra.broker import EmbeddedBroker, status_dict

    st = EmbeddedBroker(settings_of(ctx)).status()
    if json_out:
        print_json(status_dict(st))
    elif st.running:
        table = Table(show_header=False, box=None)
        table.add_row("bootstrap", str(st.bootstrap_servers))
        if st.external:
            table.add_row("mode", st.detail)
        else:
            table.add_row("pid", str(st.pid))
            table.add_row("storage", str(st.storage))
            table.add_row("uptime", f"{st.uptime_s or 0:.0f}s")
            table.add_row("topics", ", ".join(st.topics) or "(none)")
        console.print(table)
    if not st.running:
        if not json_out:
            fail(f"broker is not running{': ' + st.detail if st.detail else ''}")
        raise typer.Exit(1)


@broker_app.command("down")
def down(ctx: typer.Context) -> None:
    """Stop the embedded broker (and its local S3 in durable mode)."""
    from tutorloop.infra.broker import EmbeddedBroker

    stopped = EmbeddedBroker(settings_of(ctx)).down()
    console.print("broker stopped" if stopped else "broker was not running")


@broker_app.command("topics")
def topics(
    ctx: typer.Context,
    partitions: int = typer.Option(
        0, min=0, help="partitions for new topics (default: broker.partitions)"
    ),
    json_out: bool = JSON_OUT,
) -> None:
    """Create the loop's topics where missing (idempotent; works against external Kafka)."""
    from tutorloop.infra.broker import bootstrap_servers
    from tutorloop.infra.topics import TOPICS, ensure_topics

    settings = settings_of(ctx)
    created = ensure_topics(
        settings, bootstrap_servers(settings), TOPICS, partitions=partitions or None
    )
    if json_out:
        print_json(created)
        return
    for topic, was_created in created.items():
        console.print(f"{topic}: {'created' if was_created else 'exists'}")
