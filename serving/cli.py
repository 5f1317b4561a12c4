"""`tutorloop serve` (the champion over HTTP until SIGTERM/SIGINT) and `tutorloop monitor`."""

from __future__ import annotations

import typer

from tutorloop.infra.cli_common import JSON_OUT, console, print_json, settings_of
from tutorloop.infra.warehouse_backends import open_warehouse


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


def monitor(
    ctx: typer.Context,
    last: int = typer.Option(20, "--last", help="how many windows"),
    json_out: bool = JSON_OUT,
) -> None:
    """Drift of the live prediction stream: the last windows serving wrote (confidence and label
    PSI, KS on confidence, abstention rate) against the champion's reference window."""
    from rich.table import Table

    settings = settings_of(ctx)
    rows = open_warehouse(settings).query_dicts(
        "SELECT window_end, replica, model_version, requests, mean_confidence, abstention_rate,"
        " confidence_psi, confidence_psi_null, label_psi, label_psi_null, confidence_ks,"
        " confidence_ks_p, breached"
        " FROM drift_windows ORDER BY window_end DESC LIMIT ?",
        [last],
    )
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no drift windows yet: serving writes one per serving.window_s once the "
                      f"champion's first {settings.serving.drift_reference_size} predictions "
                      "made its reference")  # fmt: skip
        return
    table = Table("window end", "replica", "model", "n", "confidence", "abstained",
                  "PSI conf (chance)", "PSI labels (chance)", "KS (p)", "drift",
                  title=f"drift (breach: a PSI over {settings.serving.drift_psi_max} and over "
                  "what chance reaches 1% of the time)")  # fmt: skip

    def num(value: float | None, digits: int = 3) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for r in reversed(rows):
        ks = ("" if r["confidence_ks"] is None
              else f"{r['confidence_ks']:.3f} ({r['confidence_ks_p']:.2g})")  # fmt: skip
        table.add_row(
            str(r["window_end"])[:19], r["replica"], r["model_version"], str(r["requests"]),
            num(r["mean_confidence"]), num(r["abstention_rate"]),
            f"{num(r['confidence_psi'])} ({num(r['confidence_psi_null'])})",
            f"{num(r['label_psi'])} ({num(r['label_psi_null'])})", ks,
            "BREACH" if r["breached"] else "",
        )  # fmt: skip
    console.print(table)
