"""`tutorloop serve`: the champion over HTTP until SIGTERM/SIGINT."""

from __future__ import annotations

import typer

from tutorloop.infra.cli_common import console, settings_of


def serve(
    ctx: typer.Context,
    host: str = typer.Option("", "--host", help="default: serving.host"),
    port: int = typer.Option(-1, "--port", help="default: serving.port"),
    emit: bool = typer.Option(True, "--emit/--no-emit", help="send prediction events to Kafka"),
) -> None:
    """Serve the champion over HTTP (POST /predict, GET /healthz) until SIGTERM/SIGINT."""
    import signal
    import threading

    from tutorloop.serving.runtime import serving

    settings = settings_of(ctx)
    emitter = None
    if emit:
        from tutorloop.streams.emitter import PredictionEmitter

        emitter = PredictionEmitter.from_settings(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with serving(settings, emitter=emitter, host=host or None,
                     port=None if port < 0 else port) as (predictor, server):  # fmt: skip
            address, bound_port = server.server_address[:2]
            bound = f"http://{address!s}:{bound_port}"
            console.print(
                f"serving {predictor.version or 'nothing yet'} on {bound}", highlight=False
            )
            stop.wait()
    finally:
        if emitter is not None:
            emitter.close()
