"""`tutorloop serve`: the champion over HTTP until SIGTERM/SIGINT."""

from __future__ import annotations

import typer

from tutorloop.infra.cli_common import console, settings_of


def serve(
    ctx: typer.Context,
    host: str = typer.Option("", "--host", help="default: serving.host"),
    port: int = typer.Option(-1, "--port", help="default: serving.port"),
    emit: bool = typer.Option(True, "--emit/--no-emit", help="send prediction events to Kafka"),
    insecure: bool = typer.Option(
        False, "--insecure", help="allow a non-loopback address without a bearer token"
    ),
) -> None:
    """Serve the champion over HTTP (POST /predict, /healthz, /readyz, /metrics) until
    SIGTERM/SIGINT; shutdown drains requests in flight and flushes the events."""
    from tutorloop.serving.fallback import teacher_fallback
    from tutorloop.serving.server import RunningServer, serve_forever

    settings = settings_of(ctx)
    emitter = None
    if emit:
        from tutorloop.streams.spool_emitter import SpoolingEmitter

        emitter = SpoolingEmitter.from_settings(settings)

    def announce(running: RunningServer) -> None:
        version = running.predictor.version or "nothing yet"
        console.print(f"serving {version} on {running.url}", highlight=False)

    try:
        serve_forever(
            settings, emitter=emitter, host=host or None, port=None if port < 0 else port,
            fallback=teacher_fallback(settings), insecure=insecure, announce=announce,
        )  # fmt: skip
    finally:
        if emitter is not None:
            emitter.close()
