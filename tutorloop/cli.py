"""The ``tutorloop`` command: a root that wires each package's own command group together.

Settings are loaded and validated once, in the root callback, before any command runs; a
wrong value stops the command with one line naming the key.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
from rich.logging import RichHandler

from tutorloop.infra.cli_common import err_console
from tutorloop.infra.errors import TutorloopError
from tutorloop.infra.settings import load_settings

app = typer.Typer(
    name="tutorloop",
    help="Keep a small, fast, private student model learning from production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="TOML config file (default: $TUTORLOOP_CONFIG, else ./tutorloop.toml if present)",
        dir_okay=False,
    ),
) -> None:
    settings = load_settings(config)
    ctx.obj = settings
    logging.basicConfig(
        level=settings.log_level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
    )
    if settings.log_level != "DEBUG":
        # transformers narrates every model load (weight bars, load reports); bitsandbytes
        # warns about an optional kernels package that must not be installed here.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        # Kafka clients narrate every connection at INFO; only their problems matter here.
        for noisy in (
            "kafka",
            "aiokafka",
            "presidio-analyzer",
            "presidio-anonymizer",
            "httpx",
            "matplotlib",
        ):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _register_groups() -> None:
    # Each package owns its commands; the root only mounts them. Group modules import their
    # heavy dependencies inside commands so that `tutorloop --help` stays fast.
    from tutorloop.demo.cli import demo
    from tutorloop.infra.cli_broker import broker_app
    from tutorloop.infra.cli_config import config_app
    from tutorloop.infra.cli_warehouse import warehouse_app
    from tutorloop.labeling.cli import teacher_app
    from tutorloop.loop.cli import trainer_app
    from tutorloop.loop.forget_cli import forget_cmd
    from tutorloop.privacy.cli import privacy_app
    from tutorloop.registry.cli import lineage_app, registry_app
    from tutorloop.registry.contract_cli import contract_app
    from tutorloop.serving.cli import monitor, serve
    from tutorloop.streams.cli import schemas, streams_app
    from tutorloop.streams.doctor import doctor
    from tutorloop.trainer.cli import dataset_app

    app.add_typer(config_app, name="config")
    app.add_typer(broker_app, name="broker")
    app.add_typer(warehouse_app, name="warehouse")
    app.add_typer(streams_app, name="streams")
    privacy_app.command("forget")(forget_cmd)
    app.add_typer(privacy_app, name="privacy")
    app.add_typer(teacher_app, name="teacher")
    app.add_typer(dataset_app, name="dataset")
    app.add_typer(trainer_app, name="trainer")
    app.add_typer(registry_app, name="registry")
    app.add_typer(contract_app, name="contract")
    app.add_typer(lineage_app, name="lineage")
    app.command("serve")(serve)
    app.command("monitor")(monitor)
    app.command("demo")(demo)
    app.command("schemas")(schemas)
    app.command("doctor")(doctor)


_register_groups()


def main() -> None:
    """Console-script entry point: expected errors become one line and a non-zero exit."""
    try:
        app()
    except TutorloopError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
