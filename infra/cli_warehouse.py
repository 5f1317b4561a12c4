"""`tutorloop warehouse ...`: schema version, migrations, table sizes, read-only SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from tutorloop.infra.cli_common import JSON_OUT, console, fail, print_json, settings_of
from tutorloop.infra.warehouse_backends import open_warehouse

if TYPE_CHECKING:
    from tutorloop.infra.warehouse import Warehouse

warehouse_app = typer.Typer(
    help="Inspect and migrate the warehouse (the DuckDB file or the PostgreSQL database)."
)


def _warehouse(ctx: typer.Context) -> Warehouse:
    # Imported here so that `tutorloop --help` does not load DuckDB.

    return open_warehouse(settings_of(ctx))


@warehouse_app.command("migrate")
def migrate_cmd(ctx: typer.Context) -> None:
    """Create the warehouse or bring it to the latest schema version."""
    wh = _warehouse(ctx)
    from tutorloop.infra.migrations import current_version

    with wh.connect() as con:  # opening migrates
        version = current_version(con)
    console.print(f"warehouse {wh.location}: schema version {version}")


@warehouse_app.command("status")
def status(ctx: typer.Context, json_out: bool = JSON_OUT) -> None:
    """Schema version and the row count of every table."""
    from tutorloop.infra.migrations import LATEST_VERSION, current_version

    wh = _warehouse(ctx)
    with wh.connect() as con:
        version = current_version(con)
        names = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1"
            ).fetchall()
        ]
        counts = {}
        for name in names:
            row = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()
            counts[name] = int(row[0]) if row else 0
    if json_out:
        print_json(
            {
                "location": wh.location,
                "schema_version": version,
                "latest_version": LATEST_VERSION,
                "rows": counts,
            }
        )
        return
    console.print(f"warehouse {wh.location} (schema version {version})")
    table = Table("table", "rows")
    for name, count in counts.items():
        table.add_row(name, str(count))
    console.print(table)


@warehouse_app.command("sql")
def sql(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="one SQL statement; the result is printed"),
    json_out: bool = JSON_OUT,
) -> None:
    """Run one query against the warehouse (read-only: any change is rolled back)."""
    import duckdb

    from tutorloop.infra.warehouse import rows_as_dicts

    wh = _warehouse(ctx)
    with wh.connect() as con:
        con.execute("BEGIN TRANSACTION")
        try:
            rows = rows_as_dicts(con.execute(query))
        except duckdb.Error as exc:
            fail(str(exc).splitlines()[0], 2)
        finally:
            con.execute("ROLLBACK")
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("(no rows)")
        return
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(table)
